"""Winograd F(2x2, 3x3) convolution (Lavin & Gray, 2015).

A 3x3 cross-correlation at stride 1 computed on 2x2 output tiles: each
tile's 4x4 input patch ``d`` and the kernel ``g`` are transformed
(``V = B^T d B``, ``U = G g G^T``), multiplied elementwise, and transformed
back (``Y = A^T (U * V) A``). Summed over input channels, the elementwise
products are 16 independent GEMMs of ``(tiles, C) @ (C, F)``: 16 multiplies
per tile and channel pair instead of im2col's 36, and an input buffer 4x
the input instead of 9x. The transforms are additions of strided views.

Tensors are channels-last as in ``_layers``; the dtype is preserved.
"""

from math import prod

import numpy as np


def _kernel_transform(W):
    """``G g G^T`` for every (channel, filter) pair: (3, 3, C, F) -> (16, C, F).

    With ``G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]``.
    Cheap (16 C F values), so computed on every call: nothing to cache on
    objects that several threads share.
    """
    half = W.dtype.type(0.5)

    def along(g, axis):
        g0, g1, g2 = (np.take(g, k, axis=axis) for k in range(3))
        mid = (g0 + g2) * half
        odd = g1 * half
        return np.stack([g0, mid + odd, mid - odd, g2], axis=axis)

    return along(along(W, 0), 1).reshape((16,) + W.shape[2:])


def _transform_4(d, out):
    """``out = B^T d`` along a list of four views (the 1-D input transform)."""
    np.subtract(d[0], d[2], out=out[0])
    np.add(d[1], d[2], out=out[1])
    np.subtract(d[2], d[1], out=out[2])
    np.subtract(d[1], d[3], out=out[3])


def _tile_input(x, pads, tiles_w, out):
    """Copy ``x`` into ``out``, the input zero-padded to whole tiles with
    its columns split by parity.

    ``out`` has shape (n, 2 * tiles_h + 2, 2, tiles_w + 1, C) and is zero
    where no input lands: ``out[:, r, p, t]`` is column ``2 t + p`` of row
    ``r`` of the padded input. Split by parity, every view the transform
    reads is a run of ``tiles_w * C`` contiguous values -- interleaved
    columns would make NumPy loop over runs of ``C`` values. Rows and
    columns past the padded input stay zero: they only feed outputs that
    overhang ``out_h`` / ``out_w`` and are cropped. Rows and columns past
    the last tile's patch are dropped.
    """
    _, height, width, _ = x.shape
    (top, _), (left, _) = pads
    keep_h = min(height, out.shape[1] - top)
    keep_w = min(width, 2 * tiles_w + 2 - left)
    for parity in range(2):
        first = (parity - left) % 2  # the first input column of this parity
        cols = range(first, keep_w, 2)
        start = (left + first) // 2
        out[:, top : top + keep_h, parity, start : start + len(cols)] = x[
            :, :keep_h, first:keep_w:2
        ]


def _input_transform(xd, rows, out):
    """``B^T d B`` of every 4x4 patch at stride 2 into ``out``.

    ``xd`` is :func:`_tile_input`'s layout. With ``B^T = [[1, 0, -1, 0],
    [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]`` the rows are transformed
    first into ``rows``, (4, n, tiles_h, 2, tiles_w + 1, C), then its
    columns into ``out``, (4, 4, n, tiles_h, tiles_w, C): each of the 16
    GEMM operands is one contiguous (tiles, C) matrix.
    """
    tiles_h = rows.shape[2]
    _transform_4([xd[:, i : i + 2 * tiles_h : 2] for i in range(4)], rows)
    for i in range(4):
        even, odd = rows[i][:, :, 0], rows[i][:, :, 1]  # columns 2t, 2t + 1
        _transform_4(
            [even[:, :, :-1], odd[:, :, :-1], even[:, :, 1:], odd[:, :, 1:]], out[i]
        )


def _output_transform(M, out):
    """``A^T m A`` of every tile, scattered into ``out``, (n, out_h, out_w, F).

    ``M`` is (4, 4, n, tiles_h, tiles_w, F). With ``A^T = [[1, 1, 1, 0],
    [0, 1, -1, -1]]``. The row stage runs in place in ``M`` (rows 0 and 1
    of each tile become the two output rows), the column stage writes
    straight into the strided output views, cropping the tiles that
    overhang an odd ``out_h`` / ``out_w``: no buffer but the output.
    """
    M[0] += M[1]
    M[0] += M[2]
    M[1] -= M[2]
    M[1] -= M[3]
    out_h, out_w = out.shape[1:3]
    for a in range(2):
        r = (out_h - a + 1) // 2
        for b in range(2):
            c = (out_w - b + 1) // 2
            view = out[:, a::2, b::2]
            m = [M[a, j][:, :r, :c] for j in range(4)]
            if b == 0:
                np.add(m[0], m[1], out=view)
                view += m[2]
            else:
                np.subtract(m[1], m[2], out=view)
                view -= m[3]


