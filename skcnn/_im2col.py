"""im2col: the input pixels each output pixel of a convolution reads, as
the rows (or blocks of rows) of one GEMM operand.

Channels-last like the layers (:mod:`skcnn._layers`); buffers come from the
calling thread's workspace.
"""

import numpy as np

from . import _workspace as ws
from ._strides import strided_view


def pad(x, pads):
    """``x`` in a zero border of ``pads = ((top, bottom), (left, right))``.

    Zeros and one slice assignment: ``np.pad``'s Python overhead alone costs
    several times this on the small per-part maps.
    """
    (top, bottom), (left, right) = pads
    n, height, width, channels = x.shape
    shape = (n, height + top + bottom, width + left + right, channels)
    out = ws.zeros(shape, x.dtype)
    out[:, top : top + height, left : left + width, :] = x
    return out


def im2col(x, kh, kw, stride, out_h, out_w, windows=None):
    """Rows of ``(kh * kw * C)`` input pixels, one per output pixel.

    One copy into a ``(n, oh, ow, kh, kw, C)`` buffer, channels innermost, so
    the GEMM reads it contiguously and the weights need no transpose: along
    a kernel row the ``kw * C`` pixels are contiguous in ``x``, so one
    strided view copies them in runs of ``kw * C``. With ``windows`` the
    rows come in windowed order (see :func:`~skcnn._layers.conv2d_forward`).
    For few channels see :func:`im2col_few_channels`.
    """
    n, _, _, channels = x.shape
    sn, sh, sw, sc = x.strides
    rows = _output_order(n, out_h, out_w, sn, sh * stride, sw * stride, windows)
    view = strided_view(x, rows[0] + (kh, kw * channels), rows[1] + (sh, sc))
    return ws.copy(view).reshape(n * out_h * out_w, kh * kw * channels)


