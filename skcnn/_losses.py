"""Output layers and their cross-entropy losses, computed from the logits.

Working from the logits (log-softmax, softplus) keeps the loss finite where
the probabilities would round to 0 or 1. Each loss returns the mean
(sample-weighted) loss and its gradient w.r.t. the logits, already divided by
the weight total so the backward pass needs no further scaling.
"""

import numpy as np
from scipy.special import expit, log_softmax, softmax


def _weights_and_total(sample_weight, n, dtype):
    if sample_weight is None:
        return None, float(n)
    return sample_weight.astype(dtype, copy=False), float(sample_weight.sum())


def softmax_cross_entropy(logits, Y, sample_weight=None):
    """Multi-class cross-entropy; ``Y`` is a one-hot (n, n_classes) array."""
    sw, total = _weights_and_total(sample_weight, logits.shape[0], logits.dtype)
    log_p = log_softmax(logits, axis=1)
    per_sample = -np.einsum("ij,ij->i", Y, log_p, dtype=np.float64)
    if sw is not None:
        per_sample *= sw
    grad = np.exp(log_p, out=log_p)
    grad -= Y
    if sw is not None:
        grad *= sw[:, None]
    grad *= grad.dtype.type(1.0 / total)
    return float(per_sample.sum() / total), grad, total


def logistic_cross_entropy(logits, Y, sample_weight=None):
    """Binary cross-entropy of a single logistic unit; ``Y`` is (n, 1) in {0, 1}."""
    sw, total = _weights_and_total(sample_weight, logits.shape[0], logits.dtype)
    # -log sigmoid(z) = softplus(-z), -log(1 - sigmoid(z)) = softplus(z)
    per_sample = (np.logaddexp(0, logits) - Y * logits).ravel().astype(np.float64)
    if sw is not None:
        per_sample *= sw
    grad = expit(logits) - Y
    if sw is not None:
        grad *= sw[:, None]
    grad *= grad.dtype.type(1.0 / total)
    return float(per_sample.sum() / total), grad, total


OUTPUTS = {
    # name: (probability function of the logits, loss)
    "softmax": (lambda z: softmax(z, axis=1), softmax_cross_entropy),
    "logistic": (expit, logistic_cross_entropy),
}
