"""Layer specs: frozen descriptions of one layer, forward and backward paired.

Each spec knows its input and output shape and pairs, side by side,

- ``forward(weights, x, train, mask) -> (out, cache)``
- ``backward(weights, dout, cache, need_dx) -> (dx, grads)``

where ``weights`` is the caller's ``Weights`` (the estimator's fitted
arrays, never copied), ``grads`` is ``(dW, dbias, dscale)`` for a layer
with parameters (its ``index`` says which) and None otherwise -- a dense
layer's ``dW`` comes as its factors (an ``OuterSum``), which the engine
multiplies once a split minibatch's parts are collected. Nothing is
stored on a spec, so one network serves several threads at once. The
arithmetic is the primitives' of ``_layers``.
"""

from dataclasses import dataclass

import numpy as np

from . import _workspace as ws
from ._batchnorm import (
    batch_moments,
    batchnorm_folded,
    batchnorm_input_grad,
    batchnorm_normalize,
    batchnorm_param_grads,
)
from ._layers import (
    ACTIVATION_GRADS,
    ACTIVATIONS,
    OuterSum,
    channel_sums,
    conv2d_backward,
    conv2d_forward,
    gil_free_dot,
    per_channel,
)
from ._pooling import (
    avgpool_backward,
    avgpool_forward,
    maxpool_backward,
    maxpool_forward,
)
from ._winograd import prepared_kernel, values_per_image, winograd_wins


@dataclass(frozen=True)
class Standardize:
    """``(x - input_offset) / input_scale`` per channel: the input scaling.

    The statistics are fitted, not trained: they sit in ``Weights`` beside
    the parameters and have no gradient. The output is a new array -- at
    prediction ``x`` may be a view of the caller's data.
    """

    in_shape: tuple

    @property
    def out_size(self):
        return int(np.prod(self.in_shape))

    def values_per_sample(self):
        return self.out_size

    def forward(self, weights, x, train, mask=None):
        offset = weights.input_offset.astype(x.dtype)
        rows, offset, factor = per_channel(
            x, offset, (1 / weights.input_scale).astype(x.dtype)
        )
        out = np.subtract(rows, offset)
        out *= factor
        return out.reshape(x.shape), None

    def backward(self, weights, dout, cache, need_dx=True):
        return dout / weights.input_scale.astype(dout.dtype), None


