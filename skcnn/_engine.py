"""Running a network on data: minibatch gradients and chunked prediction.

Both split their rows into parts computed in parallel threads (see
``_parallel``) and combine the parts in a fixed order.
"""

from dataclasses import dataclass

import numpy as np
from sklearn.utils import gen_batches

from ._losses import OUTPUTS, weight_total
from ._network import backward, batch_statistics, forward
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
    :func:`~skcnn._parallel.n_parts`) computed on up to ``n_threads``
    threads, each with a single-threaded BLAS, and their gradients summed in
    part order: the result is the same bits whatever ``n_threads``. Batch
    statistics need the whole batch, so a batch-normalized one is not split.
    """
    n = batch.x.shape[0]
    total = weight_total(batch.sample_weight, n)
    loss_fn = OUTPUTS[net.out_activation][1]

    def part(rows):
        sub = batch.rows(rows)
        logits, caches = forward(net, weights, sub.x, True, sub.masks)
        loss, dlogits = loss_fn(logits, sub.Y, sub.sample_weight, total)
        grads = backward(net, weights, caches, dlogits)
        stats = batch_statistics(net, caches) if net.batch_norm else None
        return Step(loss, grads, stats)

    def add(step, other):
        # in place into the earlier part's gradients: nothing else holds them
        step.loss += other.loss
        for g, h in zip(step.grads.flat(), other.grads.flat()):
            g += h
        return step

    parts = 1 if net.batch_norm else n_parts(n, net.max_values_per_sample())
    step = reduce_parts(part, add, n, parts, n_threads)
    if alpha:
        scale = alpha / total
        step.loss += 0.5 * scale * sum(float(np.vdot(W, W)) for W in weights.coefs)
        for g, W in zip(step.grads.coefs, weights.coefs):
            g += W.dtype.type(scale) * W
    return step


def predict_rows(net, weights, X, image_shape, stop=None):
    """The network's outputs for the rows of X, shape (n, n_outputs).

    The output layer's function (softmax, logistic, identity) is applied;
    with ``stop`` the activations after the first ``stop`` layers are
    returned instead, flattened per sample (``transform``'s features).
    Computed in chunks so memory stays bounded whatever n, each chunk split
    into parts computed on as many threads as BLAS may use, each with a
    single-threaded BLAS. Neither the chunks nor the parts depend on the
    thread count, so neither do the results, to the last bit.
    """
    n = X.shape[0]
    values = net.max_values_per_sample()
    chunk = max(1, PREDICT_CHUNK_VALUES // values)
    finish = OUTPUTS[net.out_activation][0] if stop is None else None
    out = np.empty((n, net.output_size(stop)), dtype=X.dtype)
    n_threads = 1
    if n_parts(min(n, chunk), values) > 1:  # worth threads
        n_threads = blas_threads()  # read before pinning BLAS to one thread
    with single_threaded_blas():  # one limit for all chunks, not one each
        for batch in gen_batches(n, chunk):
            xb, out_b = X[batch], out[batch]

            def part(rows, xb=xb, out_b=out_b):
                images = xb[rows].reshape((-1,) + tuple(image_shape))
                result, _ = forward(net, weights, images, stop=stop)
                result = result.reshape(len(images), -1)
                out_b[rows] = result if finish is None else finish(result)

            map_parts(part, len(xb), n_parts(len(xb), values), n_threads)
    return out