def _output_order(n, out_h, out_w, sn, sh, sw, windows):
    """``(shape, strides)`` of the output pixels' axes in a strided view
    whose image, row and column strides are ``sn, sh, sw``: ``(n, out_h,
    out_w)``, or with ``windows = (ph, pw)`` the windowed order ``(ph, pw,
    n, out_h / ph, out_w / pw)``."""
    if windows is None:
        return (n, out_h, out_w), (sn, sh, sw)
    ph, pw = windows
    return (ph, pw, n, out_h // ph, out_w // pw), (sh, sw, sn, ph * sh, pw * sw)


# A kernel row of fewer values than this (kw * C) is copied by
# im2col_few_channels; runs of 16 or more copied as fast channels-last.
FEW_CHANNELS = 16


def im2col_few_channels(x, pads, kh, kw, stride, out_h, out_w, windows=None):
    """:func:`im2col` of the zero-padded ``x``, for few channels, in blocks:
    shape ``(blocks, kh * kw * C, rows)``, ``[b].T`` the im2col rows of the
    ``b``-th run of ``rows`` output pixels (in the order of
    :func:`_output_order`).

    Channels innermost, the copy would move runs of ``kw * C`` values (a
    first layer's 3 or 9) -- slow. So ``x`` is padded channels-first, where
    a tap's pixels along an image row are contiguous, and copied in runs
    along the output rows into blocks of whole rows (about
    ``_BLOCK_PIXELS`` pixels: see :func:`_rows_per_block`), taps outermost
    within a block. Measured 3-4 times faster than the channels-last copy
    on 3-channel images. The GEMMs take each block's transpose as it is:
    one ``(rows, K)`` Fortran-ordered operand a block, for which OpenBLAS's
    small-matrix kernels run 1.4-1.8 times faster than one GEMM over all
    the rows (1 thread, K = 9 and 27, 256 rows a block).

    With a stride or ``windows = (ph, pw)`` (rows in windowed order, see
    :func:`~skcnn._layers.conv2d_forward`) a tap reads every
    ``stride * pw``-th padded column, which NumPy copies one value at a
    time. Where the runs are long
    (``_PHASE_RUN``), the padded columns come split into that many phases
    instead (:func:`_column_phases`), in each of which a window column's tap
    reads a contiguous run: ``kw * pw`` copies instead of one.
    """
    n, _, _, channels = x.shape
    ph, pw = windows or (1, 1)
    wide = out_w // pw
    per_block = _rows_per_block(out_h // ph, wide)
    blocks = (out_h // ph) // per_block
    phases = stride * pw if wide >= _PHASE_RUN else 1
    split = _column_phases(x, pads, phases)
    sn, sc, sh, _, sw = split.strides
    # the output pixels of one window column, (ph, n, blocks, per_block,
    # out_w / pw): along a row, the next window's pixel is stride * pw
    # padded columns on -- the next place of the same phase once split
    rows = (ph, n, blocks, per_block, wide)
    step = sw if phases > 1 else pw * stride * sw
    row = ph * stride * sh
    row_strides = (stride * sh, sn, per_block * row, row, step)
    buffer = ws.empty((ph, pw, n, blocks, kh, kw, channels, per_block, wide), x.dtype)
    # the same buffer with the taps and window column first, as copied into
    cols_t = buffer.transpose(4, 5, 6, 0, 1, 2, 3, 7, 8)
    if phases == 1:  # one copy, of every tap and window column
        shape = (kh, kw, channels, ph, pw) + rows[1:]
        strides = (sh, sw, sc, stride * sh, stride * sw) + row_strides[1:]
        cols_t[...] = strided_view(split, shape, strides)
    else:  # one copy per tap column and window column
        shape, strides = (kh, channels) + rows, (sh, sc) + row_strides
        for q in range(pw):
            for dx in range(kw):
                # output column pw * v + q reads padded column phases * v + s
                s = stride * q + dx
                offset = ((s % phases) * split.shape[-1] + s // phases) * split.itemsize
                view = strided_view(split, shape, strides, offset=offset)
                cols_t[:, dx, :, :, q] = view
    return buffer.reshape(ph * pw * n * blocks, kh * kw * channels, per_block * wide)


# Output pixels per block of the few-channel im2col (see
# im2col_few_channels and _rows_per_block).
_BLOCK_PIXELS = 256


def _rows_per_block(height, width):
    """Rows of ``width`` output pixels per block (of a map or window plane
    ``height`` rows high): the most that divide ``height`` and hold at most
    ``_BLOCK_PIXELS`` pixels -- one row if even one holds more. Where no
    divisor gives an eighth of that (a tall, narrow map of prime height),
    the whole height: thousands of one-pixel GEMMs would cost far more in
    calls than one long GEMM."""
    fits = max(1, _BLOCK_PIXELS // width)
    rows = max(d for d in range(1, min(fits, height) + 1) if height % d == 0)
    return rows if rows * width >= _BLOCK_PIXELS // 8 else height


# Output values per window column and row from which the few-channel im2col
# splits the padded columns into phases (see im2col_few_channels).
# Measured against the one strided copy, windowed 3x3 convolutions of
# 3-channel images, 1 thread: the im2col 1.4x faster on 64x64 images (runs
# of 32), 1.9x on 128x128, 2.2x on 224x224. Whole networks, 2 threads,
# predict img/s: +2 % on 64x64x3 images (+5 % on 1 thread), +10 % (and
# training +11 %) on 128x128x3; but -3 % on 32x32x3 (runs of 16) and -4 %
# on the reference network's 28x28x1 (13): there the kw * pw copies cost
# more in NumPy calls than their runs save.
_PHASE_RUN = 32


def _column_phases(x, pads, phases):
    """The zero-padded ``x`` channels-first, its columns split into
    ``phases``: shape ``(n, C, rows, phases, places)``, ``[..., r, k]`` the
    padded column ``phases * k + r`` (zeros past the padded width)."""
    (top, bottom), (left, right) = pads
    n, height, width, channels = x.shape
    places = -(-(width + left + right) // phases)
    split = ws.zeros((n, channels, height + top + bottom, phases, places), x.dtype)
    x = x.transpose(0, 3, 1, 2)
    for phase in range(phases):
        first = (phase - left) % phases  # x's first column in this phase
        if first < width:
            place = (first + left) // phases
            count = len(range(first, width, phases))
            split[:, :, top : top + height, phase, place : place + count] = x[
                ..., first::phases
            ]
    return split


# Values of the (K, F) products of a few-channel im2col's blocks computed
# at once (see blocks_weight_grad): a temporary of at most 256 kB in
# float32 whatever the batch, one of the small ones _memory's headroom
# allows for.
_PRODUCT_VALUES = 2**16


def blocks_weight_grad(cols, d2):
    """``cols``' blocks (see :func:`im2col_few_channels`) times ``d2``'s
    rows of each block, summed: the weight gradient, shape ``(K, F)``.

    One batched GEMM per group of blocks (NumPy releases the GIL for it,
    and not for a 2-D ``matmul`` this small), then the sum of the products.
    """
    blocks, taps, rows = cols.shape
    filters = d2.shape[-1]
    d3 = d2.reshape(blocks, rows, filters)
    group = max(1, _PRODUCT_VALUES // (taps * filters))
    dW = np.zeros((taps, filters), dtype=cols.dtype)
    for start in range(0, blocks, group):
        stop = start + group
        dW += np.matmul(cols[start:stop], d3[start:stop]).sum(axis=0)
    return dW