@dataclass(frozen=True)
class ConvBlock:
    """conv -> [batch norm] -> activation -> pool, every size resolved.

    One fused layer, because the fusion is where the speed is: a max-pool
    commutes with a per-channel bias and any non-decreasing activation, so
    without batch norm it pools first and the bias and activation run on a
    ph*pw times smaller map -- and so at inference with batch norm, which is
    then folded into the convolution's weights and bias; and only the conv
    rows/columns a floor-mode pool reads are computed (``conv_hw``).
    """

    index: int  # position in coefs_ / intercepts_ (and the norm lists)
    in_shape: tuple  # (H, W, C)
    kernel: tuple  # (kh, kw), clipped to the map for "valid" padding
    filters: int
    stride: int
    pads: tuple  # ((top, bottom), (left, right))
    conv_hw: tuple  # conv rows/cols actually computed (what the pool reads)
    pool: tuple  # (ph, pw); (1, 1) means no pooling
    pooling: str  # "max" | "avg"
    activation: str
    batch_norm: bool
    out_shape: tuple  # (H', W', F) after pooling

    @property
    def coef_shape(self):
        return self.kernel + (self.in_shape[2], self.filters)

    @property
    def out_size(self):
        return int(np.prod(self.out_shape))

    @property
    def pools_first(self):
        """Whether a training step max-pools before bias and activation: not
        with batch norm, whose scale may be negative (max does not commute
        then). At inference batch norm is folded into the weights, and a
        max-pool always comes first."""
        return self.pooling == "max" and not self.batch_norm

    @property
    def winograd(self):
        """Whether the convolution runs by Winograd's algorithm (no im2col)."""
        return winograd_wins(self.coef_shape, self.stride, self.conv_hw)

    def windows(self, train=True):
        """The pooling windows the convolution's output comes in (see
        :func:`~skcnn._layers.conv2d_forward`), or None for pixel order.

        Where they cost the convolution little: Winograd's 2x2 output tiles
        are the windows (larger tiles reach them in one or two copies of
        the output), and im2col rows can come in any order -- except
        where a training step needs the layer's input gradient (not in a
        first layer), which would have to put them back. The pooling then
        reads contiguous blocks: measured 2.4 times faster forward and 1.6
        times backward on 26x26x32 maps.
        """
        if self.pool == (1, 1):
            return None
        if self.winograd:
            return (2, 2) if self.pool == (2, 2) else None
        return self.pool if self.index == 0 or not train else None

    def values_per_sample(self):
        """The largest activation array one sample needs here: the im2col
        rows, or the transformed input Winograd keeps instead (the size of
        a minibatch's parts follows it)."""
        rows = self.conv_hw[0] * self.conv_hw[1]
        if self.winograd:
            kept = values_per_image(self.in_shape, self.filters, self.conv_hw).kept
            return max(kept, rows * self.filters)
        kh, kw = self.kernel
        return max(rows * kh * kw * self.in_shape[2], rows * self.filters)

    @property
    def values_per_channel(self):
        """Conv outputs per channel and image: a batch norm's count."""
        return self.conv_hw[0] * self.conv_hw[1]

    def forward(self, weights, x, train, mask=None):
        if self.batch_norm and train:
            # the whole minibatch's statistics, from this one part
            z, conv_cache = self.convolve(weights, x)
            count, mean, m2 = batch_moments(z)
            return self.normalize(weights, z, conv_cache, (mean, m2 / count))
        k = self.index
        if train:
            W, b, U = weights.coefs[k], weights.intercepts[k], None
        elif weights.inference is not None:  # prepared once for the call
            W, b, U = weights.inference[k]
        else:
            W, b, U = self.inference_kernel(weights)
        act = ACTIVATIONS[self.activation]
        # at inference no cache: the im2col buffer is freed before the next
        # layer, or there is none (Winograd)
        z, conv_cache = conv2d_forward(
            x, W, self.stride, self.pads, self.conv_hw, train, self.windows(train), U
        )
        ph, pw = self.pool
        if not train and (ph, pw) == (1, 1):  # no pooling: no copy of the map
            rows, bias = per_channel(z, b)
            rows += bias
            return act(z), None
        if self.pooling == "max":  # pools first (see pools_first)
            pooled, pool_cache = maxpool_forward(z, ph, pw, need_cache=train)
            rows, bias = per_channel(pooled, b)
            rows += bias
            z = out = act(pooled)
        elif not train and self.activation == "relu":
            return _relu_avgpool(z, b, ph, pw), None
        else:
            rows, bias = per_channel(z, b)
            rows += bias
            z = act(z)
            out, pool_cache = avgpool_forward(z, ph, pw, need_cache=train)
        if not train:
            return out, None
        return out, (conv_cache, pool_cache, z, None, None)

    def inference_kernel(self, weights):
        """``(W, bias, U)`` the block predicts with: batch norm folded into
        the convolution, and ``U`` the Winograd transform of ``W`` (None for
        im2col). A predict call computes them once for all its parts
        (:func:`~skcnn._network.for_inference`): the transform of a
        (64, 128)-filter layer takes ~140 us, a tenth of a 16-image part of
        32x32x3 images."""
        k = self.index
        W, b = weights.coefs[k], weights.intercepts[k]
        if self.batch_norm:
            mean, var, scale = weights.means[k], weights.vars[k], weights.scales[k]
            W, b = batchnorm_folded(W, scale, b, mean, var)
        U = prepared_kernel(W, self.conv_hw) if self.winograd else None
        return W, b, U

    # A batch-normalized block in training runs in two halves around the
    # batch statistics, so that a minibatch split into parts can meet there
    # (see ``_engine``): convolve -> [the batch's mean and variance] ->
    # normalize, and backward to the normalization -> [the batch's sums] ->
    # from the normalization.

    def convolve(self, weights, x):
        """The conv output ``z`` of a batch-normalized block and its cache."""
        W = weights.coefs[self.index]
        return conv2d_forward(
            x, W, self.stride, self.pads, self.conv_hw, windows=self.windows()
        )

    def normalize(self, weights, z, conv_cache, stats):
        """Normalize ``z`` (overwritten) with the batch's ``stats = (mean,
        var)``, then activation and pooling: the block's ``(out, cache)``."""
        k = self.index
        z, norm_cache = batchnorm_normalize(
            z, weights.scales[k], weights.intercepts[k], *stats
        )
        z = ACTIVATIONS[self.activation](z)
        if self.pooling == "max":
            out, pool_cache = maxpool_forward(z, *self.pool)
            # the gradient reaches only each window's first maximum, whose
            # activation is the pooled output: the activation's gradient
            # is taken there (see backward_to_norm), and z is not kept
            z = out
        else:
            out, pool_cache = avgpool_forward(z, *self.pool)
        return out, (conv_cache, pool_cache, z, norm_cache, stats)

    def backward_to_norm(self, dout, cache):
        """Back through pooling and activation of a batch-normalized block:
        ``(delta, (dscale, dshift))``, the sums over this part's rows."""
        _, pool_cache, a_act, norm_cache, _ = cache
        act_grad = ACTIVATION_GRADS[self.activation]
        if self.pooling == "max":  # a_act is the pooled output: a smaller map
            delta = maxpool_backward(act_grad(a_act, dout), pool_cache, *self.pool)
        else:
            delta = act_grad(a_act, avgpool_backward(dout, pool_cache, *self.pool))
        return delta, batchnorm_param_grads(delta, norm_cache)

    def backward_from_norm(self, weights, delta, cache, sums, n_images, need_dx):
        """The rest, given the whole minibatch's ``sums = (dscale, dshift)``
        and its number of images."""
        dscale, dshift = sums
        count = n_images * self.values_per_channel
        delta = batchnorm_input_grad(delta, cache[3], dscale, dshift, count)
        dx, dW = conv2d_backward(
            delta, cache[0], weights.coefs[self.index], self.stride, self.pads, need_dx
        )
        return dx, (dW, dshift, dscale)

    def backward(self, weights, dout, cache, need_dx=True):
        if self.batch_norm:
            delta, sums = self.backward_to_norm(dout, cache)
            n = dout.shape[0]
            return self.backward_from_norm(weights, delta, cache, sums, n, need_dx)
        conv_cache, pool_cache, a_act, _, _ = cache
        act_grad = ACTIVATION_GRADS[self.activation]
        ph, pw = self.pool
        if self.pools_first:
            delta = act_grad(a_act, dout)
            dbias = channel_sums(delta)
            delta = maxpool_backward(delta, pool_cache, ph, pw)
        else:  # average pooling: max pools first without batch norm
            delta = act_grad(a_act, avgpool_backward(dout, pool_cache, ph, pw))
            dbias = channel_sums(delta)
        W = weights.coefs[self.index]
        dx, dW = conv2d_backward(
            delta, conv_cache, W, self.stride, self.pads, need_dx=need_dx
        )
        return dx, (dW, dbias, None)


