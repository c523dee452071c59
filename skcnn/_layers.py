"""Layer primitives: each forward is paired with its exact backward.

All tensors are channels-last, ``(n, height, width, channels)``. Forward
functions return ``(output, cache)`` where the cache holds exactly what the
matching backward needs; nothing is stored on objects, so a fitted model can
be used from several threads at once. The dtype of the input is preserved
throughout (float32 stays float32: one float64 temporary would double the
cost of every GEMM that touches it).
"""

import numpy as np

from . import _workspace as ws
from ._im2col import (
    FEW_CHANNELS,
    blocks_weight_grad,
    im2col,
    im2col_few_channels,
    pad,
)
from ._strides import window_view
from ._winograd import (
    WinogradCache,
    winograd_backward,
    winograd_forward,
    winograd_wins,
)


def channel_sums(a):
    """Per-channel sums of a channels-last array, shape ``(C,)``.

    One GEMV with a vector of ones: ``a.sum(axis=(0, 1, 2))`` adds one row
    of C values at a time: 4-15 times slower on the maps here, and less
    accurate (one running sum per channel over all the rows). By
    :func:`gil_free_dot`: the result is small.
    """
    flat = a.reshape(-1, a.shape[-1])
    return gil_free_dot(np.ones(flat.shape[0], dtype=a.dtype), flat)


def gil_free_dot(a, b, out=None):
    """``a @ b`` for a small product of long vectors, releasing the GIL.

    NumPy's ``matmul`` releases the GIL only for products of 500 values or
    more, so a weight gradient of 9 x 32 values summed over 20,000 rows (a
    first layer's) or a per-channel sum holds it for the whole GEMM, and a
    second thread computing another part waits: measured 190 us alone,
    350-390 us each with two threads. ``np.dot`` makes the same BLAS call
    without the GIL (``out``, if given, must be C-contiguous).
    """
    return np.dot(a, b, out=out)


def per_channel(a, *vectors):
    """``a`` as rows of whole image rows and ``vectors`` (one value per
    channel) tiled to one such row, for per-channel arithmetic.

    Broadcasting a ``(C,)`` vector over a channels-last map runs numpy's
    inner loop over C values at a time; on ``(n * H, W * C)`` rows with the
    vectors tiled ``W`` times it runs over whole image rows: 1.2-2 times
    faster for 16-64 channels, 3-5 times for 3. The rows are a view of
    ``a`` (in-place arithmetic on them updates ``a``). A map that is not
    C-contiguous (no such view), has one channel (already one long loop)
    or fewer than 1024 pixels (the tiles would cost more than they save)
    is returned as it is, with the vectors.
    """
    if (
        a.ndim < 3
        or a.shape[-1] == 1
        or a.size < 1024 * a.shape[-1]
        or not a.flags.c_contiguous
    ):
        return (a, *vectors)
    width, channels = a.shape[-2:]
    tiled = []
    for v in vectors:
        row = np.empty((width, channels), dtype=v.dtype)
        row[...] = v
        tiled.append(row.reshape(-1))
    return (a.reshape(-1, width * channels), *tiled)


# --------------------------------------------------------------------------
# Convolution (im2col + one GEMM, or Winograd)
# --------------------------------------------------------------------------


