"""Winograd F(m x m, 3x3) convolution and its gradients, m = 2 to 5
(Lavin & Gray, 2015).

A 3x3 cross-correlation at stride 1 computed on m x m output tiles: each
tile's ``a x a`` input patch ``d`` (``a = m + 2``) and the kernel ``g`` are
transformed (``V = B^T d B``, ``U = G g G^T``), multiplied elementwise, and
transformed back (``Y = A^T (U * V) A``). Summed over input channels, the
elementwise products are ``a^2`` independent GEMMs of ``(tiles, C) @ (C,
F)``. Per output pixel and channel pair that is 4 multiplies with 2x2
tiles, 2.8, 2.25 and 1.96 with 3x3, 4x4 and 5x5 ones, where im2col makes
9; the transformed input is that many times the input, where im2col's
rows are 9 times.

The 2-D transforms are small matrices: mostly zeros and small integers,
but BLAS applies them at memory speed in one or two calls, where adds of
strided views took ~40 NumPy calls, whose overhead dominated the small
parts (2 to 7 images) the engine hands each thread. 2x2 tiles' are one
GEMM of ``(B^T kron B^T)`` (16x16) over all the tiles of a chunk; larger
tiles' are separable -- ``B^T d B`` is ``B^T`` applied to the patches'
rows, then to their columns, two GEMMs of a small matrix (the second
batched over the first axis). Measured on 16x16x32 -> 64 maps, 1 thread:
4x4 tiles' input and output transforms take 4.6 + 4.5 us per image that
way, 12 + 11 as one 36x36 (16x36) GEMM.

The gradients follow from the same bilinear form: with ``E = A e A^T``
the transformed output gradient ``e`` of a tile, the weight gradient is
``G^T (sum over tiles of V * E) G`` -- ``a^2`` GEMMs of ``(C, tiles) @
(tiles, F)`` on the forward pass's ``V`` -- and the input gradient the
overlapping sum of the tiles' ``B (E U^T) B^T``: ``a^2`` GEMMs of
``(tiles, F) @ (F, C)``. Training keeps ``V`` where im2col keeps its rows.

Larger tiles take fewer multiplies and move fewer values per output, but
cover the output in steps of ``m``: :func:`tile_size` weighs the area
each size covers (a 14x14 map costs 16x16 in 4x4 tiles) by its measured
cost per pixel. The transforms of larger tiles hold 1/6, 1/24, 1/60...,
so a float32 result is within ~5e-6 of the largest output (2x2 tiles:
~3e-7), far below what training notices.

Tensors are channels-last as in ``_layers``; the dtype is preserved. The
images are processed a chunk at a time through buffers reused from chunk
to chunk, so that they stay near the CPU caches.
"""

from collections import namedtuple
from math import prod

import numpy as np

from . import _workspace as ws
from ._winograd_tiles import (
    SEPARABLE,
    gather,
    kernel_grad,
    kernel_transform,
    move_windows,
    overlap_add,
    pad,
    patches_view,
    prefix,
    scatter,
    transforms,
    unpadded,
)

# What the backward pass needs: the transformed input of every image,
# (a * a, n, tiles, C), and the geometry.
WinogradCache = namedtuple("WinogradCache", "V x_shape pads out_hw windowed")

# Measured on 1 thread, float32, parts of 2 to 32 images (the engine's
# parts hold 2 to 18), 2x2 tiles: Winograd beats im2col + GEMM once the 3x3
# convolution has 32 input channels and 32 filters or more, x1.15 to x1.7
# forward and x1.3 to x1.7 forward + backward (13x13x32 -> 64,
# 14x14x64 -> 128, 16x16x32 -> 64, 8x8x64 -> 128). With fewer the
# transforms, whose cost grows with C + F, outweigh the GEMMs' saving,
# which grows with C F: 32x32x16 -> 32 is x0.94 on a part of 4 images
# (x1.2 on 16 or more), 32x32x3 -> 32 x0.8, and a first layer on one
# channel x0.1 (a GEMM with C = 1 is no GEMM). 4x4 tiles, whose transforms
# cost less per output, win from 16 channels and filters: x1.2 to x1.7
# forward and x1.5 to x2.0 forward + backward (32x32x16 -> 32,
# 64x64x16 -> 32, 16x16x16 -> 32, 32x32x32 -> 16; parts of 4 to 16
# images), where 8 -> 16 channels ran x0.87 forward.
MIN_CHANNELS = 32


