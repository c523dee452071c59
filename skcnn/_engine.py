"""Running a network on data: minibatch gradients and chunked prediction.

Both split their rows into parts computed in parallel threads (see
``_parallel``) and combine the parts in a fixed order.
"""

from dataclasses import dataclass, field

import numpy as np

from . import _workspace as ws
from ._batchnorm import batch_moments, combine_moments
from ._layers import OuterSum
from ._losses import OUTPUTS, weight_total
from ._network import backward, collect_grads, for_inference, forward
from ._parallel import (
    blas_threads,
    map_parts,
    n_parts,
    reduce_parts,
    reduce_slices,
    single_threaded_blas,
    split,
    training_parts,
)

# Activation values (not bytes) one prediction chunk may hold at its widest
# layer: 2M values (8 MB in float32) keeps a chunk's working set near the
# CPU caches -- measured faster than larger chunks -- and bounds prediction
# memory whatever the number of samples.
PREDICT_CHUNK_VALUES = 2**21


@dataclass(frozen=True)
class Batch:
    """One minibatch: images (n, H, W, C), encoded targets (n, n_outputs),
    sample weights (or None) and dropout masks by layer position (or None).
    """

    x: np.ndarray
    Y: np.ndarray
    sample_weight: np.ndarray = None
    masks: dict = None

    def rows(self, part):
        masks = self.masks and {i: m[part] for i, m in self.masks.items()}
        sw = None if self.sample_weight is None else self.sample_weight[part]
        return Batch(self.x[part], self.Y[part], sw, masks)


@dataclass
class Step:
    """A minibatch's regularised loss, its gradients (:class:`Grads`) and,
    with batch normalization, each block's batch (mean, var)."""

    loss: float
    grads: object
    stats: list = None


def loss_and_gradients(net, weights, batch, alpha, n_threads=1):
    """Regularised loss and gradients, with MLPClassifier's L2 convention.

    loss = mean (sample-weighted) loss of the output layer
           + 0.5 * alpha * sum(W ** 2) / n,
    n being the number of samples (or the sum of their weights); intercepts
    are not penalised. A large enough batch is split into parts (how many
    depends on the batch and the architecture only, see
    :func:`~skcnn._parallel.training_parts`) computed on up to ``n_threads``
    threads, each with a single-threaded BLAS, and their gradients summed in
    part order: the result is the same bits whatever ``n_threads``.
    """
    n = batch.x.shape[0]
    total = weight_total(batch.sample_weight, n)
    parts = training_parts(n, net.max_values_per_sample())
    if net.batch_norm:
        step = _NormStages(net, weights, batch, total, parts).run(n_threads)
    else:
        loss_fn = OUTPUTS[net.out_activation][1]

        def part(rows):
            sub = batch.rows(rows)
            logits, caches = forward(net, weights, sub.x, True, sub.masks)
            loss, dlogits = loss_fn(logits, sub.Y, sub.sample_weight, total)
            return Step(loss, backward(net, weights, caches, dlogits))

        step = reduce_parts(part, _add_steps, n, parts, n_threads)
    step.grads.coefs = [_multiplied(g, n_threads) for g in step.grads.coefs]
    if alpha:
        scale = alpha / total
        step.loss += 0.5 * scale * sum(float(np.vdot(W, W)) for W in weights.coefs)
        for g, W in zip(step.grads.coefs, weights.coefs):
            g += np.multiply(W, W.dtype.type(scale), out=ws.empty(W.shape, W.dtype))
    return step


def _nothing(a, b):
    # prediction's parts write their rows of the output: nothing to fold
    return None


def _add_steps(step, other):
    # in place into the earlier part's gradients: nothing else holds them
    # (a dense layer's OuterSum collects the other part's factors)
    step.loss += other.loss
    for g, h in zip(step.grads.flat(), other.grads.flat()):
        g += h
    return step


def _multiplied(g, n_threads):
    """A dense layer's collected :class:`OuterSum` as an array (others as
    they are): one GEMM over all the parts' rows, itself split into row
    blocks of the result by size alone, each single-threaded BLAS."""
    if not isinstance(g, OuterSum):
        return g
    a, b = g.factors()
    out = ws.empty((a.shape[1], b.shape[1]), a.dtype)

    def block(rows):
        np.matmul(a[:, rows].T, b, out=out[rows])

    map_parts(block, len(out), n_parts(len(out), a.shape[0] + b.shape[1]), n_threads)
    return out


