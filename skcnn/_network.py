"""The network: a list of layer specs (``_blocks``), built once per fit.

``build_network`` resolves the estimator's architecture parameters and the
image shape into the list; ``initialize`` draws the weights; the forward
and backward passes are plain loops over the list. Parameters live in a
:class:`Weights` record owned by the caller (the estimator's ``coefs_``,
``intercepts_`` and batch-norm arrays), gradients in a :class:`Grads`.
"""

from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np

from ._blocks import ConvBlock, Dense, Dropout, Flatten, GlobalAvgPool, Standardize
from ._params import layer_sizes, per_block, resolve_padding


@dataclass
class Weights:
    """The arrays a network computes with: the estimator's live attributes.

    ``coefs`` and ``intercepts`` hold one array per conv block and dense
    layer (``coefs_`` / ``intercepts_``); with batch normalization,
    ``scales``, ``means`` and ``vars`` one per conv block, else None.
    ``inference`` is set only on a predict call's own copy
    (:func:`for_inference`).
    """

    coefs: list
    intercepts: list
    scales: list = None
    means: list = None
    vars: list = None
    input_offset: np.ndarray = None  # the input scaling, per channel
    input_scale: np.ndarray = None
    # per conv block, what it predicts with (see for_inference)
    inference: dict = None

    def trainable(self):
        """What the optimizer updates, in its fixed order."""
        return self.coefs + self.intercepts + (self.scales or [])

    def state(self):
        """Every array prediction depends on (early stopping's snapshot)."""
        return self.trainable() + (self.means or []) + (self.vars or [])


@dataclass
class Grads:
    """Gradients laid out as :class:`Weights`' trainable arrays."""

    coefs: list
    intercepts: list
    scales: list = None

    def flat(self):
        return self.coefs + self.intercepts + (self.scales or [])


