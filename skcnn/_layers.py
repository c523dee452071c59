"""Layer primitives: each forward is paired with its exact backward.

All tensors are channels-last, ``(n, height, width, channels)``. Forward
functions return ``(output, cache)`` where the cache holds exactly what the
matching backward needs; nothing is stored on objects, so a fitted model can
be used from several threads at once. The dtype of the input is preserved
throughout (float32 stays float32: one float64 temporary would double the
cost of every GEMM that touches it).
"""

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._winograd import (
    WinogradCache,
    winograd_backward,
    winograd_forward,
    winograd_wins,
)

# --------------------------------------------------------------------------
# Convolution (im2col + one GEMM)
# --------------------------------------------------------------------------


def _tap(x, i, j, stride, out_h, out_w):
    """Strided view of the input pixels seen by kernel tap ``(i, j)``."""
    return x[
        :,
        i : i + stride * (out_h - 1) + 1 : stride,
        j : j + stride * (out_w - 1) + 1 : stride,
        :,
    ]


def _im2col(x, kh, kw, stride, out_h, out_w):
    """Rows of ``(kh * kw * C)`` input pixels, one per output pixel.

    One copy into a ``(n, oh, ow, kh, kw, C)`` buffer, channels innermost, so
    the GEMM reads it contiguously and the weights need no transpose. Along a
    kernel row the ``kw * C`` pixels are contiguous in ``x``, so when that run
    is long one strided view copies fastest; for a few channels (the first
    layer) copying tap by tap is faster.
    """
    n, _, _, channels = x.shape
    if kw * channels >= 16:
        sn, sh, sw, sc = x.strides
        view = as_strided(
            x,
            shape=(n, out_h, out_w, kh, kw * channels),
            strides=(sn, sh * stride, sw * stride, sh, sc),
            writeable=False,
        )
        cols = np.ascontiguousarray(view)
    else:
        cols = np.empty((n, out_h, out_w, kh, kw, channels), dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                cols[:, :, :, i, j, :] = _tap(x, i, j, stride, out_h, out_w)
    return cols.reshape(n * out_h * out_w, kh * kw * channels)


def conv2d_forward(x, W, stride=1, pads=((0, 0), (0, 0)), out_hw=None, need_cache=True):
    """Cross-correlate ``x`` with ``W`` (no bias; the caller adds it).

    A convolution that Winograd's algorithm computes faster
    (:func:`~skcnn._winograd.winograd_wins`) is computed that way, with
    fewer multiplications and no im2col buffer; so is its backward pass.

    Parameters
    ----------
    x : ndarray of shape (n, H, W, C)
    W : ndarray of shape (kh, kw, C, F)
    stride : int
    pads : ((top, bottom), (left, right))
        Zero padding added around the input.
    out_hw : (int, int), default=None
        Number of output rows and columns to compute. ``None`` computes the
        full output; a smaller value computes only its top-left part, which
        is all a floor-mode pooling layer downstream reads.
    need_cache : bool, default=True
        Whether :func:`conv2d_backward` will need the cache.

    Returns
    -------
    out : ndarray of shape (n, out_h, out_w, F)
    cache : tuple, or None without ``need_cache``
    """
    if winograd_wins(W.shape, stride):
        return winograd_forward(x, W, pads, out_hw, need_cache)
    if any(pads[0]) or any(pads[1]):
        x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    n, height, width, channels = x.shape
    kh, kw, _, filters = W.shape
    if out_hw is None:
        out_hw = ((height - kh) // stride + 1, (width - kw) // stride + 1)
    out_h, out_w = out_hw
    cols = _im2col(x, kh, kw, stride, out_h, out_w)
    out = cols @ W.reshape(kh * kw * channels, filters)
    out = out.reshape(n, out_h, out_w, filters)
    return out, ((cols, x.shape) if need_cache else None)


def conv2d_backward(dout, cache, W, stride=1, pads=((0, 0), (0, 0)), need_dx=True):
    """Gradients of :func:`conv2d_forward` w.r.t. its input and weights.

    Returns
    -------
    dx : ndarray of shape (n, H, W, C) or None when ``need_dx`` is False
    dW : ndarray of shape (kh, kw, C, F)
    """
    if isinstance(cache, WinogradCache):
        return winograd_backward(dout, cache, W, need_dx)
    cols, padded_shape = cache
    n, out_h, out_w, filters = dout.shape
    kh, kw, channels, _ = W.shape
    d2 = dout.reshape(n * out_h * out_w, filters)
    dW = (cols.T @ d2).reshape(W.shape)
    if not need_dx:
        return None, dW
    # One small GEMM per kernel tap, added into the strided input slice it came
    # from: cheaper than a full (rows, kh*kw*C) GEMM followed by col2im.
    dx = np.zeros(padded_shape, dtype=dout.dtype)
    for i in range(kh):
        for j in range(kw):
            part = (d2 @ W[i, j].T).reshape(n, out_h, out_w, channels)
            _tap(dx, i, j, stride, out_h, out_w)[...] += part
    (top, bottom), (left, right) = pads
    if top or bottom or left or right:
        dx = dx[:, top : padded_shape[1] - bottom, left : padded_shape[2] - right, :]
    return dx, dW


# --------------------------------------------------------------------------
# Pooling (stride = window, floor mode)
# --------------------------------------------------------------------------


def _pool_taps(x, ph, pw):
    """The ``ph * pw`` strided views whose elementwise reduction pools ``x``."""
    out_h, out_w = x.shape[1] // ph, x.shape[2] // pw
    return [
        x[:, i : out_h * ph : ph, j : out_w * pw : pw, :]
        for i in range(ph)
        for j in range(pw)
    ]


def maxpool_forward(x, ph, pw, need_cache=True):
    """Max-pool with a ``(ph, pw)`` window; trailing rows/columns are dropped.

    The forward pass is only elementwise maxima of the strided window views;
    the backward pass works out from the cached input and output which
    element won.
    """
    taps = _pool_taps(x, ph, pw)
    out = np.maximum(taps[0], taps[1]) if len(taps) > 1 else taps[0].copy()
    for tap in taps[2:]:
        np.maximum(out, tap, out=out)
    return out, ((x, out) if need_cache else None)


def maxpool_backward(dout, cache, ph, pw):
    """Route each output's gradient to the *first* maximal element of its window.

    Ties are common (blank image background, ReLU zeros) and the gradient
    must go to exactly one element, as with ``argmax``: spreading it over all
    tied elements gives wrong gradients (badly wrong bias gradients).
    """
    x, out = cache
    out_h, out_w = out.shape[1:3]
    covered = out_h * ph == x.shape[1] and out_w * pw == x.shape[2]
    dx = (np.empty if covered else np.zeros)(x.shape, dtype=dout.dtype)
    taken = None
    for x_tap, dx_tap in zip(_pool_taps(x, ph, pw), _pool_taps(dx, ph, pw)):
        winner = x_tap == out
        if taken is None:
            taken = winner.copy()
        else:
            np.greater(winner, taken, out=winner)  # winner and not yet taken
            taken |= winner
        np.multiply(dout, winner, out=dx_tap)
    return dx


def avgpool_forward(x, ph, pw, need_cache=True):
    """Average-pool with a ``(ph, pw)`` window; trailing rows/columns dropped."""
    taps = _pool_taps(x, ph, pw)
    out = taps[0].copy()
    for tap in taps[1:]:
        out += tap
    out *= out.dtype.type(1.0 / (ph * pw))
    return out, (x.shape if need_cache else None)


def avgpool_backward(dout, x_shape, ph, pw):
    dx = np.zeros(x_shape, dtype=dout.dtype)
    share = dout * dout.dtype.type(1.0 / (ph * pw))
    for view in _pool_taps(dx, ph, pw):
        view[...] = share
    return dx


# --------------------------------------------------------------------------
# Activations: applied in place, differentiated from their output
# --------------------------------------------------------------------------


def _relu(z):
    return np.maximum(z, 0, out=z)


def _logistic(z):
    # 0.5 * (1 + tanh(z / 2)) is the logistic function without overflow.
    np.multiply(z, z.dtype.type(0.5), out=z)
    np.tanh(z, out=z)
    z += 1
    z *= z.dtype.type(0.5)
    return z


ACTIVATIONS = {
    "identity": lambda z: z,
    "relu": _relu,
    "tanh": lambda z: np.tanh(z, out=z),
    "logistic": _logistic,
}


def _relu_grad(a, delta):
    delta *= a > 0
    return delta


def _tanh_grad(a, delta):
    delta *= 1 - a * a
    return delta


def _logistic_grad(a, delta):
    delta *= a * (1 - a)
    return delta


# d(loss)/dz = d(loss)/da * f'(z), with f'(z) written in terms of a = f(z);
# ``delta`` is modified in place.
ACTIVATION_GRADS = {
    "identity": lambda a, delta: delta,
    "relu": _relu_grad,
    "tanh": _tanh_grad,
    "logistic": _logistic_grad,
}


# --------------------------------------------------------------------------
# Batch normalization over (n, height, width) per channel
# --------------------------------------------------------------------------

BATCH_NORM_EPSILON = 1e-5


def batch_moments(z):
    """Per channel ``(count, mean, M2)`` of ``z`` (M2: the sum of squared
    deviations from the mean) -- what a part of a minibatch contributes to
    the batch statistics; :func:`combine_moments` adds two parts exactly.
    """
    flat = z.reshape(-1, z.shape[-1])
    mean = flat.mean(axis=0)
    centered = flat - mean
    return flat.shape[0], mean, np.einsum("ic,ic->c", centered, centered)


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
    (biased) ``var``; returns ``(out, cache)``."""
    inv_std = 1.0 / np.sqrt(var + z.dtype.type(BATCH_NORM_EPSILON))
    x_hat = z - mean
    x_hat *= inv_std
    out = x_hat * scale
    out += shift
    return out, (x_hat, inv_std, scale)


def batchnorm_forward(z, scale, shift):
    """Normalize each channel with the batch's statistics, then scale/shift.

    Returns ``(out, cache, (mean, var))``; the batch mean and (biased)
    variance are returned for the caller's running averages.
    """
    count, mean, m2 = batch_moments(z)
    var = m2 / z.dtype.type(count)
    out, cache = batchnorm_normalize(z, scale, shift, mean, var)
    return out, cache, (mean, var)


def batchnorm_param_grads(dout, cache):
    """``(dscale, dshift)``: sums over the rows, so a minibatch's parts add."""
    x_hat = cache[0]
    channels = dout.shape[-1]
    dscale = np.einsum(
        "ic,ic->c", dout.reshape(-1, channels), x_hat.reshape(-1, channels)
    )
    return dscale, dout.sum(axis=tuple(range(dout.ndim - 1)))


def batchnorm_input_grad(dout, cache, dscale, dshift, count):
    """d/dz of the normalization through the batch mean and variance, given
    the whole batch's ``dscale`` and ``dshift`` and its ``count`` values
    per channel."""
    x_hat, inv_std, scale = cache
    dz = dout - (dshift + x_hat * dscale) / dout.dtype.type(count)
    dz *= scale * inv_std
    return dz


def batchnorm_backward(dout, cache):
    """Gradients w.r.t. the input, the scale and the shift."""
    dscale, dshift = batchnorm_param_grads(dout, cache)
    count = dout.size // dout.shape[-1]
    return batchnorm_input_grad(dout, cache, dscale, dshift, count), dscale, dshift


def batchnorm_inference(z, scale, shift, mean, var):
    """Normalize with running statistics: one per-channel affine map, in place."""
    factor = scale / np.sqrt(var + z.dtype.type(BATCH_NORM_EPSILON))
    z *= factor
    z += shift - mean * factor
    return z