@dataclass(frozen=True)
class Flatten:
    """(n, H, W, C) -> (n, H*W*C), in (height, width, channels) order."""

    in_shape: tuple

    @property
    def out_size(self):
        return int(np.prod(self.in_shape))

    def values_per_sample(self):
        return int(np.prod(self.in_shape))

    def forward(self, weights, x, train, mask=None):
        return x.reshape(x.shape[0], -1), None

    def backward(self, weights, dout, cache, need_dx=True):
        return dout.reshape((dout.shape[0],) + self.in_shape), None


@dataclass(frozen=True)
class GlobalAvgPool:
    """(n, H, W, C) -> (n, C): the mean of each feature map."""

    in_shape: tuple

    @property
    def out_size(self):
        return self.in_shape[2]

    def values_per_sample(self):
        return int(np.prod(self.in_shape))

    def forward(self, weights, x, train, mask=None):
        return x.mean(axis=(1, 2)), None

    def backward(self, weights, dout, cache, need_dx=True):
        height, width, _ = self.in_shape
        share = dout * dout.dtype.type(1.0 / (height * width))
        dx = ws.empty((dout.shape[0],) + self.in_shape, dout.dtype)
        dx[...] = share[:, None, None, :]  # writable: updated in place later
        return dx, None


@dataclass(frozen=True)
class Dense:
    """x @ W + b, then the activation (None: the output layer's logits)."""

    index: int
    n_in: int
    n_out: int
    activation: str = None

    @property
    def coef_shape(self):
        return (self.n_in, self.n_out)

    @property
    def out_size(self):
        return self.n_out

    def values_per_sample(self):
        return max(self.n_in, self.n_out)

    def forward(self, weights, x, train, mask=None):
        W = weights.coefs[self.index]
        # a part of a few rows makes a product too small for matmul to
        # release the GIL (see gil_free_dot)
        z = gil_free_dot(x, W, out=ws.empty((x.shape[0], W.shape[1]), x.dtype))
        z += weights.intercepts[self.index]
        if self.activation is not None:
            z = ACTIVATIONS[self.activation](z)
        if not train:
            return z, None
        # the activation's gradient is computed from its output
        return z, (x, None if self.activation is None else z)

    def backward(self, weights, dout, cache, need_dx=True):
        x, a = cache
        if self.activation is not None:
            dout = ACTIVATION_GRADS[self.activation](a, dout)
        # the weight gradient x.T @ dout is multiplied by the engine once the
        # parts of a split minibatch are collected (see OuterSum)
        dW = OuterSum(x, dout)
        dbias = dout.sum(axis=0)
        dx = None
        if need_dx:
            W = weights.coefs[self.index]
            dx = np.matmul(dout, W.T, out=ws.empty((len(dout), W.shape[0]), dout.dtype))
        return dx, (dW, dbias, None)


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout: multiply by the step's mask (0 or 1 / (1 - p)).

    The masks are drawn by the training loop from the estimator's random
    state (so fits are reproducible) and passed in; off at prediction.
    """

    units: int
    rate: float

    @property
    def out_size(self):
        return self.units

    def values_per_sample(self):
        return self.units

    def forward(self, weights, x, train, mask=None):
        if not train or mask is None:
            return x, None
        return x * mask, mask

    def backward(self, weights, dout, cache, need_dx=True):
        if cache is not None:
            dout *= cache
        return dout, None


def _relu_avgpool(z, b, ph, pw):
    """``avgpool(relu(z + b))`` as a prediction computes it: one pass over the
    conv output ``z`` where adding the bias and the activation took two.

    ``relu(z + b) = max(z, -b) + b``, and a window's mean commutes with
    adding ``b``, which then goes on the pooled map: a ``ph * pw``-th of the
    values. Measured on 28x28x1 images, (32, 64) filters, 2x2 average
    pooling: predictions 5 % faster on 1 thread, 3-5 % on 2.
    """
    rows, low = per_channel(z, -b)
    np.maximum(rows, low, out=rows)
    out, _ = avgpool_forward(z, ph, pw, need_cache=False)
    rows, bias = per_channel(out, b)
    rows += bias
    return out