def conv2d_forward(
    x,
    W,
    stride=1,
    pads=((0, 0), (0, 0)),
    out_hw=None,
    need_cache=True,
    windows=None,
    kernel=None,
):
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
    windows : (int, int), default=None
        Return the output *windowed* for a ``(ph, pw)`` pooling that reads
        all of it (``out_hw`` divisible by the windows): shape ``(ph * pw,
        n, out_h / ph, out_w / pw, F)``, block ``p * pw + q`` holding each
        window's pixel ``(p, q)``. The pooling then combines contiguous
        blocks instead of strided views (measured 2.4 times faster forward,
        1.6 times backward on 26x26x32 maps), and the windows cost the
        convolution nothing: its output rows are computed
        in that order (with Winograd, only 2x2 windows: see
        :func:`~skcnn._winograd.winograd_forward`).
    kernel : ndarray, default=None
        ``W``'s Winograd transform, if computed already
        (:func:`~skcnn._winograd.prepared_kernel`); unused by im2col.

    Returns
    -------
    out : ndarray of shape (n, out_h, out_w, F), or windowed
    cache : tuple, or None without ``need_cache``
        The im2col rows (for few channels, their blocks: see
        :func:`~skcnn._im2col.im2col_few_channels`), the padded input's
        shape and the windows, or a Winograd cache.
    """
    n, height, width, channels = x.shape
    (top, bottom), (left, right) = pads
    padded_shape = (n, height + top + bottom, width + left + right, channels)
    kh, kw, _, filters = W.shape
    if out_hw is None:
        out_hw = (
            (padded_shape[1] - kh) // stride + 1,
            (padded_shape[2] - kw) // stride + 1,
        )
    if winograd_wins(W.shape, stride, out_hw):
        if windows not in (None, (2, 2)):
            raise ValueError(f"Winograd's output comes in 2x2 windows, not {windows}")
        windowed = windows is not None
        return winograd_forward(x, W, pads, out_hw, need_cache, windowed, kernel)
    out_h, out_w = out_hw
    if kw * channels < FEW_CHANNELS:
        cols = im2col_few_channels(x, pads, kh, kw, stride, out_h, out_w, windows)
    else:
        if top or bottom or left or right:
            x = pad(x, pads)
        cols = im2col(x, kh, kw, stride, out_h, out_w, windows)
    out = ws.empty((n * out_h * out_w, filters), x.dtype)
    matrix = W.reshape(kh * kw * channels, filters)
    if cols.ndim == 3:  # blocks, each (K, rows): see im2col_few_channels
        blocks = out.reshape(cols.shape[0], cols.shape[2], filters)
        np.matmul(cols.transpose(0, 2, 1), matrix, out=blocks)
    else:
        np.matmul(cols, matrix, out=out)
    if windows is None:
        out = out.reshape(n, out_h, out_w, filters)
    else:
        ph, pw = windows
        out = out.reshape(ph * pw, n, out_h // ph, out_w // pw, filters)
    return out, ((cols, padded_shape, windows) if need_cache else None)


def conv2d_backward(dout, cache, W, stride=1, pads=((0, 0), (0, 0)), need_dx=True):
    """Gradients of :func:`conv2d_forward` w.r.t. its input and weights.

    ``dout`` comes in the forward pass's windows if its output did.

    Returns
    -------
    dx : ndarray of shape (n, H, W, C) or None when ``need_dx`` is False
    dW : ndarray of shape (kh, kw, C, F)
    """
    if isinstance(cache, WinogradCache):
        return winograd_backward(dout, cache, W, need_dx)
    cols, padded_shape, windows = cache
    filters = W.shape[3]
    kh, kw, channels, _ = W.shape
    # the weight gradient sums over the rows: their order does not matter
    d2 = dout.reshape(-1, filters)
    if cols.ndim == 3:  # blocks, each (K, rows): see im2col_few_channels
        dW = blocks_weight_grad(cols, d2).reshape(W.shape)
    else:
        dW = gil_free_dot(cols.T, d2).reshape(W.shape)
    if not need_dx:
        return None, dW
    if windows is not None:
        # not in skcnn's training steps: they window only a first layer's
        # im2col output, which needs no dx
        dout = unwindowed(dout, windows)
        d2 = dout.reshape(-1, filters)
    n, out_h, out_w, _ = dout.shape
    (top, bottom), (left, right) = pads
    x_shape = (n, padded_shape[1] - top - bottom, padded_shape[2] - left - right)
    dx = _input_grad(d2, W, stride, (top, left), x_shape + (channels,), (out_h, out_w))
    return dx, dW


def unwindowed(a, windows):
    """A windowed map (see :func:`conv2d_forward`) in pixel order: a new
    ``(n, H, W, C)`` array."""
    ph, pw = windows
    _, n, rows, cols, channels = a.shape
    out = ws.empty((n, rows * ph, cols * pw, channels), a.dtype)
    pixels = window_view(out, ph, pw, rows, cols, writeable=True)
    np.copyto(pixels, a.reshape(ph, pw, n, rows, cols, channels))
    return out


def _span(offset, stride, n_out, size):
    """Which of ``n_out`` outputs of a tap at ``offset`` (input row
    ``offset + stride * y`` for output ``y``) read inside ``[0, size)``:
    ``(first, stop)`` outputs and the first one's input row."""
    first = max(0, -(offset // stride))
    stop = min(n_out, (size - 1 - offset) // stride + 1)
    return first, stop, offset + stride * first


def _input_grad(d2, W, stride, origin, x_shape, out_hw):
    """d/dx of the convolution, straight into an unpadded, contiguous ``dx``.

    One small GEMM per kernel tap (cheaper than a full ``(rows, kh*kw*C)``
    GEMM followed by col2im), each into one reused buffer, added into the
    strided input slice it came from, clipped to the unpadded input: no
    padded ``dx`` to zero, update and slice. With stride 1 and "same"
    padding the tap at ``origin`` (the padding's top and left) covers the
    input exactly, so its GEMM writes ``dx`` itself and nothing is zeroed.
    """
    n, height, width, channels = x_shape
    out_h, out_w = out_hw
    kh, kw = W.shape[:2]
    top, left = origin
    rows = d2.shape[0]
    whole = stride == 1 and out_hw == (height, width) and top < kh and left < kw
    if whole:
        dx = ws.empty(x_shape, d2.dtype)
        np.matmul(d2, W[top, left].T, out=dx.reshape(rows, channels))
    else:
        dx = ws.zeros(x_shape, d2.dtype)
    part = ws.empty((rows, channels), d2.dtype)
    part_4d = part.reshape(n, out_h, out_w, channels)
    for i in range(kh):
        y0, y1, row = _span(i - top, stride, out_h, height)
        for j in range(kw):
            x0, x1, col = _span(j - left, stride, out_w, width)
            if y1 <= y0 or x1 <= x0 or (whole and (i, j) == (top, left)):
                continue  # this tap reads only padding, or wrote dx already
            np.matmul(d2, W[i, j].T, out=part)
            rows_end = row + stride * (y1 - y0 - 1) + 1
            cols_end = col + stride * (x1 - x0 - 1) + 1
            dx[:, row:rows_end:stride, col:cols_end:stride] += part_4d[:, y0:y1, x0:x1]
    return dx


class OuterSum:
    """``sum_k a_k.T @ b_k`` over a minibatch's parts, multiplied once.

    A dense layer's weight gradient is ``x.T @ dout``. When a minibatch is
    split into parts of a few rows each (as it is for large conv maps),
    every part computing its own ``fan_in x units`` product from 2-4 rows
    makes shallow, slow GEMMs, and adding up the parts' products costs
    more: measured 6.4 ms per step against 1.4 ms for one GEMM over the
    collected rows (2048 x 128 weights, 32 parts of 4 rows, one thread).
    So a part returns the factors, the parts' factors are collected with
    ``+=`` in part order, and the engine multiplies once.
    """

    def __init__(self, a, b):
        self.a, self.b = [a], [b]

    def __iadd__(self, other):
        self.a += other.a
        self.b += other.b
        return self

    def factors(self):
        """The collected ``(a, b)``: the gradient is ``a.T @ b``."""
        if len(self.a) == 1:
            return self.a[0], self.b[0]
        return tuple(_concatenated(arrays) for arrays in (self.a, self.b))


def _concatenated(arrays):
    out = ws.empty(
        (sum(len(a) for a in arrays),) + arrays[0].shape[1:], arrays[0].dtype
    )
    return np.concatenate(arrays, out=out)


# --------------------------------------------------------------------------
# Activations: applied in place, differentiated from their output
# --------------------------------------------------------------------------


def _relu(z):
    # np.maximum of an array and a scalar runs a loop 2-3 times slower than
    # that of two arrays (numpy 2.4): on a map, image rows against one row
    # of zeros; small arrays are not worth the row
    if z.size >= 4096 and z.flags.c_contiguous:
        rows = z.reshape(-1, z.shape[-1] * (z.shape[-2] if z.ndim > 2 else 1))
        np.maximum(rows, np.zeros(rows.shape[1], dtype=z.dtype), out=rows)
        return z
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
    delta *= np.greater(a, 0, out=ws.empty(a.shape, bool))
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
