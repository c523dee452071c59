"""The network: architecture resolution, initialisation, forward and backward.

The architecture is resolved once per fit from the estimator's parameters
and the image shape into a list of frozen block descriptions; everything
else here is a pure function of (architecture, parameters, data).
"""

from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.utils import gen_batches

from ._layers import (
    ACTIVATION_GRADS,
    ACTIVATIONS,
    avgpool_backward,
    avgpool_forward,
    batchnorm_backward,
    batchnorm_forward,
    batchnorm_inference,
    conv2d_backward,
    conv2d_forward,
    maxpool_backward,
    maxpool_forward,
)
from ._losses import OUTPUTS, weight_total
from ._malloc import tune_malloc
from ._parallel import (
    blas_threads,
    map_parts,
    n_parts,
    reduce_parts,
    single_threaded_blas,
)

# Activation values (not bytes) one prediction chunk may hold at its widest
# layer: 2M values (8 MB in float32) keeps a chunk's working set near the
# CPU caches -- measured faster than larger chunks -- and bounds prediction
# memory whatever the number of samples.
_PREDICT_CHUNK_VALUES = 2**21


@dataclass(frozen=True)
class ConvBlock:
    """conv -> activation -> pool, with every size already resolved."""

    in_shape: tuple  # (H, W, C)
    kernel: tuple  # (kh, kw), clipped to the map for "valid" padding
    filters: int
    stride: int
    pads: tuple  # ((top, bottom), (left, right))
    conv_hw: tuple  # conv rows/cols actually computed (what the pool reads)
    pool: tuple  # (ph, pw); (1, 1) means no pooling
    pooling: str  # "max" | "avg"
    out_shape: tuple  # (H', W', F) after pooling


@dataclass(frozen=True)
class Architecture:
    conv_blocks: tuple
    dense_sizes: tuple  # (n_flat, hidden..., n_outputs)
    activation: str
    out_activation: str
    global_pooling: bool = False  # average each map instead of flattening
    batch_norm: bool = False  # normalize each conv's output before activation

    @property
    def coef_shapes(self):
        shapes = [b.kernel + (b.in_shape[2], b.filters) for b in self.conv_blocks]
        shapes += list(zip(self.dense_sizes[:-1], self.dense_sizes[1:]))
        return shapes

    def max_values_per_sample(self):
        """Largest number of activation values one sample occupies at once."""
        sizes = [int(np.prod(self.conv_blocks[0].in_shape))] if self.conv_blocks else []
        for b in self.conv_blocks:
            kh, kw = b.kernel
            # the im2col buffer is the largest array of a conv layer
            sizes.append(b.conv_hw[0] * b.conv_hw[1] * kh * kw * b.in_shape[2])
            sizes.append(b.conv_hw[0] * b.conv_hw[1] * b.filters)
        sizes.extend(self.dense_sizes)
        return max(sizes)


def _conv_geometry(size, kernel, stride, padding):
    """(kernel, pad_before, pad_after, out) along one axis, Keras conventions."""
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        # an odd total puts the extra row/column at the bottom/right
        return kernel, total // 2, total - total // 2, out
    kernel = min(kernel, size)  # a kernel larger than the map is clipped
    return kernel, 0, 0, (size - kernel) // stride + 1