# Measured on 1 thread, float32, parts of 4 to 32 images (a part's size
# at inference): Winograd beats im2col + GEMM once the 3x3 convolution has
# 32 input channels and 32 filters or more (x1.1 to x1.6: 13x13x32 -> 64,
# 14x14x64 -> 128, 16x16x32 -> 64, 8x8x64 -> 128). With fewer, the
# transforms, which cost in proportion to C + F, outweigh the GEMM's
# saving, in proportion to C * F: 32x32x16 -> 32 is x0.9, 32x32x3 -> 32
# x0.9 and a first layer on 1 channel x0.07 (a GEMM with C = 1 is no GEMM).
MIN_CHANNELS = 32


def winograd_wins(kernel_shape, stride):
    """Whether a convolution with weights of ``kernel_shape`` (kh, kw, C,
    F) at ``stride`` runs faster by :func:`winograd_conv3x3`."""
    kh, kw, channels, filters = kernel_shape
    return (kh, kw) == (3, 3) and stride == 1 and min(channels, filters) >= MIN_CHANNELS


# Images per chunk: each of the 16 GEMMs of a chunk reads and writes at
# most this many bytes per operand. Measured with a single-threaded
# OpenBLAS: (tiles, 64) @ (64, 128) runs at ~117 GFLOP/s while its
# (tiles, 128) output stays under ~256 kB, ~100 at 1 MB, ~67 at 2 MB; the
# transforms also run faster on buffers that stay in the L2 cache. Smaller
# chunks pay NumPy's per-call overhead (~40 calls a chunk).
_CHUNK_BYTES = 2**18


def images_per_chunk(tiles, channels, filters, itemsize):
    """How many images one chunk of :func:`winograd_conv3x3` transforms."""
    return max(1, _CHUNK_BYTES // (tiles * max(channels, filters) * itemsize))


def chunk_values_per_image(block):
    """Values one image of a conv ``block`` adds to :func:`winograd_conv3x3`'s
    chunk buffers (the padded tiles, the row stage, the transformed input
    and the products); the output comes on top. An upper bound per image:
    a chunk holds at most all the images."""
    channels, filters = block.in_shape[2], block.filters
    tiles_h, tiles_w = -(-block.conv_hw[0] // 2), -(-block.conv_hw[1] // 2)
    row = 2 * (tiles_w + 1) * channels
    tiles = tiles_h * tiles_w
    transformed = 16 * tiles * (channels + filters)
    return (2 * tiles_h + 2) * row + 4 * tiles_h * row + transformed


def winograd_conv3x3(x, W, pads=((0, 0), (0, 0)), out_hw=None):
    """Cross-correlate ``x`` with a 3x3 kernel ``W`` at stride 1 (no bias).

    The same result as :func:`~skcnn._layers.conv2d_forward` with
    ``stride=1`` (to rounding), by Winograd's F(2x2, 3x3). The images are
    processed a chunk at a time (:func:`images_per_chunk`) through buffers
    reused from chunk to chunk; only the output is as large as ``x``.

    Parameters
    ----------
    x : ndarray of shape (n, H, W, C)
    W : ndarray of shape (3, 3, C, F)
    pads : ((top, bottom), (left, right))
        Zero padding added around the input.
    out_hw : (int, int), default=None
        Number of output rows and columns to compute (the top-left part of
        the output); ``None`` computes the full output. It may also exceed
        the full output: the input is then taken as zero past its padding.

    Returns
    -------
    out : ndarray of shape (n, out_h, out_w, F)
    """
    n, height, width, channels = x.shape
    filters = W.shape[3]
    (top, bottom), (left, right) = pads
    if out_hw is None:
        out_hw = (height + top + bottom - 2, width + left + right - 2)
    out_h, out_w = out_hw
    tiles_h, tiles_w = -(-out_h // 2), -(-out_w // 2)
    dtype = x.dtype
    U = _kernel_transform(W.astype(dtype, copy=False))
    out = np.empty((n, out_h, out_w, filters), dtype=dtype)
    per_image = tiles_h * tiles_w
    step = images_per_chunk(per_image, channels, filters, dtype.itemsize)
    step = max(1, min(n, step))
    tiled_shape = (2 * tiles_h + 2, 2, tiles_w + 1, channels)
    tiled = np.zeros((step,) + tiled_shape, dtype=dtype)
    rows_shape = (tiles_h, 2, tiles_w + 1, channels)
    # flat buffers: a smaller last chunk uses a contiguous prefix of each
    rows_buf = np.empty(4 * step * prod(rows_shape), dtype=dtype)
    V_buf = np.empty(16 * step * per_image * channels, dtype=dtype)
    M_buf = np.empty(16 * step * per_image * filters, dtype=dtype)
    for start in range(0, n, step):
        k = min(step, n - start)
        tiles = k * per_image
        rows = rows_buf[: 4 * k * prod(rows_shape)].reshape((4, k) + rows_shape)
        V = V_buf[: 16 * tiles * channels].reshape(16, tiles, channels)
        M = M_buf[: 16 * tiles * filters].reshape(16, tiles, filters)
        _tile_input(x[start : start + k], pads, tiles_w, tiled[:k])
        _input_transform(tiled[:k], rows, V.reshape(4, 4, k, tiles_h, tiles_w, -1))
        np.matmul(V, U, out=M)
        _output_transform(
            M.reshape(4, 4, k, tiles_h, tiles_w, filters), out[start : start + k]
        )
    return out
