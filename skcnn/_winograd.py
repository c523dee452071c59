"""Winograd F(2x2, 3x3) convolution and its gradients (Lavin & Gray, 2015).

A 3x3 cross-correlation at stride 1 computed on 2x2 output tiles: each
tile's 4x4 input patch ``d`` and the kernel ``g`` are transformed
(``V = B^T d B``, ``U = G g G^T``), multiplied elementwise, and transformed
back (``Y = A^T (U * V) A``). Summed over input channels, the elementwise
products are 16 independent GEMMs of ``(tiles, C) @ (C, F)``: 16 multiplies
per tile and channel pair instead of im2col's 36, and an input buffer 4x
the input instead of 9x. The transforms are additions of strided views.

The gradients follow from the same bilinear form: with ``E = A e A^T``
the transformed output gradient ``e`` of a tile, the weight gradient is
``G^T (sum over tiles of V * E) G`` -- 16 GEMMs of ``(C, tiles) @
(tiles, F)`` on the forward pass's ``V`` -- and the input gradient the
overlapping sum of the tiles' ``B (E U^T) B^T``: 16 GEMMs of ``(tiles, F)
@ (F, C)``. Training keeps ``V`` (4x the input) where im2col keeps its
9x buffer.

Tensors are channels-last as in ``_layers``; the dtype is preserved. The
images are processed a chunk at a time through buffers reused from chunk
to chunk, so that they stay near the CPU caches.

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
"""

from collections import namedtuple
from math import prod

import numpy as np

# What the backward pass needs: the transformed input of every image,
# (16, n, tiles, C), and the geometry.
WinogradCache = namedtuple("WinogradCache", "V x_shape pads out_hw")

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
    F) at ``stride`` runs faster by Winograd's algorithm."""
    kh, kw, channels, filters = kernel_shape
    small = min(channels, filters) < MIN_CHANNELS
    return (kh, kw) == (3, 3) and stride == 1 and not small


# Images per chunk: each of the 16 GEMMs of a chunk reads and writes at
# most this many bytes per operand. Measured with a single-threaded
# OpenBLAS: (tiles, 64) @ (64, 128) runs at ~117 GFLOP/s while its
# (tiles, 128) output stays under ~256 kB, ~100 at 1 MB, ~67 at 2 MB; the
# transforms also run faster on buffers that stay in the L2 cache. Smaller
# chunks pay NumPy's per-call overhead (~40 calls a chunk).
_CHUNK_BYTES = 2**18