def per_block(value, n_blocks, name):
    """An int for every conv block, or a sequence with one entry per block."""
    if isinstance(value, Integral):
        return (int(value),) * n_blocks
    values = tuple(value)
    if len(values) != n_blocks:
        raise ValueError(
            f"{name} has {len(values)} entries but there are {n_blocks} conv "
            f"blocks (conv_filters); give one per block or a single int."
        )
    if not all(isinstance(v, Integral) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must hold integers; got {value!r}.")
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers; got {value!r}.")
    return tuple(int(v) for v in values)


def build_architecture(
    image_shape,
    conv_filters,
    kernel_size,
    pool_size,
    padding,
    pooling,
    hidden_layer_sizes,
    n_outputs,
    activation,
    out_activation,
    strides=1,
    global_pooling=False,
    batch_norm=False,
):
    """Resolve every layer's size for images of ``image_shape`` = (H, W, C).

    ``kernel_size``, ``pool_size`` and ``strides`` are an int for all conv
    blocks or one entry per block.
    """
    n_blocks = len(conv_filters)
    kernels = per_block(kernel_size, n_blocks, "kernel_size")
    pools = per_block(pool_size, n_blocks, "pool_size")
    stride_list = per_block(strides, n_blocks, "strides")
    blocks = []
    shape = tuple(int(s) for s in image_shape)
    for filters, kernel, pool, stride in zip(conv_filters, kernels, pools, stride_list):
        height, width, _ = shape
        kh, top, bottom, conv_h = _conv_geometry(height, kernel, stride, padding)
        kw, left, right, conv_w = _conv_geometry(width, kernel, stride, padding)
        ph, pw = min(pool, conv_h), min(pool, conv_w)
        out_h, out_w = conv_h // ph, conv_w // pw
        blocks.append(
            ConvBlock(
                in_shape=shape,
                kernel=(kh, kw),
                filters=int(filters),
                stride=stride,
                pads=((top, bottom), (left, right)),
                # floor-mode pooling never reads the trailing rows/columns,
                # so they are not computed at all
                conv_hw=(out_h * ph, out_w * pw),
                pool=(ph, pw),
                pooling=pooling,
                out_shape=(out_h, out_w, int(filters)),
            )
        )
        shape = blocks[-1].out_shape
    global_pooling = bool(global_pooling and blocks)
    n_flat = shape[2] if global_pooling else int(np.prod(shape))
    dense = (n_flat,) + tuple(int(s) for s in hidden_layer_sizes)
    return Architecture(
        conv_blocks=tuple(blocks),
        dense_sizes=dense + (int(n_outputs),),
        activation=activation,
        out_activation=out_activation,
        global_pooling=global_pooling,
        batch_norm=bool(batch_norm and blocks),
    )


def initialize(arch, rng, dtype):
    """He-uniform weights for ReLU, Glorot-uniform otherwise; zero intercepts.

    He scaling keeps the activations' variance constant through ReLU layers,
    which lets the deep conv stack train from the first epoch; Glorot is
    MLPClassifier's choice for the saturating activations (factor 2 for
    logistic, as there).
    """
    coefs, intercepts = [], []
    for shape in arch.coef_shapes:
        receptive = int(np.prod(shape[:-2]))
        fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
        if arch.activation == "relu":
            bound = np.sqrt(6.0 / fan_in)
        else:
            factor = 2.0 if arch.activation == "logistic" else 6.0
            bound = np.sqrt(factor / (fan_in + fan_out))
        coefs.append(rng.uniform(-bound, bound, shape).astype(dtype))
        intercepts.append(np.zeros(shape[-1], dtype=dtype))
    return coefs, intercepts


def _pools_first(arch, block):
    """Whether the block max-pools before its bias and activation."""
    return block.pooling == "max" and not arch.batch_norm


def forward(
    arch,
    coefs,
    intercepts,
    x,
    train=True,
    dropout_masks=None,
    norms=None,
    until_block=None,
):
    """Logits for images ``x`` of shape (n, H, W, C).

    With ``train=False`` no cache is kept (inference skips all backward
    bookkeeping) and the returned caches are None. ``dropout_masks`` holds,
    per hidden dense layer, an (n, units) array of 0 and 1 / (1 - p) that
    multiplies the layer's output (inverted dropout). With batch
    normalization, ``norms`` holds per conv block its ``(scale, running_mean,
    running_var)``; training normalizes with the batch's statistics, which
    the caches keep, and inference with the running ones. With
    ``until_block=k`` it returns the feature maps of conv block ``k``
    (n, H', W', filters) instead of logits.
    """
    act = ACTIVATIONS[arch.activation]
    caches = []
    a = x
    n_conv = len(arch.conv_blocks)
    for k, (block, W, b) in enumerate(zip(arch.conv_blocks, coefs, intercepts)):
        z, conv_cache = conv2d_forward(a, W, block.stride, block.pads, block.conv_hw)
        if not train:
            conv_cache = None  # frees the im2col buffer before the next block
        ph, pw = block.pool
        norm_cache = None
        if _pools_first(arch, block):
            # max-pool commutes with a per-channel bias and any non-decreasing
            # activation, so pool first: the two passes after it are ph*pw
            # times smaller (a normalization's scale may be negative: not then)
            pooled, pool_cache = maxpool_forward(z, ph, pw, need_cache=train)
            # the pooled maxima stay cached for the backward pass in training
            z = a = act(np.add(pooled, b, out=None if train else pooled))
        else:
            if not arch.batch_norm:
                z += b
            elif train:
                z, norm_cache, stats = batchnorm_forward(z, norms[k][0], b)
                norm_cache += stats
            else:
                scale, mean, var = norms[k]
                z = batchnorm_inference(z, scale, b, mean, var)
            z = act(z)
            pool = maxpool_forward if block.pooling == "max" else avgpool_forward
            a, pool_cache = pool(z, ph, pw, need_cache=train)
        if k == until_block:
            return a, None
        if train:  # inference keeps nothing alive beyond the next layer
            caches.append((conv_cache, pool_cache, z, norm_cache))
    # global average pooling (one value per map) or flatten in (H, W, C) order
    a = a.mean(axis=(1, 2)) if arch.global_pooling else a.reshape(a.shape[0], -1)
    dense_coefs = coefs[n_conv:]
    a_raw = mask = None
    for k, (W, b) in enumerate(zip(dense_coefs, intercepts[n_conv:])):
        if train:
            caches.append((a, a_raw, mask))
        z = a @ W
        z += b
        if k == len(dense_coefs) - 1:
            return z, (caches if train else None)
        a = a_raw = act(z)
        if dropout_masks is not None:
            mask = dropout_masks[k]
            a = a_raw * mask


def backward(arch, coefs, caches, dlogits, need_dx=False, scale_grads=None):
    """Gradients of the loss w.r.t. every coef and intercept, given d/dlogits.

    With batch normalization the gradients of the scales are written into
    the list ``scale_grads`` (one per conv block).
    """
    act_grad = ACTIVATION_GRADS[arch.activation]
    n_conv = len(arch.conv_blocks)
    n_layers = len(coefs)
    coef_grads = [None] * n_layers
    intercept_grads = [None] * n_layers
    delta = dlogits
    for k in range(n_layers - 1, n_conv - 1, -1):
        a_in, a_raw, mask = caches[k]
        coef_grads[k] = a_in.T @ delta
        intercept_grads[k] = delta.sum(axis=0)
        if k == 0 and not need_dx:
            return coef_grads, intercept_grads, None
        delta = delta @ coefs[k].T
        if k > n_conv:  # a_in is a hidden layer's (possibly dropped) output
            if mask is not None:
                delta *= mask
            delta = act_grad(a_in if a_raw is None else a_raw, delta)
    if n_conv:
        last = arch.conv_blocks[-1]
        n = delta.shape[0]
        if arch.global_pooling:
            height, width, filters = last.out_shape
            share = delta * delta.dtype.type(1.0 / (height * width))
            delta = np.empty((n,) + last.out_shape, dtype=delta.dtype)
            delta[...] = share[:, None, None, :]  # writable: updated in place
        else:
            delta = delta.reshape((n,) + last.out_shape)
    for k in range(n_conv - 1, -1, -1):
        block = arch.conv_blocks[k]
        conv_cache, pool_cache, a_act, norm_cache = caches[k]
        ph, pw = block.pool
        if _pools_first(arch, block):
            delta = act_grad(a_act, delta)
            intercept_grads[k] = delta.sum(axis=(0, 1, 2))
            delta = maxpool_backward(delta, pool_cache, ph, pw)
        else:
            if block.pooling == "max":
                delta = maxpool_backward(delta, pool_cache, ph, pw)
            else:
                delta = avgpool_backward(delta, pool_cache, ph, pw)
            delta = act_grad(a_act, delta)
            if arch.batch_norm:
                delta, scale_grads[k], intercept_grads[k] = batchnorm_backward(
                    delta, norm_cache[:3]
                )
            else:
                intercept_grads[k] = delta.sum(axis=(0, 1, 2))
        delta, coef_grads[k] = conv2d_backward(
            delta,
            conv_cache,
            coefs[k],
            block.stride,
            block.pads,
            need_dx=need_dx or k > 0,
        )
    return coef_grads, intercept_grads, delta


def loss_and_gradients(
    arch,
    coefs,
    intercepts,
    x,
    Y,
    sample_weight,
    alpha,
    n_threads=1,
    dropout_masks=None,
    norms=None,
):
    """Regularised loss and its gradients, with MLPClassifier's L2 convention.

    loss = mean (sample-weighted) cross-entropy
           + 0.5 * alpha * sum(W ** 2) / n,
    n being the number of samples (or the sum of their weights); intercepts
    are not penalised. A large enough batch is split into parts (how many
    depends on the batch and the architecture only, see
    :func:`~skcnn._parallel.n_parts`) computed on up to ``n_threads``
    threads, each with a single-threaded BLAS, and their gradients summed in
    part order: the result is the same bits whatever ``n_threads``.

    Returns ``(loss, coef_grads, intercept_grads)``; with batch normalization
    (``norms`` given, see :func:`forward`) also the scales' gradients and
    each block's batch ``(mean, var)``. Batch statistics need the whole
    batch, so such a batch is not split.
    """
    n = x.shape[0]
    total = weight_total(sample_weight, n)
    loss_fn = OUTPUTS[arch.out_activation][1]

    def part(rows):
        masks = None if dropout_masks is None else [m[rows] for m in dropout_masks]
        logits, caches = forward(arch, coefs, intercepts, x[rows], True, masks, norms)
        sw = None if sample_weight is None else sample_weight[rows]
        loss, dlogits = loss_fn(logits, Y[rows], sw, total)
        scale_grads = [None] * len(arch.conv_blocks) if arch.batch_norm else None
        coef_grads, intercept_grads, _ = backward(
            arch, coefs, caches, dlogits, scale_grads=scale_grads
        )
        if arch.batch_norm:
            stats = [c[3][3:] for c in caches[: len(arch.conv_blocks)]]
            return loss, coef_grads, intercept_grads, scale_grads, stats
        return loss, coef_grads, intercept_grads

    def add(result, other):
        # in place into the earlier part's gradients: nothing else holds them
        loss, coef_grads, intercept_grads = result
        for g, h in zip(coef_grads + intercept_grads, other[1] + other[2]):
            g += h
        return loss + other[0], coef_grads, intercept_grads

    parts = 1 if arch.batch_norm else n_parts(n, arch.max_values_per_sample())
    result = reduce_parts(part, add, n, parts, n_threads)
    loss, coef_grads, intercept_grads = result[:3]
    if alpha:
        scale = alpha / total
        loss += 0.5 * scale * sum(float(np.vdot(W, W)) for W in coefs)
        for g, W in zip(coef_grads, coefs):
            g += W.dtype.type(scale) * W
    return (loss, coef_grads, intercept_grads) + tuple(result[3:])


def output_probabilities(arch, coefs, intercepts, X, image_shape, norms=None):
    """Output-layer probabilities for the rows of X, shape (n, n_outputs).

    Computed in chunks so memory stays bounded whatever n, each chunk split
    into parts computed on as many threads as BLAS may use, each with a
    single-threaded BLAS. Neither the chunks nor the parts depend on the
    thread count, so neither do the probabilities, to the last bit.
    """
    n = X.shape[0]
    values = arch.max_values_per_sample()
    chunk = max(1, _PREDICT_CHUNK_VALUES // values)
    out = np.empty((n, arch.dense_sizes[-1]), dtype=X.dtype)
    prob = OUTPUTS[arch.out_activation][0]
    n_threads = 1
    if n_parts(min(n, chunk), values) > 1:  # worth threads (and tuned malloc)
        tune_malloc()
        n_threads = blas_threads()  # read before pinning BLAS to one thread
    with single_threaded_blas():  # one limit for all chunks, not one each
        for batch in gen_batches(n, chunk):
            xb, out_b = X[batch], out[batch]

            def part(rows, xb=xb, out_b=out_b):
                images = xb[rows].reshape((-1,) + tuple(image_shape))
                logits, _ = forward(
                    arch, coefs, intercepts, images, train=False, norms=norms
                )
                out_b[rows] = prob(logits)

            map_parts(part, len(xb), n_parts(len(xb), values), n_threads)
    return out
