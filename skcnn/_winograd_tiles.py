"""Winograd convolution's tiles: the transforms of F(m x m, 3x3) (m = 2
to 5), and the moves between channels-last maps and their tiles.

See :mod:`~skcnn._winograd` for the algorithm. A tile array has shape
``(i, j, n, tiles_h, tiles_w, C)``: ``[i, j, :, t, s]`` is pixel ``(i, j)``
of tile ``(t, s)``, so that each pixel position of every tile of a chunk is
one contiguous block, a GEMM operand as it is.
"""

from math import prod

import numpy as np

from ._strides import strided_view, window_view


def prefix(buffer, shape):
    """The first ``prod(shape)`` values of a flat ``buffer``, as ``shape``:
    a chunk shorter than the others uses a contiguous prefix."""
    return buffer[: prod(shape)].reshape(shape)


# B^T, G, A^T of F(m x m, 3x3) by tile size m: Toom-Cook with the
# interpolation points 0, +-1 (m = 2), 2 (3), -2 (4), 1/2 (5) and infinity
# -- for m = 2 and 4 Lavin & Gray's matrices. ``A^T`` holds the points'
# powers, ``G`` their powers over the product of their differences to the
# other points, and ``B^T`` solves ``A^T[i, j] G[j, k] B^T[j, t] = [t == i
# + k]`` (summed over j). B^T and A^T are exact in binary for these points,
# G is not (1/3, 1/6, ...): a float32 result is within ~5e-6 of the largest
# output with m = 3 to 5, ~3e-7 with m = 2.
_MATRICES = {
    2: (
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]],
    ),
    3: (
        [
            [2, -1, -2, 1, 0],
            [0, -2, -1, 1, 0],
            [0, 2, -3, 1, 0],
            [0, -1, 0, 1, 0],
            [0, 2, -1, -2, 1],
        ],
        [
            [1 / 2, 0, 0],
            [-1 / 2, -1 / 2, -1 / 2],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 6, 1 / 3, 2 / 3],
            [0, 0, 1],
        ],
        [[1, 1, 1, 1, 0], [0, 1, -1, 2, 0], [0, 1, 1, 4, 1]],
    ),
    4: (
        [
            [4, 0, -5, 0, 1, 0],
            [0, -4, -4, 1, 1, 0],
            [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0],
            [0, 2, -1, -2, 1, 0],
            [0, 4, 0, -5, 0, 1],
        ],
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ],
        [
            [1, 1, 1, 1, 1, 0],
            [0, 1, -1, 2, -2, 0],
            [0, 1, 1, 4, 4, 0],
            [0, 1, -1, 8, -8, 1],
        ],
    ),
    5: (
        [
            [-2, 4, 5 / 2, -5, -1 / 2, 1, 0],
            [0, 2, -2, -9 / 2, 1 / 2, 1, 0],
            [0, -2, 6, -7 / 2, -3 / 2, 1, 0],
            [0, 1, -3 / 2, -2, 3 / 2, 1, 0],
            [0, -1, 5 / 2, 0, -5 / 2, 1, 0],
            [0, 4, 0, -5, 0, 1, 0],
            [0, -2, 4, 5 / 2, -5, -1 / 2, 1],
        ],
        [
            [-1 / 2, 0, 0],
            [-1 / 3, -1 / 3, -1 / 3],
            [1 / 9, -1 / 9, 1 / 9],
            [1 / 36, 1 / 18, 1 / 9],
            [-1 / 60, 1 / 30, -1 / 15],
            [32 / 45, 16 / 45, 8 / 45],
            [0, 0, 1],
        ],
        [
            [1, 1, 1, 1, 1, 1, 0],
            [0, 1, -1, 2, -2, 1 / 2, 0],
            [0, 1, 1, 4, 4, 1 / 4, 0],
            [0, 1, -1, 8, -8, 1 / 8, 0],
            [0, 1, 1, 16, 16, 1 / 16, 1],
        ],
    ),
}


# Whether the transforms are applied in two halves (see :func:`transform`):
# 2x2 tiles' ran faster as one GEMM of the whole (X kron X) (16x16 or 4x16),
# measured 1.05-1.1x on the layers of 10x10 to 14x14 maps, 1 thread; 4x4
# tiles' 36x36 ones ran 0.55-0.6x.
SEPARABLE = {2: False, 3: True, 4: True, 5: True}

