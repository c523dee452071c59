"""Output layers and their losses, computed from the logits.

Working from the logits (log-softmax, softplus) keeps the loss finite where
the probabilities would round to 0 or 1. Each loss returns the (sample-
weighted) loss summed over the rows and divided by ``total`` -- the number of
samples or the sum of their weights, by default those of the rows given --,
and its gradient w.r.t. the logits divided by the same ``total``, so the
backward pass needs no further scaling. Passing the total of a whole
minibatch lets a part of it be computed on its own (one thread per part).
"""

import numpy as np
from scipy.special import expit


def log_softmax(z):
    """Row-wise log-softmax of the logits ``z`` (n, k), shifted by each
    row's maximum so that nothing overflows.

    NumPy itself rather than ``scipy.special.log_softmax``: SciPy's goes
    through its array-API layer, Python code that holds the GIL about as
    long as the arithmetic takes on a minibatch part's logits, while the
    other parts' threads wait for it.
    """
    out = z - z.max(axis=1, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=1, keepdims=True))
    return out


def softmax(z):
    """Row-wise softmax of the logits ``z`` (n, k) (see :func:`log_softmax`)."""
    out = np.exp(z - z.max(axis=1, keepdims=True))
    out /= out.sum(axis=1, keepdims=True)
    return out


def weight_total(sample_weight, n):
    return float(n) if sample_weight is None else float(sample_weight.sum())


def _finish(per_sample, grad, sample_weight, total):
    if sample_weight is not None:
        per_sample *= sample_weight
        grad *= sample_weight.astype(grad.dtype, copy=False)[:, None]
    grad *= grad.dtype.type(1.0 / total)
    return float(per_sample.sum() / total), grad


def softmax_cross_entropy(logits, Y, sample_weight=None, total=None):
    """Multi-class cross-entropy; ``Y`` is a one-hot (n, n_classes) array."""
    if total is None:
        total = weight_total(sample_weight, logits.shape[0])
    log_p = log_softmax(logits)
    per_sample = -np.einsum("ij,ij->i", Y, log_p, dtype=np.float64)
    grad = np.exp(log_p, out=log_p)
    grad -= Y
    return _finish(per_sample, grad, sample_weight, total)


def logistic_cross_entropy(logits, Y, sample_weight=None, total=None):
    """Binary cross-entropy of independent logistic units, summed over them.

    ``Y`` is (n, k) in {0, 1}: k = 1 for a binary target, one column per
    label for a multilabel one (MLPClassifier's ``binary_log_loss``).
    """
    if total is None:
        total = weight_total(sample_weight, logits.shape[0])
    # -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z)
    per_sample = (np.logaddexp(0, logits) - Y * logits).sum(axis=1, dtype=np.float64)
    grad = expit(logits) - Y
    return _finish(per_sample, grad, sample_weight, total)


def squared_error(pred, Y, sample_weight=None, total=None):
    """MLPRegressor's loss: ``0.5 * mean((Y - pred) ** 2)`` over the samples
    (weighted) and the outputs.

    The gradient is this loss's exact gradient, so it carries the
    ``1 / n_outputs`` of the mean over outputs (MLPRegressor's backward pass
    leaves that factor out for several outputs).
    """
    if total is None:
        total = weight_total(sample_weight, pred.shape[0])
    grad = pred - Y
    n_outputs = pred.shape[1]
    per_sample = 0.5 * np.einsum("ij,ij->i", grad, grad, dtype=np.float64)
    per_sample /= n_outputs
    if n_outputs > 1:
        grad *= grad.dtype.type(1.0 / n_outputs)
    return _finish(per_sample, grad, sample_weight, total)


OUTPUTS = {
    # name: (the output layer's function of the logits, loss)
    "softmax": (softmax, softmax_cross_entropy),
    "logistic": (expit, logistic_cross_entropy),
    "identity": (lambda z: z, squared_error),
}
