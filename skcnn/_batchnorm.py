"""Batch normalization over (n, height, width) per channel: the primitives.

Forward and backward are split around the minibatch's statistics and sums
(:func:`batch_moments`, :func:`combine_moments`, :func:`batchnorm_param_grads`)
so that a minibatch computed in parts can meet there (see ``_engine``);
:func:`batchnorm_forward` / :func:`batchnorm_backward` are the whole-batch
compositions.
"""

import numpy as np

from . import _workspace as ws
from ._layers import channel_sums, gil_free_dot, per_channel

BATCH_NORM_EPSILON = 1e-5


def batch_moments(z):
    """Per channel ``(count, mean, M2)`` of ``z`` (M2: the sum of squared
    deviations from the mean) -- what a part of a minibatch contributes to
    the batch statistics; :func:`combine_moments` adds two parts exactly.
    """
    # sums as GEMVs with ones (see channel_sums): twice as fast as mean and
    # einsum here, and more accurate. The squared deviations go to a
    # workspace buffer, subtracted on whole image rows (see per_channel).
    flat = z.reshape(-1, z.shape[-1])
    ones = np.ones(flat.shape[0], dtype=z.dtype)
    mean = gil_free_dot(ones, flat)
    mean /= z.dtype.type(flat.shape[0])
    rows, mean_ = per_channel(z, mean)
    centered = np.subtract(rows, mean_, out=ws.empty(rows.shape, z.dtype))
    centered *= centered
    return flat.shape[0], mean, gil_free_dot(ones, centered.reshape(flat.shape))


def combine_moments(a, b):
    """The moments of two parts together (Chan, Golub and LeVeque's pairwise
    update: no cancellation, unlike summing squares)."""
    n_a, mean_a, m2_a = a
    n_b, mean_b, m2_b = b
    n = n_a + n_b
    delta = mean_b - mean_a
    mean = mean_a + delta * (n_b / n)
    return n, mean, m2_a + m2_b + delta * delta * (n_a * n_b / n)


def batchnorm_normalize(z, scale, shift, mean, var):
    """``(z - mean) / sqrt(var + eps) * scale + shift`` with the batch's
    (biased) ``var``; returns ``(out, cache)``. ``z`` is overwritten (it
    becomes the cached normalized map)."""
    inv_std = 1.0 / np.sqrt(var + z.dtype.type(BATCH_NORM_EPSILON))
    rows, mean_, inv_std_, scale_, shift_ = per_channel(z, mean, inv_std, scale, shift)
    x_hat = np.subtract(rows, mean_, out=rows)
    x_hat *= inv_std_
    out = np.multiply(x_hat, scale_, out=ws.empty(x_hat.shape, z.dtype))
    out += shift_
    return out.reshape(z.shape), (x_hat.reshape(z.shape), inv_std, scale)


def batchnorm_forward(z, scale, shift):
    """Normalize each channel with the batch's statistics, then scale/shift.

    Returns ``(out, cache, (mean, var))``; the batch mean and (biased)
    variance are returned for the caller's running averages.
    """
    count, mean, m2 = batch_moments(z)
    var = m2 / z.dtype.type(count)
    out, cache = batchnorm_normalize(z.copy(), scale, shift, mean, var)
    return out, cache, (mean, var)


def batchnorm_param_grads(dout, cache):
    """``(dscale, dshift)``: sums over the rows, so a minibatch's parts add."""
    x_hat = cache[0]
    flat = dout.reshape(-1, dout.shape[-1])
    # the products, then a GEMV with ones: 1.5x faster than einsum's
    # "ic,ic->c" on 32-channel maps
    products = np.multiply(
        flat, x_hat.reshape(flat.shape), out=ws.empty(flat.shape, flat.dtype)
    )
    return channel_sums(products), channel_sums(dout)


def batchnorm_input_grad(dout, cache, dscale, dshift, count):
    """d/dz of the normalization through the batch mean and variance, given
    the whole batch's ``dscale`` and ``dshift`` and its ``count`` values
    per channel."""
    x_hat, inv_std, scale = cache
    # per-channel factors first: one temporary, four passes over the map
    count = dout.dtype.type(count)
    rows, a, b, c = per_channel(x_hat, dscale / count, dshift / count, scale * inv_std)
    dz = np.multiply(rows, a, out=ws.empty(rows.shape, rows.dtype))
    dz += b
    np.subtract(dout.reshape(rows.shape), dz, out=dz)
    dz *= c
    return dz.reshape(x_hat.shape)


def batchnorm_backward(dout, cache):
    """Gradients w.r.t. the input, the scale and the shift."""
    dscale, dshift = batchnorm_param_grads(dout, cache)
    count = dout.size // dout.shape[-1]
    return batchnorm_input_grad(dout, cache, dscale, dshift, count), dscale, dshift


def batchnorm_folded(W, scale, shift, mean, var):
    """``(W', bias)``: a convolution by ``W`` (..., F) then the
    normalization with running statistics, as one convolution plus a bias.

    With running statistics the normalization is ``z * factor + offset``
    per channel, and ``conv(x, W) * factor == conv(x, W * factor)``: the
    map's pass disappears, and with it the reason a max-pool could not run
    first (a negative factor reverses the order; folded into ``W`` it no
    longer comes after the pool). Equal to rounding.
    """
    factor = scale / np.sqrt(var + W.dtype.type(BATCH_NORM_EPSILON))
    return W * factor, shift - mean * factor
