"""Layer primitives: each forward is paired with its exact backward.

All tensors are channels-last, ``(n, height, width, channels)``. Forward
functions return ``(output, cache)`` where the cache holds exactly what the
matching backward needs; nothing is stored on objects, so a fitted model can
be used from several threads at once. The dtype of the input is preserved
throughout (float32 stays float32: one float64 temporary would double the
cost of every GEMM that touches it).
"""

import numpy as np

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


def conv2d_forward(x, W, stride=1, pads=((0, 0), (0, 0)), out_hw=None):
    """Cross-correlate ``x`` with ``W`` (no bias; the caller adds it).

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

    Returns
    -------
    out : ndarray of shape (n, out_h, out_w, F)
    cache : tuple
    """
    if any(pads[0]) or any(pads[1]):
        x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    n, height, width, channels = x.shape
    kh, kw, _, filters = W.shape
    if out_hw is None:
        out_hw = ((height - kh) // stride + 1, (width - kw) // stride + 1)
    out_h, out_w = out_hw
    # One copy into a (n, oh, ow, kh, kw, C) buffer, channels innermost, so the
    # GEMM below reads it contiguously and the weights need no transpose.
    cols = np.empty((n, out_h, out_w, kh, kw, channels), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = _tap(x, i, j, stride, out_h, out_w)
    cols = cols.reshape(n * out_h * out_w, kh * kw * channels)
    out = cols @ W.reshape(kh * kw * channels, filters)
    return out.reshape(n, out_h, out_w, filters), (cols, x.shape)


def conv2d_backward(dout, cache, W, stride=1, pads=((0, 0), (0, 0)), need_dx=True):
    """Gradients of :func:`conv2d_forward` w.r.t. its input and weights.

    Returns
    -------
    dx : ndarray of shape (n, H, W, C) or None when ``need_dx`` is False
    dW : ndarray of shape (kh, kw, C, F)
    """
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

    The cache stores, per output element, the index of the *first* maximal
    tap. Ties are common (blank image background, ReLU zeros) and the
    gradient must go to exactly one element, as for ``argmax``.
    """
    taps = _pool_taps(x, ph, pw)
    out = taps[0].copy()
    if not need_cache:
        for tap in taps[1:]:
            np.maximum(out, tap, out=out)
        return out, None
    index = np.zeros(out.shape, dtype=np.min_scalar_type(len(taps) - 1))
    for k, tap in enumerate(taps[1:], start=1):
        greater = tap > out  # strict: an equal later tap never wins
        np.copyto(out, tap, where=greater)
        np.putmask(index, greater, k)
    return out, (index, x.shape)


def maxpool_backward(dout, cache, ph, pw):
    index, x_shape = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for k, view in enumerate(_pool_taps(dx, ph, pw)):
        np.multiply(dout, index == k, out=view)
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