def winograd_wins(kernel_shape, stride, out_hw):
    """Whether a convolution with weights of ``kernel_shape`` (kh, kw, C,
    F) at ``stride`` into an ``out_hw`` output runs faster by Winograd's
    algorithm."""
    kh, kw, channels, filters = kernel_shape
    if (kh, kw) != (3, 3) or stride != 1:
        return False
    least = MIN_CHANNELS // 2 if tile_size(out_hw) == 4 else MIN_CHANNELS
    return min(channels, filters) >= least


# Images per chunk: the a * a GEMMs of a chunk together read and write at
# most this many bytes per operand, so that a chunk's buffers (up to 1 MB
# each) stay near the CPU caches, as the engine's parts do. Measured with a
# single-threaded OpenBLAS and 2x2 tiles: (tiles, 64) @ (64, 128) slows from
# ~117 to ~67 GFLOP/s as its output grows from 256 kB to 2 MB; whole layers
# ran at most ~5% slower than with 2x or 4x this, ~15% faster than with 1/4
# (more chunks, more NumPy calls), and larger chunks raise the memory peak.
# With 4x4 tiles (36 GEMMs) the same total ran layers 1.2-1.6x faster than
# the same bytes per GEMM (2.25x more in all).
_CHUNK_BYTES = 2**20


