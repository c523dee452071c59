"""Winograd F(2x2, 3x3) convolution and its gradients (Lavin & Gray, 2015).

A 3x3 cross-correlation at stride 1 computed on 2x2 output tiles: each
tile's 4x4 input patch ``d`` and the kernel ``g`` are transformed
(``V = B^T d B``, ``U = G g G^T``), multiplied elementwise, and transformed
back (``Y = A^T (U * V) A``). Summed over input channels, the elementwise
products are 16 independent GEMMs of ``(tiles, C) @ (C, F)``: 16 multiplies
per tile and channel pair instead of im2col's 36, and an input buffer 4x
the input instead of 9x.

The 2-D transforms are small matrices too -- ``vec(B^T d B) = (B^T kron
B^T) vec(d)`` -- applied to all tiles by one GEMM each: a 16x16 matrix
times the (16, tiles * C) gathered patches, a 4x16 one on the products.
Mostly zeros and ones, but BLAS applies them at memory speed in a single
call; as adds of strided views they took ~40 NumPy calls, whose overhead
dominated the small parts (2 to 7 images) the engine hands each thread.

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

from . import _workspace as ws
from ._strides import strided_view, window_view

# What the backward pass needs: the transformed input of every image,
# (16, n, tiles, C), and the geometry.
WinogradCache = namedtuple("WinogradCache", "V x_shape pads out_hw windowed")

# Measured on 1 thread, float32, parts of 2 to 32 images (the engine's
# parts hold 2 to 18): Winograd beats im2col + GEMM once the 3x3
# convolution has 32 input channels and 32 filters or more, x1.15 to x1.7
# forward and x1.3 to x1.7 forward + backward (13x13x32 -> 64,
# 14x14x64 -> 128, 16x16x32 -> 64, 8x8x64 -> 128). With fewer the
# transforms, whose cost grows with C + F, outweigh the GEMMs' saving,
# which grows with C F: 32x32x16 -> 32 is x0.94 on a part of 4 images
# (x1.2 on 16 or more), 32x32x3 -> 32 x0.8, and a first layer on one
# channel x0.1 (a GEMM with C = 1 is no GEMM).
MIN_CHANNELS = 32


def winograd_wins(kernel_shape, stride):
    """Whether a convolution with weights of ``kernel_shape`` (kh, kw, C,
    F) at ``stride`` runs faster by Winograd's algorithm."""
    kh, kw, channels, filters = kernel_shape
    small = min(channels, filters) < MIN_CHANNELS
    return (kh, kw) == (3, 3) and stride == 1 and not small