@dataclass
class _Partial:
    """What one part contributes to a stage of :class:`_NormStages`: loss,
    gradients by layer position, and the moments (forward) or the sums
    (backward) a normalization needs from the whole batch."""

    loss: float = 0.0
    grads: dict = field(default_factory=dict)
    moments: tuple = None
    sums: tuple = None


def _add_partials(a, b):
    # in place into the earlier part's arrays: nothing else holds them
    a.loss += b.loss
    for position, g in a.grads.items():
        for x, y in zip(g, b.grads[position]):
            if x is not None:
                x += y
    if a.moments is not None:
        a.moments = combine_moments(a.moments, b.moments)
    if a.sums is not None:
        for x, y in zip(a.sums, b.sums):
            x += y
    return a


class _NormStages:
    """One step of a batch-normalized network, its parts meeting at every
    normalization.

    A normalization needs the whole minibatch's mean and variance forward
    and two sums over it backward. So the parts run the layers between two
    normalizations in parallel threads, as they run a whole network without
    normalization, then meet: their moments or sums are combined in part
    order and the next stage starts from the totals. The split depends on
    the batch and the architecture alone, so the result is the same bits
    whatever the thread count. Each part's caches live until its backward
    pass, as the whole batch's would in one piece.
    """

    def __init__(self, net, weights, batch, total, parts):
        self.net, self.weights, self.batch, self.total = net, weights, batch, total
        n = batch.x.shape[0]
        bounds = [n * k // parts for k in range(parts + 1)]
        self.parts = [batch.rows(slice(a, b)) for a, b in zip(bounds, bounds[1:])]
        layers = net.layers
        self.norms = [i for i, x in enumerate(layers) if getattr(x, "batch_norm", 0)]
        self.first = next(i for i, x in enumerate(layers) if hasattr(x, "index"))
        self.caches = [[None] * len(layers) for _ in self.parts]
        self.carry = [None] * len(self.parts)  # what a part hands its next stage

    def run(self, n_threads):
        norms, layers, n = self.norms, self.net.layers, len(self.parts)

        def stage(work):  # part k is the one-row slice k of range(n)
            return reduce_parts(lambda s: work(s.start), _add_partials, n, n, n_threads)

        stats = []
        for s in range(len(norms)):
            count, mean, m2 = stage(lambda k, s=s: self._forward(k, s, stats)).moments
            stats.append((mean, m2 / count))
        met = stage(lambda k: self._middle(k, stats[-1]))
        loss, grads = met.loss, met.grads
        for s in range(len(norms) - 1, -1, -1):
            sums = met.sums
            met = stage(lambda k, s=s, sums=sums: self._backward(k, s, sums))
            grads.update(met.grads)
            dW = grads[norms[s]][0]
            grads[norms[s]] = (dW, sums[1], sums[0])  # dbias = dshift, dscale
        # the dense layers' OuterSums are multiplied by loss_and_gradients
        return Step(loss, collect_grads(layers, self.weights, grads), stats)

    # One part's work in a stage. ---------------------------------------------
    def _layers_forward(self, k, x, start, stop):
        sub, caches = self.parts[k], self.caches[k]
        for i in range(start, stop):
            mask = None if sub.masks is None else sub.masks.get(i)
            x, caches[i] = self.net.layers[i].forward(self.weights, x, True, mask)
        return x

    def _normalized(self, k, s, stats):
        """Part ``k``'s output of norm ``s``, given the batch's ``stats``."""
        z, conv_cache = self.carry[k]
        position = self.norms[s]
        block = self.net.layers[position]
        x, cache = block.normalize(self.weights, z, conv_cache, stats)
        self.caches[k][position] = cache
        return x

    def _forward(self, k, s, stats):
        """Up to norm ``s``'s convolution: part ``k``'s moments there."""
        if s == 0:
            x, start = self.parts[k].x, 0
        else:
            x, start = self._normalized(k, s - 1, stats[s - 1]), self.norms[s - 1] + 1
        x = self._layers_forward(k, x, start, self.norms[s])
        z, conv_cache = self.net.layers[self.norms[s]].convolve(self.weights, x)
        self.carry[k] = (z, conv_cache)
        return _Partial(moments=batch_moments(z))

    def _middle(self, k, stats):
        """From the last norm through the loss and back to it again."""
        last = self.norms[-1]
        n_layers = len(self.net.layers)
        x = self._layers_forward(k, self._normalized(k, -1, stats), last + 1, n_layers)
        sub = self.parts[k]
        loss_fn = OUTPUTS[self.net.out_activation][1]
        loss, delta = loss_fn(x, sub.Y, sub.sample_weight, self.total)
        part = _Partial(loss=loss)
        delta = self._layers_backward(k, delta, len(self.net.layers) - 1, last, part)
        block = self.net.layers[last]
        self.carry[k], part.sums = block.backward_to_norm(delta, self.caches[k][last])
        return part

    def _backward(self, k, s, sums):
        """From norm ``s``, given the batch's sums there, back to norm
        ``s - 1`` (or to the first weighted layer)."""
        position, caches = self.norms[s], self.caches[k]
        block = self.net.layers[position]
        need_dx = position > self.first
        n_images = self.batch.x.shape[0]
        delta, (dW, _, _) = block.backward_from_norm(
            self.weights, self.carry[k], caches[position], sums, n_images, need_dx
        )
        caches[position] = self.carry[k] = None
        part = _Partial(grads={position: (dW, None, None)})
        if s == 0:
            self._layers_backward(k, delta, position - 1, self.first - 1, part)
            return part
        previous = self.norms[s - 1]
        delta = self._layers_backward(k, delta, position - 1, previous, part)
        block = self.net.layers[previous]
        self.carry[k], part.sums = block.backward_to_norm(delta, caches[previous])
        return part

    def _layers_backward(self, k, delta, start, stop, part):
        """Back through layers ``start`` down to ``stop`` (excluded)."""
        caches = self.caches[k]
        for i in range(start, stop, -1):
            layer = self.net.layers[i]
            delta, g = layer.backward(self.weights, delta, caches[i], i > self.first)
            caches[i] = None
            if g is not None:
                part.grads[i] = g
        return delta


def predict_rows(net, weights, X, image_shape, stop=None):
    """The network's outputs for the rows of X, shape (n, n_outputs).

    The output layer's function (softmax, logistic, identity) is applied;
    with ``stop`` the activations after the first ``stop`` layers are
    returned instead, flattened per sample (``transform``'s features).
    Computed in chunks so memory stays bounded whatever n, each chunk split
    into parts computed on as many threads as BLAS may use (but no more
    than a chunk has parts), each with a single-threaded BLAS. Neither the
    chunks nor the parts depend on the thread count, so neither do the
    results, to the last bit.
    """
    n = X.shape[0]
    values = net.max_values_per_sample()
    chunk = max(1, PREDICT_CHUNK_VALUES // values)
    finish = OUTPUTS[net.out_activation][0] if stop is None else None
    out = np.empty((n, net.output_size(stop)), dtype=X.dtype)
    # every chunk's parts in one list, handed out to the threads in one go:
    # one hand-off per chunk left a thread idle at the end of every chunk
    # (measured 1.47x on 2 threads on 64x64x3 images). A plain range, not
    # sklearn's gen_batches: its parameter validation costs a one-image
    # predict more than its input scaling and first conv.
    slices = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        slices += split(size, n_parts(size, values), start)
    # no more threads than a chunk has parts: then no more parts are being
    # computed at once than a chunk has, whatever the thread count (the
    # memory estimate's bound; a last, shorter chunk's parts may be larger)
    n_threads = 1
    most = n_parts(min(n, chunk), values)
    if most > 1:  # worth threads
        n_threads = min(most, blas_threads())  # read before pinning BLAS

    def part(rows):
        images = X[rows].reshape((-1,) + tuple(image_shape))
        result, _ = forward(net, prepared, images, stop=stop)
        result = result.reshape(len(images), -1)
        out[rows] = result if finish is None else finish(result)

    # The conv blocks' kernels are prepared once, for every part; under the
    # parts' one-thread BLAS limit (entered once: the parts' own entry
    # nests), as their GEMMs are small: a multi-threaded BLAS would wake
    # threads that then spin beside the parts' (measured 1.3x slower
    # predictions on 2 threads).
    with single_threaded_blas():
        prepared = for_inference(net, weights)
        reduce_slices(part, _nothing, slices, n_threads)
    return out