def images_per_chunk(tiles, channels, filters, itemsize, a=4):
    """How many images of ``tiles`` tiles of ``a x a`` patches one chunk
    transforms."""
    per_image = a * a * tiles * max(channels, filters) * itemsize
    return max(1, _CHUNK_BYTES // per_image)


def _tiles(out_hw, m):
    return -(-out_hw[0] // m), -(-out_hw[1] // m)


# The time per output pixel of each tile size, relative to 2x2 tiles'. An
# output costs its tiles' area (past the output too: overhanging tiles are
# computed and dropped) times this. Measured on 12x12 and 24x24 outputs
# (which 2x2 to 4x4 tiles cover exactly), 32 -> 64 and 64 -> 128 channels,
# 1 thread: 3x3 tiles 0.66-0.92 (prediction and training), 4x4 tiles
# 0.59-0.74; 5x5 tiles 0.81-1.0 on 10x10 and 20x20 outputs. Rounded up by
# whole networks, 2 threads: on 14x14 maps (the (64, 128) and
# average-pooling networks) 4x4 and 5x5 tiles, at most 0.95 of 2x2 tiles'
# time alone, trained and predicted 0-5 % slower, so those keep 2x2
# tiles; the reference network's 10x10 maps take 5x5 tiles (1.2x per
# layer, +2 % training, +4 % prediction), 16x16 and 32x32 maps 4x4 tiles,
# 6x6 and 9x9 ones 3x3 tiles.
_TILE_COST = {2: 1.0, 3: 0.9, 4: 0.78, 5: 0.9}


def tile_size(out_hw):
    """``m`` of the F(m x m, 3x3) that computes an ``out_hw`` output the
    fastest: larger tiles cost less per pixel, but cover the output in
    steps of ``m``."""
    # memoized for the cost table in force: a one-image predict asks a
    # dozen times, and the choice took ~3 us
    global _memo
    costs, chosen = _memo
    if costs is not _TILE_COST:
        _memo = costs, chosen = _TILE_COST, {}
    key = tuple(out_hw)
    if key not in chosen:
        cost = {m: c * prod(m * t for t in _tiles(key, m)) for m, c in costs.items()}
        chosen[key] = min(cost, key=lambda m: (cost[m], m))
    return chosen[key]


_memo = (None, {})


WinogradValues = namedtuple("WinogradValues", "kept forward predict backward dx")


def _sizes(out_hw, channels, filters):
    """Values per image of the chunk buffers, by name."""
    m = tile_size(out_hw)
    a = m + 2
    tiles_h, tiles_w = _tiles(out_hw, m)
    tiles = tiles_h * tiles_w
    return dict(
        # the input, padded to whole tiles
        padded=(m * tiles_h + 2) * (m * tiles_w + 2) * channels,
        # its gradient, padded to whole tiles plus one (see _overlap_add)
        grad_padded=m * m * (tiles_h + 1) * (tiles_w + 1) * channels,
        patches=a * a * tiles * channels,  # the patches (or their gradient)
        V=a * a * tiles * channels,
        M=a * a * tiles * filters,  # the products (or E)
        Y=m * m * tiles * filters,  # the output tiles (or the gradient's)
        # the output in pixel order, on its way to or from 2x2 windows
        pixels=out_hw[0] * out_hw[1] * filters if m % 2 else 0,
        # E U^T, then the rows of the overlap-add
        dV=max(a * a * tiles, m * a * (tiles_h + 1) * tiles_w) * channels,
        # a separable transform's first half
        stage=max(a * a * tiles * channels, a * m * tiles * filters)
        if SEPARABLE[m]
        else 0,
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
    # the patches, then the products, in one buffer; a transform's half
    forward = size["padded"] + max(size["patches"], size["M"]) + size["stage"]
    forward += size["Y"] + size["pixels"]
    # the gradient's tiles (on their way from pixel order), E
    backward = size["Y"] + size["pixels"] + size["M"] + size["stage"]
    # E U^T, then the patches' gradient where E was, the padded input's
    dx = size["dV"] + max(size["patches"] - size["M"], 0) + size["grad_padded"]
    return WinogradValues(size["V"], forward, forward + size["V"], backward, dx)


def chunk_share(in_shape, filters, out_hw, n, itemsize):
    """The fraction of a call's ``n`` images whose chunk buffers exist at
    once: the chunk buffers per image of :func:`values_per_image` times
    this are the buffers per image of the call."""
    m = tile_size(out_hw)
    tiles_h, tiles_w = _tiles(out_hw, m)
    step = images_per_chunk(tiles_h * tiles_w, in_shape[2], filters, itemsize, m + 2)
    return min(n, step) / n


def prepared_kernel(W, out_hw):
    """``W``'s transform for an ``out_hw`` output, as :func:`winograd_forward`
    computes it (its ``U``)."""
    return kernel_transform(W, tile_size(out_hw))


def weight_values(channels, filters, out_hw, train):
    """Values the weights' transforms occupy while one call computes an
    ``out_hw`` output: ``U``; in the backward pass also its transpose, the
    transformed weight gradient and one chunk's product (the weight
    gradient itself is counted with the gradients)."""
    a = tile_size(out_hw) + 2
    return (4 if train else 1) * a * a * channels * filters


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------


def _chunks(n, per_image, channels, filters, itemsize, a):
    """``(step, [(start, count)...])``: the chunks of ``n`` images, as few
    as hold at most ``step`` images each, near-equal in size (32 images by
    10 made a last chunk of 2, whose GEMMs and NumPy calls cost nearly
    what a whole chunk's do)."""
    step = images_per_chunk(per_image, channels, filters, itemsize, a)
    step = max(1, min(n, step))
    count = -(-n // step)
    bounds = [n * k // count for k in range(count + 1)]
    return step, [(a, b - a) for a, b in zip(bounds, bounds[1:])]


def winograd_forward(
    x,
    W,
    pads=((0, 0), (0, 0)),
    out_hw=None,
    need_cache=False,
    windowed=False,
    U=None,
):
    """Cross-correlate ``x`` with a 3x3 kernel ``W`` at stride 1 (no bias).

    The same result as :func:`~skcnn._layers.conv2d_forward` with
    ``stride=1`` (to rounding), by Winograd's F(m x m, 3x3), ``m`` from
    :func:`tile_size`.

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
    windowed : bool, default=False
        Return the output in 2x2 windows (``out_hw`` must be even), so that
        the pooling reads four contiguous blocks (see
        :func:`~skcnn._layers.conv2d_forward`'s ``windows``). 2x2 tiles are
        those windows: their transform writes the blocks as they are; 4x4
        tiles reach them in one copy, odd ones through the pixel order.
    U : ndarray of shape (a * a, C, F), default=None
        ``W``'s transform (:func:`prepared_kernel`), if computed already:
        a predict call computes it once, not once per part of its images.
        Computed here when None (or made for another tile size or dtype).

    Returns
    -------
    out : ndarray of shape (n, out_h, out_w, F), or (4, n, out_h / 2, out_w / 2, F)
        when ``windowed``
    cache : WinogradCache, or None without ``need_cache``
    """
    n, height, width, channels = x.shape
    filters = W.shape[3]
    (top, bottom), (left, right) = pads
    if out_hw is None:
        out_hw = (height + top + bottom - 2, width + left + right - 2)
    m = tile_size(out_hw)
    a = m + 2
    tiles_h, tiles_w = _tiles(out_hw, m)
    per_image, dtype = tiles_h * tiles_w, x.dtype
    T = transforms(m, dtype)
    if U is None or U.shape[0] != a * a or U.dtype != dtype:
        U = kernel_transform(W.astype(dtype, copy=False), m)
    if windowed:
        assert out_hw[0] % 2 == 0 and out_hw[1] % 2 == 0, out_hw
        out = ws.empty((4, n, out_hw[0] // 2, out_hw[1] // 2, filters), dtype)
    else:
        out = ws.empty((n,) + tuple(out_hw) + (filters,), dtype)
    # 2x2 tiles are the windows: their transform writes the blocks as they are
    into_blocks = windowed and m == 2
    step, chunks = _chunks(n, per_image, channels, filters, dtype.itemsize, a)
    size = _sizes(out_hw, channels, filters)
    padded_hw = (m * tiles_h + 2, m * tiles_w + 2)
    direct = unpadded(x.shape, pads, *padded_hw)
    if not direct:
        padded = ws.zeros((step,) + padded_hw + (channels,), dtype)
    # the patches, then the products, in one buffer
    work = ws.empty(step * max(size["patches"], size["M"]), dtype)
    stage = ws.empty(step * size["stage"], dtype) if T.separable else None
    if not into_blocks:
        Y_buf = ws.empty(step * size["Y"], dtype)
    # odd tiles reach the windows through the pixel order
    pixels = ws.empty(step * size["pixels"], dtype) if windowed and m % 2 else None
    if need_cache:  # V of every image, kept for the backward pass
        V_all = ws.empty((a * a, n, per_image, channels), dtype)
    else:
        V_buf = ws.empty(step * size["V"], dtype)
    for start, k in chunks:
        tiles = k * per_image
        if need_cache:
            V = V_all[:, start : start + k].reshape(a * a, tiles * channels)
        else:
            V = prefix(V_buf, (a * a, tiles * channels))
        if direct:
            source = x[start : start + k]
        else:
            source = padded[:k]
            pad(x[start : start + k], pads, source)
        patches = prefix(work, (a, a, k, tiles_h, tiles_w, channels))
        np.copyto(patches, patches_view(source, m, tiles_h, tiles_w))
        T.apply("BT", patches, V, stage)
        M = prefix(work, (a * a, tiles, filters))
        np.matmul(V.reshape(a * a, tiles, channels), U, out=M)
        if into_blocks:  # the chunk's rows of the four blocks
            T.apply("AT", M, out[:, start : start + k, ...], stage)
            continue
        Y = prefix(Y_buf, (m, m, k, tiles_h, tiles_w, filters))
        T.apply("AT", M, Y, stage)
        if windowed:
            move_windows(Y, out[:, start : start + k], pixels, to_blocks=True)
        else:
            scatter(Y, out[start : start + k])
    if not need_cache:
        return out, None
    return out, WinogradCache(V_all, x.shape, pads, tuple(out_hw), windowed)


def winograd_conv3x3(x, W, pads=((0, 0), (0, 0)), out_hw=None):
    """:func:`winograd_forward`'s output alone."""
    return winograd_forward(x, W, pads, out_hw)[0]


def winograd_backward(dout, cache, W, need_dx=True):
    """Gradients of :func:`winograd_forward` w.r.t. its input and weights.

    ``dout`` comes in 2x2 windows if the forward pass's output did.

    Returns
    -------
    dx : ndarray of shape (n, H, W, C) or None when ``need_dx`` is False
    dW : ndarray of shape (3, 3, C, F)
    """
    V_all, x_shape, pads, out_hw, windowed = cache
    n, height, width, channels = x_shape
    filters = W.shape[3]
    m = tile_size(out_hw)
    a = m + 2
    tiles_h, tiles_w = _tiles(out_hw, m)
    per_image, dtype = tiles_h * tiles_w, dout.dtype
    T = transforms(m, dtype)
    step, chunks = _chunks(n, per_image, channels, filters, dtype.itemsize, a)
    size = _sizes(out_hw, channels, filters)
    # 2x2 tiles are the windows: the blocks are the gradient's tiles as they are
    from_blocks = windowed and m == 2
    if not from_blocks:  # the gradient's tiles, zero where they overhang it
        overhang = out_hw[0] % m or out_hw[1] % m
        Y_buf = (ws.zeros if overhang else ws.empty)(step * size["Y"], dtype)
    pixels = ws.empty(step * size["pixels"], dtype) if windowed and m % 2 else None
    # E, then the patches' gradient
    dx_size = size["patches"] if need_dx else 0
    E_buf = ws.empty(step * max(size["M"], dx_size), dtype)
    stage = ws.empty(step * size["stage"], dtype) if T.separable else None
    dW_t = None
    # from the workspace: a product of 4x4 tiles' (36, C, F) is ~1 MB for
    # 64 -> 128 channels, which malloc would map and fault in afresh
    dW_t_buf = ws.empty((a * a, channels, filters), dtype)
    if len(chunks) > 1:
        product_buf = ws.empty((a * a, channels, filters), dtype)
    if need_dx:
        # contiguous: (tiles, F) @ (F, C) with a transposed view ran 1.45x
        # slower in OpenBLAS (its "NT" small-matrix kernel)
        U = kernel_transform(W.astype(dtype, copy=False), m)
        Ut = np.ascontiguousarray(U.transpose(0, 2, 1))
        dV_buf = ws.empty(step * size["dV"], dtype)
        grad_shape = (m * (tiles_h + 1), m * (tiles_w + 1), channels)
        direct = unpadded(x_shape, pads, *grad_shape[:2])
        if not direct:
            dx_padded = ws.empty((step,) + grad_shape, dtype)
        # input rows / columns that feed no computed output get no gradient
        (top, _), (left, _) = pads
        keep_h = min(height, m * tiles_h + 2 - top)
        keep_w = min(width, m * tiles_w + 2 - left)
        covered = (keep_h, keep_w) == (height, width)
        dx = (ws.empty if covered else ws.zeros)(x_shape, dtype)
    for start, k in chunks:
        tiles = k * per_image
        if from_blocks:
            tiled = dout[:, start : start + k, ...]
        else:
            tiled = prefix(Y_buf, (m, m, k, tiles_h, tiles_w, filters))
            if windowed:
                move_windows(tiled, dout[:, start : start + k], pixels, to_blocks=False)
            else:
                gather(dout[start : start + k], tiled)
        E = prefix(E_buf, (a * a, tiles * filters))
        T.apply("A", tiled, E, stage, columns_first=True)
        E = E.reshape(a * a, tiles, filters)
        V = V_all[:, start : start + k].reshape(a * a, tiles, channels)
        # the chunks' products summed in chunk order: the same bits for a
        # part whatever the thread count
        if dW_t is None:
            dW_t = np.matmul(V.transpose(0, 2, 1), E, out=dW_t_buf)
        else:
            product = np.matmul(V.transpose(0, 2, 1), E, out=product_buf)
            np.add(dW_t, product, out=dW_t)
        if need_dx:
            dV = prefix(dV_buf, (a * a, tiles, channels))
            np.matmul(E, Ut, out=dV)
            dP = prefix(E_buf, (a, a, k, tiles_h, tiles_w, channels))
            T.apply("B", dV, dP, stage)
            if direct:  # the padded gradient is the top-left of dx's
                target = dx[start : start + k, : grad_shape[0], : grad_shape[1]]
                overlap_add(dP, target, dV_buf)
                continue
            overlap_add(dP, dx_padded[:k], dV_buf)
            dx[start : start + k, :keep_h, :keep_w] = dx_padded[
                :k, top : top + keep_h, left : left + keep_w
            ]
    if dW_t is None:  # no images
        dW_t = np.zeros((a * a, channels, filters), dtype=dtype)
    return (dx if need_dx else None), kernel_grad(dW_t, m)