# A 2x2 tiles' transform is one GEMM of a 16x16 (or 4x16) matrix by a
# chunk's ``tiles * C`` columns, but OpenBLAS slows on long ones: (4x16) @
# (16 x N) took 0.85 ns a column up to N = 8192 and 2.9 from 16384 (1
# thread, float32; the operands outgrow a 1 MB L2 cache). So such a product
# runs in pieces of at most this many columns. With average pooling (14x14
# outputs, 64 filters: 15,680 columns a chunk) prediction ran +6 %; the
# (64, 128) filters and training did not change. Separable transforms, in
# pieces too, ran 7-8 % slower (more NumPy calls): they stay whole.
_KRON_COLUMNS = 8192


class _Transforms:
    """The tile transforms of F(m x m, 3x3) in one dtype: ``BT`` (a, a) and
    ``AT`` (m, a), their transposes ``B`` and ``A``, and ``kernel`` = ``G
    kron G`` (a * a, 9), which maps a flattened 3x3 kernel to its transform
    (row-major ``vec(X Y Z^T) = (X kron Z) vec(Y)``)."""

    def __init__(self, m, dtype):
        BT, G, AT = (np.array(x, dtype=float) for x in _MATRICES[m])
        self.separable = SEPARABLE[m]
        if self.separable:
            BT, AT = BT.astype(dtype), AT.astype(dtype)
        else:
            BT, AT = np.kron(BT, BT).astype(dtype), np.kron(AT, AT).astype(dtype)
        # B and A as transposed views: contiguous copies ran OpenBLAS's
        # small-matrix kernels up to 10 % slower
        self.matrices = {"BT": BT, "AT": AT, "B": BT.T, "A": AT.T}
        self.kernel = np.kron(G, G).astype(dtype)

    def apply(self, name, src, out, stage, columns_first=False):
        """``out[t] = X @ src[t] @ X.T`` for every tile ``t``, ``X`` the
        matrix ``name``: see :func:`_transform`."""
        matrix = self.matrices[name]
        if self.separable:
            return _transform(matrix, src, out, stage, columns_first)
        # (X kron X) @ the tiles, in near-equal pieces of columns
        rows, cols = matrix.shape
        src, flat = src.reshape(cols, -1), out.reshape(rows, -1)
        width = src.shape[1]
        if width <= _KRON_COLUMNS:  # one piece: no loop (a small predict's)
            np.matmul(matrix, src, out=flat)
            return out
        pieces = -(-width // _KRON_COLUMNS)
        bounds = [width * k // pieces for k in range(pieces + 1)]
        for a, b in zip(bounds, bounds[1:]):
            np.matmul(matrix, src[:, a:b], out=flat[:, a:b])
        return out


# Made once: np.kron and the casts cost ~100 us, a call on a small part
# only a few times that. Constants, read-only, so threads may share them.
_BY_TILE = {}


def transforms(m, dtype):
    key = (m, np.dtype(dtype))
    if key not in _BY_TILE:
        T = _Transforms(*key)
        for x in (*T.matrices.values(), T.kernel):
            x.flags.writeable = False
        _BY_TILE[key] = T  # a race makes two equal ones: harmless
    return _BY_TILE[key]


def _transform(matrix, src, out, stage, columns_first=False):
    """``out[t] = matrix @ src[t] @ matrix.T`` for every tile ``t``: ``src``
    is (q, q, ...) with tiles along the trailing axes, ``out`` (p, p, ...),
    ``matrix`` (p, q); ``stage`` holds the half-way values (p * q per tile).

    Two GEMMs: over the rows first, then batched over the columns -- or,
    with ``columns_first``, the other way round, for a ``src`` that views
    the first axis of a larger array (its leading axis only splits, and the
    output must take the 2-D GEMM's result as it is).
    """
    p, q = matrix.shape
    per = src.size // (q * q)
    if columns_first:
        half = prefix(stage, (q, p, per))
        np.matmul(matrix, src.reshape(q, q, per), out=half)
        np.matmul(matrix, half.reshape(q, p * per), out=out.reshape(p, p * per))
    else:
        half = prefix(stage, (p, q * per))
        np.matmul(matrix, src.reshape(q, q * per), out=half)
        np.matmul(matrix, half.reshape(p, q, per), out=out.reshape(p, p, per))
    return out


def kernel_transform(W, m):
    """``G g G^T`` for every (channel, filter) pair: (3, 3, C, F) -> (a * a, C, F).

    Cheap (a * a * C * F values), so computed on every call -- a predict
    call's parts share one (:func:`~skcnn._network.for_inference`) --: nothing
    is cached on objects that several threads share.
    """
    kernel = transforms(m, W.dtype).kernel
    return (kernel @ W.reshape(9, -1)).reshape((-1,) + W.shape[2:])


def kernel_grad(T, m):
    """``G^T t G`` for every (channel, filter) pair: (a * a, C, F) -> (3, 3, C, F)."""
    kernel = transforms(m, T.dtype).kernel
    return (kernel.T @ T.reshape(len(kernel), -1)).reshape((3, 3) + T.shape[1:])


def unpadded(x_shape, pads, rows, cols):
    """Whether ``rows x cols`` pixels from the input's top-left corner lie
    within the input itself, unpadded: no zero border before it, and its
    rows and columns reach as far as the tiles read (forward) or their
    gradient is summed (backward). Then the input is read, and its gradient
    summed, in place, with no padded copy between (a valid convolution's)."""
    (top, _), (left, _) = pads
    height, width = x_shape[1:3]
    return top == left == 0 and height >= rows and width >= cols


def pad(x, pads, out):
    """Copy ``x`` into ``out`` at offset ``pads``; ``out`` is zero where
    no input lands. Rows and columns past ``out`` are dropped (they feed
    no computed output); those past the padded input stay zero (they feed
    only outputs that overhang ``out_h`` / ``out_w`` and are cropped)."""
    (top, _), (left, _) = pads
    keep_h = min(x.shape[1], out.shape[1] - top)
    keep_w = min(x.shape[2], out.shape[2] - left)
    out[:, top : top + keep_h, left : left + keep_w] = x[:, :keep_h, :keep_w]


def patches_view(padded, m, tiles_h, tiles_w):
    """Strided view (a, a, n, tiles_h, tiles_w, C) of the a x a patches at
    stride m: ``[i, j, :, t, s]`` is pixel ``(m t + i, m s + j)``."""
    sn, sh, sw, sc = padded.strides
    shape = (m + 2, m + 2, padded.shape[0], tiles_h, tiles_w, padded.shape[3])
    strides = (sh, sw, sn, m * sh, m * sw, sc)
    return strided_view(padded, shape, strides)


def scatter(Y, out):
    """The (m, m, n, tiles_h, tiles_w, F) output tiles into ``out``,
    cropping the tiles that overhang ``out_h`` / ``out_w``."""
    m, tiles_h, tiles_w = Y.shape[0], *Y.shape[3:5]
    out_h, out_w = out.shape[1:3]
    if (out_h, out_w) == (m * tiles_h, m * tiles_w):
        np.copyto(window_view(out, m, m, tiles_h, tiles_w, True), Y)
        return
    for a in range(m):
        for b in range(m):
            r, c = (out_h - a + m - 1) // m, (out_w - b + m - 1) // m
            out[:, a::m, b::m] = Y[a, b][:, :r, :c]


def gather(dout, out):
    """The (m, m, n, tiles_h, tiles_w, F) tiles of ``dout`` into ``out``;
    ``out`` is zero where tiles overhang ``dout``."""
    m, tiles_h, tiles_w = out.shape[0], *out.shape[3:5]
    out_h, out_w = dout.shape[1:3]
    if (out_h, out_w) == (m * tiles_h, m * tiles_w):
        np.copyto(out, window_view(dout, m, m, tiles_h, tiles_w))
        return
    for a in range(m):
        for b in range(m):
            r, c = (out_h - a + m - 1) // m, (out_w - b + m - 1) // m
            out[a, b][:, :r, :c] = dout[:, a::m, b::m]


def _window_pairs(Y, blocks):
    """``(tiles view, blocks view)`` pairs that move 4x4 output tiles
    ``Y`` (4, 4, n, tiles_h, tiles_w, F) to and from the blocks of 2x2
    windows (4, n, rows, cols, F): pixel ``(p, q)`` of the window at ``(2 t
    + u, 2 s + v)`` is ``Y[2 u + p, 2 v + q, :, t, s]``. One pair, or one
    per ``(u, v)`` where the tiles overhang the blocks."""
    n, tiles_h, tiles_w, filters = Y.shape[2:]
    rows, cols = blocks.shape[2:4]
    if (rows, cols) == (2 * tiles_h, 2 * tiles_w):
        split = blocks.reshape(2, 2, n, tiles_h, 2, tiles_w, 2, filters)
        by_tile = split.transpose(4, 0, 6, 1, 2, 3, 5, 7)  # u, p, v, q, n, t, s
        return [(Y.reshape(2, 2, 2, 2, n, tiles_h, tiles_w, filters), by_tile)]
    pb = blocks.reshape(2, 2, n, rows, cols, filters)
    pairs = []
    for u in range(2):
        for v in range(2):
            r, c = (rows - u + 1) // 2, (cols - v + 1) // 2
            tiles = Y[2 * u : 2 * u + 2, 2 * v : 2 * v + 2, :, :r, :c]
            pairs.append((tiles, pb[:, :, :, u::2, v::2]))
    return pairs


def _blocks_view(blocks, pixels):
    """``(pixels view, blocks view)``: the (n, 2 rows, 2 cols, F) map
    ``pixels`` by 2x2 window position, and the blocks alike."""
    n, rows, cols, filters = blocks.shape[1:]
    return (
        window_view(pixels, 2, 2, rows, cols, True),
        blocks.reshape(2, 2, n, rows, cols, filters),
    )


def move_windows(Y, blocks, pixels, to_blocks):
    """Copy the (m, m, n, tiles_h, tiles_w, F) tiles ``Y`` into the blocks
    of 2x2 windows (4, n, rows, cols, F) (``to_blocks``), or the blocks
    into ``Y``, which is then zero where the tiles overhang the blocks.
    Tiles of odd ``m`` do not align with the windows: they go through
    ``pixels``, a buffer of at least ``n * 2 rows * 2 cols * F`` values
    (else unused)."""
    if Y.shape[0] == 4:
        for tiles_view, blocks_view in _window_pairs(Y, blocks):
            np.copyto(
                *((blocks_view, tiles_view) if to_blocks else (tiles_view, blocks_view))
            )
        return
    n, rows, cols, filters = blocks.shape[1:]
    pixels = prefix(pixels, (n, 2 * rows, 2 * cols, filters))
    pixel_view, blocks_view = _blocks_view(blocks, pixels)
    if to_blocks:
        scatter(Y, pixels)
        np.copyto(blocks_view, pixel_view)
    else:
        np.copyto(pixel_view, blocks_view)
        gather(pixels, Y)


def overlap_add(dP, out, rows):
    """Set ``out``, the padded input's gradient (n, m (tiles_h + 1),
    m (tiles_w + 1), C), to the sum of every tile's a x a patch gradient.

    ``dP`` is (a, a, n, tiles_h, tiles_w, C); neighbouring patches overlap
    by two rows or columns. Patch row ``i`` of tile row ``t`` lands on pixel
    row ``m t + i``: row ``p`` of the block of ``m`` rows ``t`` if ``i = p
    < m``, row ``p = i - m`` (0 or 1) of block ``t + 1`` otherwise. So the
    rows are summed first, into ``rows`` (at least (m, a, n, tiles_h + 1,
    tiles_w, C) values), then the columns the same way into ``out``'s
    blocks: six NumPy calls where adding the patch pixels one by one took
    22 or more -- each a wait for the threads computing a minibatch's other
    parts. The last block's rows past the first two get zeros (no patch
    reaches them).
    """
    a, tiles_h, tiles_w = dP.shape[0], *dP.shape[3:5]
    m, n, channels = a - 2, dP.shape[2], dP.shape[5]
    R = prefix(rows, (m, a, n, tiles_h + 1, tiles_w, channels))
    np.copyto(R[:, :, :, :tiles_h], dP[:m])
    R[:, :, :, tiles_h] = 0
    np.add(R[:2, :, :, 1:], dP[m:], out=R[:2, :, :, 1:])
    pixels = window_view(out, m, m, tiles_h + 1, tiles_w + 1, True)
    np.copyto(pixels[:, :, :, :, :tiles_w], R[:, :m])
    pixels[:, :, :, :, tiles_w] = 0
    np.add(pixels[:, :2, :, :, 1:], R[:, m:], out=pixels[:, :2, :, :, 1:])