def images_per_chunk(tiles, channels, filters, itemsize):
    """How many images of ``tiles`` tiles one chunk transforms."""
    return max(1, _CHUNK_BYTES // (tiles * max(channels, filters) * itemsize))


def _tiles(out_hw):
    return -(-out_hw[0] // 2), -(-out_hw[1] // 2)


WinogradValues = namedtuple("WinogradValues", "kept forward predict backward dx")


def _sizes(out_hw, channels, filters):
    """Values per image of the chunk buffers, by name."""
    tiles_h, tiles_w = _tiles(out_hw)
    tiles = tiles_h * tiles_w
    split = 2 * (tiles_w + 1) * channels  # a row in the split layout
    return dict(
        split=(2 * tiles_h + 2) * split,  # the padded input
        rows=4 * tiles_h * split,  # its row stage
        V=16 * tiles * channels,
        M=16 * tiles * filters,
        grad=4 * tiles * filters,  # the padded output gradient
        grad_rows=8 * tiles * filters,  # its row stage
        E=16 * tiles * filters,
        dV=16 * tiles * channels,
        cols=4 * tiles_h * split,  # the column stage of dV
        dx_split=(2 * tiles_h + 2) * split,  # the padded input's gradient
    )


def values_per_image(in_shape, filters, out_hw):
    """Values one image occupies in the passes of a Winograd convolution
    of ``in_shape`` maps into ``filters`` maps of ``out_hw`` (the memory
    estimates' terms).

    ``kept``: ``V``, from the forward pass to the backward; ``forward``:
    the chunk buffers of a forward pass that keeps ``V``, ``predict``: of
    one that does not; ``backward``: of the weight gradient; ``dx``: what
    the input gradient adds. The output and the input gradient come on
    top. Upper bounds: a chunk holds at most all the images of a call.
    """
    size = _sizes(out_hw, in_shape[2], filters)
    forward = size["split"] + max(size["rows"], size["M"])
    backward = size["grad"] + size["grad_rows"] + size["E"]
    dx = size["dV"] + max(size["cols"] - size["grad_rows"], 0)
    dx += max(size["dx_split"] - size["E"], 0)
    return WinogradValues(size["V"], forward, forward + size["V"], backward, dx)


def chunk_share(in_shape, filters, out_hw, n, itemsize):
    """The fraction of a call's ``n`` images whose chunk buffers exist at
    once: the chunk buffers per image of :func:`values_per_image` times
    this are the buffers per image of the call."""
    tiles_h, tiles_w = _tiles(out_hw)
    step = images_per_chunk(tiles_h * tiles_w, in_shape[2], filters, itemsize)
    return min(n, step) / n


def weight_values(channels, filters, train):
    """Values the weights' transforms occupy while one call runs, in units
    of ``C F``: forward ``U`` (16), its row stage (12) and a temporary (3);
    backward ``U`` (16), the transformed weight gradient (16) and one
    chunk's product (16), or at the end its row stage (12) and the weight
    gradient (9, counted with the gradients)."""
    return (48 if train else 32) * channels * filters


# --------------------------------------------------------------------------
# The 1-D transforms, applied along one axis of tiles at a time
# --------------------------------------------------------------------------


def _kernel_transform(W):
    """``G g G^T`` for every (channel, filter) pair: (3, 3, C, F) -> (16, C, F).

    Cheap (16 C F values), so computed on every call: nothing to cache on
    objects that several threads share.
    """
    channels, filters = W.shape[2:]
    rows = np.empty((4, 3, channels, filters), dtype=W.dtype)
    _transform_G(W, rows)
    U = np.empty((4, 4, channels, filters), dtype=W.dtype)
    for i in range(4):
        _transform_G(rows[i], U[i])
    return U.reshape(16, channels, filters)


def _transform_G(g, out):
    """``out = G g`` along the first axis: ``(g0, (g0 + g1 + g2) / 2,
    (g0 - g1 + g2) / 2, g2)``."""
    half = g.dtype.type(0.5)
    np.copyto(out[0], g[0])
    np.copyto(out[3], g[2])
    mid, odd = out[1], out[2]
    np.add(g[0], g[2], out=mid)
    mid *= half
    np.multiply(g[1], half, out=odd)
    np.subtract(mid, odd, out=out[2])  # elementwise: reads odd before writing
    mid += g[1] * half


def _kernel_grad(T):
    """``G^T t G`` for every (channel, filter) pair: (16, C, F) -> (3, 3, C, F).

    ``G^T t = (t0 + (t1 + t2) / 2, (t1 - t2) / 2, (t1 + t2) / 2 + t3)``.
    """
    channels, filters = T.shape[1:]
    T = T.reshape(4, 4, channels, filters)
    rows = np.empty((3, 4, channels, filters), dtype=T.dtype)
    _transform_Gt(T, rows)
    dW = np.empty((3, 3, channels, filters), dtype=T.dtype)
    for i in range(3):
        _transform_Gt(rows[i], dW[i])
    return dW


def _transform_Gt(t, out):
    half = t.dtype.type(0.5)
    mid = out[1]  # (t1 + t2) / 2 while the others are computed
    np.add(t[1], t[2], out=mid)
    mid *= half
    np.add(t[0], mid, out=out[0])
    np.add(mid, t[3], out=out[2])
    np.subtract(t[1], t[2], out=mid)
    mid *= half


def _transform_B(d, out):
    """``out = B^T d`` from a list of four views: a patch's input transform."""
    np.subtract(d[0], d[2], out=out[0])
    np.add(d[1], d[2], out=out[1])
    np.subtract(d[2], d[1], out=out[2])
    np.subtract(d[1], d[3], out=out[3])


def _transform_A(e0, e1, out):
    """``out = A e``, the output gradient's transform: ``A = [[1, 0],
    [1, 1], [1, -1], [0, -1]]``."""
    np.copyto(out[0], e0)
    np.add(e0, e1, out=out[1])
    np.subtract(e0, e1, out=out[2])
    np.negative(e1, out=out[3])


def _overlap_B(v, even, odd, axis):
    """The 4-value patches ``B v`` of the tiles along ``axis``, added where
    neighbouring patches overlap (patch ``t`` covers positions ``2t`` to
    ``2t + 3``): ``even`` and ``odd`` receive positions ``2t`` and
    ``2t + 1``, ``t`` running over one more than the tiles.
    ``B v = (v0, v1 - v2 + v3, v1 + v2 - v0, -v3)``.
    """
    lead = (slice(None),) * axis
    head, tail, last = lead + (slice(None, -1),), lead + (slice(1, None),), lead + (-1,)
    np.copyto(even[head], v[0])
    even[last] = 0
    shifted = even[tail]
    shifted += v[1]
    shifted += v[2]
    shifted -= v[0]
    np.subtract(v[1], v[2], out=odd[head])
    odd[head] += v[3]
    odd[last] = 0
    odd[tail] -= v[3]


# --------------------------------------------------------------------------
# Layouts: columns split by parity
# --------------------------------------------------------------------------


def _split_columns(x, pads, out):
    """Copy ``x``, zero-padded by ``pads``, into ``out`` with its columns
    split by parity: ``out[:, r, p, t]`` is column ``2 t + p`` of row ``r``.

    Split so, every view a transform reads is a run of contiguous values
    as long as a tile row -- interleaved columns would make NumPy loop
    over runs of ``C`` values. ``out`` is zero where no input lands: rows
    and columns past the padded input only feed outputs that overhang
    ``out_h`` / ``out_w`` and are cropped. Input rows and columns past
    ``out`` are dropped.
    """
    _, height, width, _ = x.shape
    (top, _), (left, _) = pads
    keep_h = min(height, out.shape[1] - top)
    keep_w = min(width, 2 * out.shape[3] - left)
    for parity in range(2):
        first = (parity - left) % 2  # the first input column of this parity
        count = len(range(first, keep_w, 2))
        start = (left + first) // 2
        out[:, top : top + keep_h, parity, start : start + count] = x[
            :, :keep_h, first:keep_w:2
        ]


def _merge_columns(split, pads, out):
    """The inverse of :func:`_split_columns`: ``out`` takes ``split``'s
    values inside the padding; what ``split`` does not cover is left as
    it is."""
    _, height, width, _ = out.shape
    (top, _), (left, _) = pads
    keep_h = min(height, split.shape[1] - top)
    keep_w = min(width, 2 * split.shape[3] - left)
    for parity in range(2):
        first = (parity - left) % 2
        count = len(range(first, keep_w, 2))
        start = (left + first) // 2
        out[:, :keep_h, first:keep_w:2] = split[
            :, top : top + keep_h, parity, start : start + count
        ]


# --------------------------------------------------------------------------
# The stages
# --------------------------------------------------------------------------


def _input_transform(xs, rows, out):
    """``V = B^T d B`` of every 4x4 patch at stride 2 into ``out``.

    ``xs`` is the padded input in :func:`_split_columns`' layout; its rows
    are transformed first into ``rows``, (4, n, tiles_h, 2, tiles_w + 1,
    C), then its columns into ``out``, (4, 4, n, tiles_h, tiles_w, C).
    """
    tiles_h = rows.shape[2]
    _transform_B([xs[:, i : i + 2 * tiles_h : 2] for i in range(4)], rows)
    for i in range(4):
        even, odd = rows[i][:, :, 0], rows[i][:, :, 1]  # columns 2t, 2t + 1
        d = [even[:, :, :-1], odd[:, :, :-1], even[:, :, 1:], odd[:, :, 1:]]
        _transform_B(d, out[i])


def _output_transform(M, out):
    """``A^T m A`` of every tile, scattered into ``out``, (n, out_h, out_w, F).

    ``M`` is (4, 4, n, tiles_h, tiles_w, F). The row stage runs in place in
    ``M`` (rows 0 and 1 of each tile become the two output rows), the
    column stage writes straight into the strided output views, cropping
    the tiles that overhang an odd ``out_h`` / ``out_w``.
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


def _gradient_transform(es, rows, out):
    """``E = A e A^T`` of every 2x2 output-gradient tile into ``out``,
    (4, 4, n, tiles_h, tiles_w, F); ``es`` is the gradient, zero-padded to
    whole tiles, in :func:`_split_columns`' layout; ``rows`` is
    (4, n, tiles_h, 2, tiles_w, F)."""
    _transform_A(es[:, 0::2], es[:, 1::2], rows)
    for i in range(4):
        _transform_A(rows[i][:, :, 0], rows[i][:, :, 1], out[i])


def _input_gradient(dV, cols, out):
    """The overlapping sum of every tile's ``B dv B^T``, into ``out``, the
    padded input's gradient in :func:`_split_columns`' layout.

    ``dV`` is (4, 4, n, tiles_h, tiles_w, C); its columns are transformed
    first into ``cols``, (4, n, tiles_h, 2, tiles_w + 1, C), then the rows.
    """
    for i in range(4):
        _overlap_B(dV[i], cols[i][:, :, 0], cols[i][:, :, 1], axis=2)
    _overlap_B(cols, out[:, 0::2], out[:, 1::2], axis=1)


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------


def _chunks(n, per_image, channels, filters, itemsize):
    """``(step, [(start, count)...])``: the chunks of ``n`` images."""
    step = max(1, min(n, images_per_chunk(per_image, channels, filters, itemsize)))
    return step, [(start, min(step, n - start)) for start in range(0, n, step)]


def _prefix(buffer, shape):
    """The first ``prod(shape)`` values of a flat ``buffer``, as ``shape``:
    a chunk shorter than the others uses a contiguous prefix."""
    return buffer[: prod(shape)].reshape(shape)


def winograd_forward(x, W, pads=((0, 0), (0, 0)), out_hw=None, need_cache=False):
    """Cross-correlate ``x`` with a 3x3 kernel ``W`` at stride 1 (no bias).

    The same result as :func:`~skcnn._layers.conv2d_forward` with
    ``stride=1`` (to rounding), by Winograd's F(2x2, 3x3).

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
    need_cache : bool, default=False
        Whether to return what :func:`winograd_backward` needs.

    Returns
    -------
    out : ndarray of shape (n, out_h, out_w, F)
    cache : WinogradCache, or None without ``need_cache``
    """
    n, height, width, channels = x.shape
    filters = W.shape[3]
    (top, bottom), (left, right) = pads
    if out_hw is None:
        out_hw = (height + top + bottom - 2, width + left + right - 2)
    tiles_h, tiles_w = _tiles(out_hw)
    per_image, dtype = tiles_h * tiles_w, x.dtype
    U = _kernel_transform(W.astype(dtype, copy=False))
    out = np.empty((n,) + tuple(out_hw) + (filters,), dtype=dtype)
    step, chunks = _chunks(n, per_image, channels, filters, dtype.itemsize)
    size = _sizes(out_hw, channels, filters)
    split_shape = (2 * tiles_h + 2, 2, tiles_w + 1, channels)
    split = np.zeros((step,) + split_shape, dtype=dtype)
    # the row stage and the products one after the other in one buffer
    work = np.empty(step * max(size["rows"], size["M"]), dtype=dtype)
    if need_cache:  # V of every image, kept for the backward pass
        V_all = np.empty((16, n, per_image, channels), dtype=dtype)
    else:
        V_buf = np.empty(step * size["V"], dtype=dtype)
    for start, k in chunks:
        tiles = k * per_image
        if need_cache:
            V = V_all[:, start : start + k].reshape(16, tiles, channels)
        else:
            V = _prefix(V_buf, (16, tiles, channels))
        _split_columns(x[start : start + k], pads, split[:k])
        rows = _prefix(work, (4, k, tiles_h) + split_shape[1:])
        _input_transform(split[:k], rows, V.reshape(4, 4, k, tiles_h, tiles_w, -1))
        M = _prefix(work, (16, tiles, filters))
        np.matmul(V, U, out=M)
        _output_transform(
            M.reshape(4, 4, k, tiles_h, tiles_w, filters), out[start : start + k]
        )
    if not need_cache:
        return out, None
    return out, WinogradCache(V_all, x.shape, pads, tuple(out_hw))


def winograd_conv3x3(x, W, pads=((0, 0), (0, 0)), out_hw=None):
    """:func:`winograd_forward`'s output alone."""
    return winograd_forward(x, W, pads, out_hw)[0]


def winograd_backward(dout, cache, W, need_dx=True):
    """Gradients of :func:`winograd_forward` w.r.t. its input and weights.

    Returns
    -------
    dx : ndarray of shape (n, H, W, C) or None when ``need_dx`` is False
    dW : ndarray of shape (3, 3, C, F)
    """
    V_all, x_shape, pads, out_hw = cache
    n, height, width, channels = x_shape
    filters = W.shape[3]
    tiles_h, tiles_w = _tiles(out_hw)
    per_image, dtype = tiles_h * tiles_w, dout.dtype
    step, chunks = _chunks(n, per_image, channels, filters, dtype.itemsize)
    size = _sizes(out_hw, channels, filters)
    grad_shape = (2 * tiles_h, 2, tiles_w, filters)  # whole tiles, split
    grad = np.zeros((step,) + grad_shape, dtype=dtype)
    # two buffers used twice: the row stage of the output gradient, then
    # the column stage of the input gradient; E, then the padded input's
    # gradient
    dx_size = max(size["cols"], size["dx_split"]) if need_dx else 0
    work = np.empty(step * max(size["grad_rows"], dx_size), dtype=dtype)
    E_buf = np.empty(step * max(size["E"], dx_size), dtype=dtype)
    dW_t = None
    if need_dx:
        Ut = _kernel_transform(W.astype(dtype, copy=False)).transpose(0, 2, 1)
        dV_buf = np.empty(step * size["dV"], dtype=dtype)
        split_shape = (2 * tiles_h + 2, 2, tiles_w + 1, channels)
        # input rows / columns that feed no computed output get no gradient
        (top, _), (left, _) = pads
        covered = height + top <= split_shape[0] and width + left <= 2 * tiles_w + 2
        dx = (np.empty if covered else np.zeros)(x_shape, dtype=dtype)
    for start, k in chunks:
        tiles = k * per_image
        _split_columns(dout[start : start + k], ((0, 0), (0, 0)), grad[:k])
        rows = _prefix(work, (4, k, tiles_h, 2, tiles_w, filters))
        E = _prefix(E_buf, (16, tiles, filters))
        _gradient_transform(grad[:k], rows, E.reshape(4, 4, k, tiles_h, tiles_w, -1))
        V = V_all[:, start : start + k].reshape(16, tiles, channels)
        # the chunks' products summed in chunk order: the same bits for a
        # part whatever the thread count
        product = np.matmul(V.transpose(0, 2, 1), E)
        dW_t = product if dW_t is None else np.add(dW_t, product, out=dW_t)
        if need_dx:
            dV = _prefix(dV_buf, (16, tiles, channels))
            np.matmul(E, Ut, out=dV)
            cols = _prefix(work, (4, k, tiles_h) + split_shape[1:])
            dx_split = _prefix(E_buf, (k,) + split_shape)
            dV = dV.reshape(4, 4, k, tiles_h, tiles_w, channels)
            _input_gradient(dV, cols, dx_split)
            _merge_columns(dx_split, pads, dx[start : start + k])
    if dW_t is None:  # no images
        dW_t = np.zeros((16, channels, filters), dtype=dtype)
    return (dx if need_dx else None), _kernel_grad(dW_t)
