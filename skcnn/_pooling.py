"""Pooling (window = stride, floor mode): each forward paired with its backward.

Maps are channels-last ``(n, H, W, C)``, or *windowed* ``(ph * pw, n,
H / ph, W / pw, C)`` as a convolution may return them (see
:func:`~skcnn._layers.conv2d_forward`'s ``windows``): then a window's
taps are contiguous blocks. Trailing rows and columns no window covers
are dropped, and get a zero gradient.
"""

import numpy as np

from . import _workspace as ws


def _pool_taps(x, ph, pw):
    """The ``ph * pw`` views whose elementwise reduction pools ``x``: strided
    views of a map, or the blocks of a windowed one (5-D)."""
    if x.ndim == 5:
        return list(x)
    out_h, out_w = x.shape[1] // ph, x.shape[2] // pw
    return [
        x[:, i : out_h * ph : ph, j : out_w * pw : pw, :]
        for i in range(ph)
        for j in range(pw)
    ]


def maxpool_forward(x, ph, pw, need_cache=True):
    """Max-pool with a ``(ph, pw)`` window; trailing rows/columns are dropped.

    The output is the elementwise maximum of the window's taps (strided
    views, or a windowed map's blocks). The cache is, per output, the
    position in its window (row-major) of the *first* maximal element, one
    byte each: the backward pass needs nothing else, and the input need not
    be kept.
    """
    taps = _pool_taps(x, ph, pw)
    if len(taps) > 1:
        out = np.maximum(taps[0], taps[1], out=ws.empty(taps[0].shape, x.dtype))
    else:
        out = ws.copy(taps[0])
    for tap in taps[2:]:
        np.maximum(out, tap, out=out)
    if not need_cache:
        return out, None
    # The first maximal element's position is the number of leading taps
    # that fall short of the maximum: counted with one comparison per tap
    # and byte arithmetic, no masked writes (numpy's are many times slower).
    short = np.not_equal(taps[0], out, out=ws.empty(out.shape, bool))
    first = ws.empty(out.shape, np.uint8 if len(taps) <= 256 else np.uint16)
    np.copyto(first, short)
    below = ws.empty(out.shape, bool)
    for tap in taps[1:-1]:
        np.not_equal(tap, out, out=below)
        short &= below
        first += short.view(np.uint8)
    return out, (first, x.shape)


def maxpool_backward(dout, cache, ph, pw):
    """Route each output's gradient to the *first* maximal element of its window.

    Ties are common (blank image background, ReLU zeros) and the gradient
    must go to exactly one element, as with ``argmax``: spreading it over all
    tied elements gives wrong gradients (badly wrong bias gradients).
    """
    first, x_shape = cache
    dx = (ws.empty if _covered(x_shape, first.shape, ph, pw) else ws.zeros)(
        x_shape, dout.dtype
    )
    winner = ws.empty(first.shape, bool)
    for k, dx_tap in enumerate(_pool_taps(dx, ph, pw)):
        np.equal(first, k, out=winner)
        np.multiply(dout, winner, out=dx_tap)
    return dx


def _covered(x_shape, out_shape, ph, pw):
    """Whether every pixel of a pooling's input is in a window (a windowed
    map's always are)."""
    n, out_h, out_w = out_shape[:3]
    return len(x_shape) == 5 or (out_h * ph, out_w * pw) == tuple(x_shape[1:3])


def avgpool_forward(x, ph, pw, need_cache=True):
    """Average-pool with a ``(ph, pw)`` window; trailing rows/columns dropped."""
    taps = _pool_taps(x, ph, pw)
    if len(taps) == 1:
        out = ws.copy(taps[0])
    else:  # the first sum makes the output: no copy of a tap first
        out = np.add(taps[0], taps[1], out=ws.empty(taps[0].shape, x.dtype))
    for tap in taps[2:]:
        out += tap
    out *= out.dtype.type(1.0 / (ph * pw))
    return out, (x.shape if need_cache else None)


def avgpool_backward(dout, x_shape, ph, pw):
    """Spread each output's gradient evenly over its window, in one
    broadcast assignment (only dropped trailing rows/columns are zeroed)."""
    n, out_h, out_w, channels = dout.shape
    covered = _covered(x_shape, dout.shape, ph, pw)
    dx = (ws.empty if covered else ws.zeros)(x_shape, dout.dtype)
    share = dout * dout.dtype.type(1.0 / (ph * pw))
    if len(x_shape) == 5:  # windowed: the same share in every block
        dx[...] = share
        return dx
    windows = dx[:, : out_h * ph, : out_w * pw].reshape(
        n, out_h, ph, out_w, pw, channels
    )
    windows[...] = share[:, :, None, :, None, :]
    return dx