# --------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Design:
    """The estimator's architecture parameters, validated once."""

    conv_filters: tuple = (32, 64)
    kernel_size: object = 3
    pool_size: object = 2
    strides: object = 1
    padding: str = "valid"  # "auto" resolves per image shape
    pooling: str = "max"
    global_pooling: bool = False
    batch_norm: bool = False
    hidden_layer_sizes: tuple = (64,)
    activation: str = "relu"
    dropout: float = 0.0
    input_scaling: str = None

    @classmethod
    def of(cls, est):
        """The design of an estimator's current parameters."""
        return cls(**{f.name: getattr(est, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Network:
    """The layers of one fitted model, and what is derived from them.

    Frozen, as are its layers, so what is derived from them is computed
    once per network (``cached_property``) and can never go stale: a new
    fit builds a new network.
    """

    layers: tuple
    activation: str  # of the conv blocks and hidden layers
    out_activation: str

    @cached_property
    def conv_blocks(self):
        return tuple(x for x in self.layers if isinstance(x, ConvBlock))

    @cached_property
    def dense_layers(self):
        return tuple(x for x in self.layers if isinstance(x, Dense))

    @cached_property
    def dense_sizes(self):
        """(n_flat, hidden..., n_outputs)."""
        dense = self.dense_layers
        return (dense[0].n_in,) + tuple(d.n_out for d in dense)

    @property
    def batch_norm(self):
        return any(b.batch_norm for b in self.conv_blocks)

    @property
    def global_pooling(self):
        return any(isinstance(x, GlobalAvgPool) for x in self.layers)

    @property
    def coef_shapes(self):
        return [x.coef_shape for x in self.layers if hasattr(x, "coef_shape")]

    @property
    def n_outputs(self):
        return self.layers[-1].n_out

    def conv_block_end(self, k):
        """How many layers run up to and including conv block ``k``."""
        blocks = [i for i, x in enumerate(self.layers) if isinstance(x, ConvBlock)]
        return blocks[k] + 1

    def output_size(self, stop=None):
        """Values per sample after the first ``stop`` layers (all: None)."""
        return self.layers[:stop][-1].out_size

    def max_values_per_sample(self):
        """Largest number of activation values one sample occupies at once."""
        return self._max_values_per_sample

    @cached_property
    def _max_values_per_sample(self):
        # every prediction reads it (chunk size, parts, memory check)
        first = self.layers[0]
        shape = first.in_shape if hasattr(first, "in_shape") else (first.n_in,)
        return max([int(np.prod(shape))] + [x.values_per_sample() for x in self.layers])

    def embedding_end(self):
        """How many layers produce ``transform``'s features: up to the last
        hidden dense layer's activation (its dropout excluded), or the
        flattened / pooled conv features without hidden layers."""
        dense = [i for i, x in enumerate(self.layers) if isinstance(x, Dense)]
        return dense[-2] + 1 if len(dense) > 1 else dense[-1]


def _conv_geometry(size, kernel, stride, padding):
    """(kernel, pad_before, pad_after, out) along one axis, Keras conventions."""
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        # an odd total puts the extra row/column at the bottom/right
        return kernel, total // 2, total - total // 2, out
    kernel = min(kernel, size)  # a kernel larger than the map is clipped
    return kernel, 0, 0, (size - kernel) // stride + 1


def _conv_block(index, shape, sizes, padding, design):
    """Conv block ``index`` on maps of ``shape``; ``sizes`` is its
    (filters, kernel, pool, stride)."""
    filters, kernel, pool, stride = sizes
    height, width, _ = shape
    kh, top, bottom, conv_h = _conv_geometry(height, kernel, stride, padding)
    kw, left, right, conv_w = _conv_geometry(width, kernel, stride, padding)
    ph, pw = min(pool, conv_h), min(pool, conv_w)
    out_h, out_w = conv_h // ph, conv_w // pw
    return ConvBlock(
        index=index,
        in_shape=shape,
        kernel=(kh, kw),
        filters=filters,
        stride=stride,
        pads=((top, bottom), (left, right)),
        # floor-mode pooling never reads the trailing rows/columns, so they
        # are not computed at all
        conv_hw=(out_h * ph, out_w * pw),
        pool=(ph, pw),
        pooling=design.pooling,
        activation=design.activation,
        batch_norm=bool(design.batch_norm),
        out_shape=(out_h, out_w, filters),
    )


def build_network(image_shape, design, n_outputs, out_activation):
    """Resolve every layer for images of ``image_shape`` = (H, W, C)."""
    filters = layer_sizes(design.conv_filters, "conv_filters")
    n_blocks = len(filters)
    per = zip(
        filters,
        per_block(design.kernel_size, n_blocks, "kernel_size"),
        per_block(design.pool_size, n_blocks, "pool_size"),
        per_block(design.strides, n_blocks, "strides"),
    )
    shape = tuple(int(s) for s in image_shape)
    padding = resolve_padding(design.padding, shape)
    layers = [Standardize(shape)] if design.input_scaling is not None else []
    for index, (f, kernel, pool, stride) in enumerate(per):
        block = _conv_block(index, shape, (f, kernel, pool, stride), padding, design)
        layers.append(block)
        shape = layers[-1].out_shape
    if not n_blocks:
        layers.append(Flatten(shape))
        n_flat = int(np.prod(shape))
    elif design.global_pooling:
        layers.append(GlobalAvgPool(shape))
        n_flat = shape[2]
    else:
        layers.append(Flatten(shape))
        n_flat = int(np.prod(shape))
    sizes = (n_flat,) + layer_sizes(design.hidden_layer_sizes, "hidden_layer_sizes")
    index = n_blocks
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers.append(Dense(index, n_in, n_out, design.activation))
        if design.dropout:
            layers.append(Dropout(n_out, float(design.dropout)))
        index += 1
    layers.append(Dense(index, sizes[-1], int(n_outputs)))
    return Network(tuple(layers), design.activation, out_activation)


def initialize(net, rng, dtype):
    """He-uniform weights for ReLU, Glorot-uniform otherwise; zero intercepts.

    He scaling keeps the activations' variance constant through ReLU layers,
    which lets the deep conv stack train from the first epoch; Glorot is
    MLPClassifier's choice for the saturating activations (factor 2 for
    logistic, as there). Batch normalization starts as the identity.
    """
    coefs, intercepts = [], []
    activation = net.activation
    for shape in net.coef_shapes:
        receptive = int(np.prod(shape[:-2]))
        fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
        if activation == "relu":
            bound = np.sqrt(6.0 / fan_in)
        else:
            factor = 2.0 if activation == "logistic" else 6.0
            bound = np.sqrt(factor / (fan_in + fan_out))
        coefs.append(rng.uniform(-bound, bound, shape).astype(dtype))
        intercepts.append(np.zeros(shape[-1], dtype=dtype))
    weights = Weights(coefs, intercepts)
    if net.batch_norm:
        filters = [b.filters for b in net.conv_blocks]
        weights.scales = [np.ones(f, dtype=dtype) for f in filters]
        weights.means = [np.zeros(f, dtype=dtype) for f in filters]
        weights.vars = [np.ones(f, dtype=dtype) for f in filters]
    return weights


def for_inference(net, weights):
    """``weights`` with each conv block's inference kernel prepared
    (:meth:`~skcnn._blocks.ConvBlock.inference_kernel`): computed once for a
    predict call, shared by its parts (read-only) instead of recomputed by
    each. Never kept beyond the call: the estimator's arrays may change."""
    inference = {b.index: b.inference_kernel(weights) for b in net.conv_blocks}
    return replace(weights, inference=inference)


def forward(net, weights, x, train=False, masks=None, stop=None):
    """Run the first ``stop`` layers (all by default) on ``x``.

    Returns ``(out, caches)``; the caches (one per layer) only with
    ``train=True`` -- inference keeps nothing alive beyond the next layer.
    ``masks`` maps a Dropout layer's position to its mask.
    """
    caches = [] if train else None
    for i, layer in enumerate(net.layers[:stop]):
        mask = None if masks is None else masks.get(i)
        x, cache = layer.forward(weights, x, train, mask)
        if train:
            caches.append(cache)
    return x, caches


def backward(net, weights, caches, dlogits):
    """Gradients of the loss w.r.t. every trainable array, given d/dlogits."""
    grads = {}
    delta = dlogits
    # nothing before the first weighted layer needs a gradient
    first = next(i for i, x in enumerate(net.layers) if hasattr(x, "index"))
    for i in range(len(net.layers) - 1, first - 1, -1):
        layer = net.layers[i]
        delta, g = layer.backward(weights, delta, caches[i], need_dx=i > first)
        if g is not None:
            grads[i] = g
    return collect_grads(net.layers, weights, grads)


def collect_grads(layers, weights, by_position):
    """A :class:`Grads` from ``{layer position: (dW, dbias, dscale)}``."""
    n_weighted = len(weights.coefs)
    grads = Grads([None] * n_weighted, [None] * n_weighted)
    if weights.scales is not None:
        grads.scales = [None] * len(weights.scales)
    for position, (dW, dbias, dscale) in by_position.items():
        k = layers[position].index
        grads.coefs[k], grads.intercepts[k] = dW, dbias
        if dscale is not None:
            grads.scales[k] = dscale
    return grads