# Images per chunk: each of the 16 GEMMs of a chunk reads and writes at
# most this many bytes per operand, so that a chunk's buffers (up to 1 MB
# each) stay near the CPU caches, as the engine's parts do. Measured with a
# single-threaded OpenBLAS: (tiles, 64) @ (64, 128) slows from ~117 to ~67
# GFLOP/s as its output grows from 256 kB to 2 MB; whole layers ran at most
# ~5% slower than with 2**17 or 2**18, ~15% faster than with 2**14 (more
# chunks, more NumPy calls), and larger chunks raise the memory peak.
_CHUNK_BYTES = 2**16


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
    padded = (2 * tiles_h + 2) * (2 * tiles_w + 2) * channels
    return dict(
        padded=padded,  # the input (or its gradient), padded to whole tiles
        patches=16 * tiles * channels,  # the 4x4 patches (or their gradient)
        V=16 * tiles * channels,
        M=16 * tiles * filters,  # the products (or E)
        Y=4 * tiles * filters,  # the output tiles (or the gradient's)
        dV=16 * tiles * channels,
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
    # the patches, then the products, in one buffer
    forward = size["padded"] + max(size["patches"], size["M"]) + size["Y"]
    backward = size["Y"] + size["M"]  # the gradient's tiles, E
    # E U^T, then the patches' gradient where E was, the padded input's
    dx = size["dV"] + max(size["patches"] - size["M"], 0) + size["padded"]
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
    of ``C F``: ``U`` (16); in the backward pass also the transformed
    weight gradient (16) and one chunk's product (16) (the weight gradient
    itself is counted with the gradients)."""
    return (48 if train else 16) * channels * filters


# --------------------------------------------------------------------------
# The transforms
# --------------------------------------------------------------------------

_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
# Row-major vec(X Y Z^T) = (X kron Z) vec(Y): the 2-D transforms of
# flattened tiles. Entries 0, +-1, +-1/2, +-1/4: exact in any float dtype.
_INPUT = np.kron(_BT, _BT).astype(float)  # (16, 16): d -> V
_KERNEL = np.kron(_G, _G)  # (16, 9): g -> U
_OUTPUT = np.kron(_AT, _AT).astype(float)  # (4, 16): M -> Y


def _kernel_transform(W):
    """``G g G^T`` for every (channel, filter) pair: (3, 3, C, F) -> (16, C, F).

    Cheap (16 C F values), so computed on every call: nothing to cache on
    objects that several threads share.
    """
    kernel = _KERNEL.astype(W.dtype)
    return (kernel @ W.reshape(9, -1)).reshape((16,) + W.shape[2:])


def _kernel_grad(T):
    """``G^T t G`` for every (channel, filter) pair: (16, C, F) -> (3, 3, C, F)."""
    kernel = _KERNEL.astype(T.dtype)
    return (kernel.T @ T.reshape(16, -1)).reshape((3, 3) + T.shape[1:])


def _unpadded(x_shape, pads, tiles_h, tiles_w):
    """Whether the tiles' patches lie within the input itself, unpadded:
    no zero border before it, and its rows and columns reach as far as the
    tiles read. Then the patches are read from the input (forward), and
    their gradient summed into the input's (backward), with no padded copy
    between (a valid convolution's)."""
    (top, _), (left, _) = pads
    height, width = x_shape[1:3]
    return top == left == 0 and height >= 2 * tiles_h + 2 and width >= 2 * tiles_w + 2


def _pad(x, pads, out):
    """Copy ``x`` into ``out`` at offset ``pads``; ``out`` is zero where
    no input lands. Rows and columns past ``out`` are dropped (they feed
    no computed output); those past the padded input stay zero (they feed
    only outputs that overhang ``out_h`` / ``out_w`` and are cropped)."""
    (top, _), (left, _) = pads
    keep_h = min(x.shape[1], out.shape[1] - top)
    keep_w = min(x.shape[2], out.shape[2] - left)
    out[:, top : top + keep_h, left : left + keep_w] = x[:, :keep_h, :keep_w]


def _patches(padded, tiles_h, tiles_w):
    """Strided view (4, 4, n, tiles_h, tiles_w, C) of the 4x4 patches at
    stride 2: ``[i, j, :, t, s]`` is pixel ``(2 t + i, 2 s + j)``."""
    sn, sh, sw, sc = padded.strides
    shape = (4, 4, padded.shape[0], tiles_h, tiles_w, padded.shape[3])
    strides = (sh, sw, sn, 2 * sh, 2 * sw, sc)
    return strided_view(padded, shape, strides)


def _scatter(Y, out):
    """The (2, 2, n, tiles_h, tiles_w, F) output tiles into ``out``,
    cropping the tiles that overhang an odd ``out_h`` / ``out_w``."""
    out_h, out_w = out.shape[1:3]
    if out_h % 2 == 0 and out_w % 2 == 0:
        np.copyto(window_view(out, 2, 2, *Y.shape[3:5], True), Y)
        return
    for a in range(2):
        for b in range(2):
            r, c = (out_h - a + 1) // 2, (out_w - b + 1) // 2
            out[:, a::2, b::2] = Y[a, b][:, :r, :c]


def _gather(dout, tiles_h, tiles_w, out):
    """The (2, 2, n, tiles_h, tiles_w, F) tiles of ``dout`` into ``out``;
    ``out`` is zero where tiles overhang ``dout``."""
    out_h, out_w = dout.shape[1:3]
    if out_h % 2 == 0 and out_w % 2 == 0:
        np.copyto(out, window_view(dout, 2, 2, tiles_h, tiles_w))
        return
    for a in range(2):
        for b in range(2):
            r, c = (out_h - a + 1) // 2, (out_w - b + 1) // 2
            out[a, b][:, :r, :c] = dout[:, a::2, b::2]


def _overlap_add(dP, out, rows):
    """Set ``out``, the padded input's gradient (n, 2 tiles_h + 2,
    2 tiles_w + 2, C), to the sum of every tile's 4x4 patch gradient.

    ``dP`` is (4, 4, n, tiles_h, tiles_w, C); neighbouring patches overlap
    by two rows or columns. Patch row ``i = 2 a + p`` of tile row ``t``
    lands on pixel row ``2 (t + a) + p``: for each parity ``p`` the sum
    over ``a`` is two shifted arrays. So the rows are summed first, into
    ``rows`` (at least (2, 4, n, tiles_h + 1, tiles_w, C) values), then
    the columns the same way into ``out``'s parity view: six NumPy calls
    where adding the 16 patch pixels one by one took 22 -- each a wait for
    the threads computing a minibatch's other parts.
    """
    tiles_h, tiles_w = dP.shape[3:5]
    n, channels = dP.shape[2], dP.shape[5]
    R = _prefix(rows, (2, 4, n, tiles_h + 1, tiles_w, channels))
    np.copyto(R[:, :, :, :tiles_h], dP[:2])
    R[:, :, :, tiles_h] = 0
    np.add(R[:, :, :, 1:], dP[2:], out=R[:, :, :, 1:])
    pixels = window_view(out, 2, 2, tiles_h + 1, tiles_w + 1, True)
    np.copyto(pixels[:, :, :, :, :tiles_w], R[:, :2])
    pixels[:, :, :, :, tiles_w] = 0
    np.add(pixels[:, :, :, :, 1:], R[:, 2:], out=pixels[:, :, :, :, 1:])


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------


def _chunks(n, per_image, channels, filters, itemsize):
    """``(step, [(start, count)...])``: the chunks of ``n`` images, as few
    as hold at most ``step`` images each, near-equal in size (32 images by
    10 made a last chunk of 2, whose GEMMs and NumPy calls cost nearly
    what a whole chunk's do)."""
    step = max(1, min(n, images_per_chunk(per_image, channels, filters, itemsize)))
    count = -(-n // step)
    bounds = [n * k // count for k in range(count + 1)]
    return step, [(a, b - a) for a, b in zip(bounds, bounds[1:])]


def _prefix(buffer, shape):
    """The first ``prod(shape)`` values of a flat ``buffer``, as ``shape``:
    a chunk shorter than the others uses a contiguous prefix."""
    return buffer[: prod(shape)].reshape(shape)


def winograd_forward(
    x, W, pads=((0, 0), (0, 0)), out_hw=None, need_cache=False, windowed=False
):
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
    windowed : bool, default=False
        Return the output in 2x2 windows (``out_hw`` must be even): the
        output tiles are the windows of a 2x2 pooling, so their transform
        writes them there as they are -- no scatter into the map, and the
        pooling reads four contiguous blocks (see
        :func:`~skcnn._layers.conv2d_forward`'s ``windows``).

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
    tiles_h, tiles_w = _tiles(out_hw)
    per_image, dtype = tiles_h * tiles_w, x.dtype
    transform, inverse = _INPUT.astype(dtype), _OUTPUT.astype(dtype)
    U = _kernel_transform(W.astype(dtype, copy=False))
    if windowed:
        assert out_hw[0] % 2 == 0 and out_hw[1] % 2 == 0, out_hw
        out = ws.empty((4, n, tiles_h, tiles_w, filters), dtype)
    else:
        out = ws.empty((n,) + tuple(out_hw) + (filters,), dtype)
    step, chunks = _chunks(n, per_image, channels, filters, dtype.itemsize)
    size = _sizes(out_hw, channels, filters)
    direct = _unpadded(x.shape, pads, tiles_h, tiles_w)
    if not direct:
        padded = ws.zeros((step, 2 * tiles_h + 2, 2 * tiles_w + 2, channels), dtype)
    # the patches, then the products, in one buffer
    work = ws.empty(step * max(size["patches"], size["M"]), dtype)
    if not windowed:
        Y_buf = ws.empty(step * size["Y"], dtype)
    if need_cache:  # V of every image, kept for the backward pass
        V_all = ws.empty((16, n, per_image, channels), dtype)
    else:
        V_buf = ws.empty(step * size["V"], dtype)
    for start, k in chunks:
        tiles = k * per_image
        if need_cache:
            V = V_all[:, start : start + k].reshape(16, tiles * channels)
        else:
            V = _prefix(V_buf, (16, tiles * channels))
        if direct:
            source = x[start : start + k]
        else:
            source = padded[:k]
            _pad(x[start : start + k], pads, source)
        patches = _prefix(work, (4, 4, k, tiles_h, tiles_w, channels))
        np.copyto(patches, _patches(source, tiles_h, tiles_w))
        np.matmul(transform, patches.reshape(16, -1), out=V)
        M = _prefix(work, (16, tiles, filters))
        np.matmul(V.reshape(16, tiles, channels), U, out=M)
        if windowed:  # the chunk's rows of the four blocks, a 2-D BLAS operand
            np.matmul(
                inverse,
                M.reshape(16, -1),
                out=out[:, start : start + k, ...].reshape(4, -1),
            )
            continue
        Y = _prefix(Y_buf, (4, tiles * filters))
        np.matmul(inverse, M.reshape(16, -1), out=Y)
        _scatter(Y.reshape(2, 2, k, tiles_h, tiles_w, filters), out[start : start + k])
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
    tiles_h, tiles_w = _tiles(out_hw)
    per_image, dtype = tiles_h * tiles_w, dout.dtype
    step, chunks = _chunks(n, per_image, channels, filters, dtype.itemsize)
    size = _sizes(out_hw, channels, filters)
    # the gradient's tiles, zero where they overhang an odd output
    odd = out_hw[0] % 2 or out_hw[1] % 2
    if not windowed:
        Y_buf = (ws.zeros if odd else ws.empty)(step * size["Y"], dtype)
    # E, then the patches' gradient
    dx_size = size["patches"] if need_dx else 0
    E_buf = ws.empty(step * max(size["M"], dx_size), dtype)
    dW_t = None
    if need_dx:
        transform, inverse = _INPUT.astype(dtype), _OUTPUT.astype(dtype)
        # contiguous: (tiles, F) @ (F, C) with a transposed view ran 1.45x
        # slower in OpenBLAS (its "NT" small-matrix kernel)
        U = _kernel_transform(W.astype(dtype, copy=False))
        Ut = np.ascontiguousarray(U.transpose(0, 2, 1))
        dV_buf = ws.empty(step * size["dV"], dtype)
        padded_shape = (2 * tiles_h + 2, 2 * tiles_w + 2, channels)
        direct = _unpadded(x_shape, pads, tiles_h, tiles_w)
        if not direct:
            dx_padded = ws.empty((step,) + padded_shape, dtype)
        # input rows / columns that feed no computed output get no gradient
        (top, _), (left, _) = pads
        keep_h = min(height, padded_shape[0] - top)
        keep_w = min(width, padded_shape[1] - left)
        covered = (keep_h, keep_w) == (height, width)
        dx = (ws.empty if covered else ws.zeros)(x_shape, dtype)
    else:
        inverse = _OUTPUT.astype(dtype)
    for start, k in chunks:
        tiles = k * per_image
        if windowed:  # already the tiles: a 2-D BLAS operand as it is
            tiled = dout[:, start : start + k, ...]
        else:
            tiled = _prefix(Y_buf, (2, 2, k, tiles_h, tiles_w, filters))
            _gather(dout[start : start + k], tiles_h, tiles_w, tiled)
        E = _prefix(E_buf, (16, tiles * filters))
        np.matmul(inverse.T, tiled.reshape(4, -1), out=E)
        E = E.reshape(16, tiles, filters)
        V = V_all[:, start : start + k].reshape(16, tiles, channels)
        # the chunks' products summed in chunk order: the same bits for a
        # part whatever the thread count
        product = np.matmul(V.transpose(0, 2, 1), E)
        dW_t = product if dW_t is None else np.add(dW_t, product, out=dW_t)
        if need_dx:
            dV = _prefix(dV_buf, (16, tiles, channels))
            np.matmul(E, Ut, out=dV)
            dP = _prefix(E_buf, (16, tiles * channels))
            np.matmul(transform.T, dV.reshape(16, -1), out=dP)
            dP = dP.reshape(4, 4, k, tiles_h, tiles_w, channels)
            if direct:  # the padded gradient is the top-left of dx's
                target = dx[start : start + k, : padded_shape[0], : padded_shape[1]]
                _overlap_add(dP, target, dV_buf)
                continue
            _overlap_add(dP, dx_padded[:k], dV_buf)
            dx[start : start + k, :keep_h, :keep_w] = dx_padded[
                :k, top : top + keep_h, left : left + keep_w
            ]
    if dW_t is None:  # no images
        dW_t = np.zeros((16, channels, filters), dtype=dtype)
    return (dx if need_dx else None), _kernel_grad(dW_t)
