"""Training state and the stochastic loop, with MLPClassifier's semantics.

These functions set up a :class:`~skcnn.CNNClassifier`'s fitted state (its
classes, architecture, weights and optimizer) and drive it through its
epochs, updating the fitted attributes in place.
"""

import warnings
from numbers import Integral

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils.multiclass import unique_labels

from ._malloc import tune_malloc
from ._network import build_architecture, initialize, loss_and_gradients
from ._optimizers import make_optimizer
from ._parallel import blas_threads, single_threaded_blas


def encode_targets(est, y, refit_classes, incremental):
    """Binarize y, with MLPClassifier's rules for which classes are allowed."""
    if refit_classes:
        est._label_binarizer = LabelBinarizer().fit(y)
        est.classes_ = est._label_binarizer.classes_
        return est._label_binarizer.transform(y).astype(bool)
    if not hasattr(est, "_label_binarizer"):  # first partial_fit call
        est._label_binarizer = LabelBinarizer().fit(est.classes_)
    classes = unique_labels(y)
    if not incremental:
        if set(classes) != set(est.classes_):
            raise ValueError(
                "warm_start can only be used where `y` has the same classes as "
                f"in the previous call to fit. Previously got {est.classes_}, "
                f"`y` has {classes}."
            )
    elif len(np.setdiff1d(classes, est.classes_, assume_unique=True)):
        raise ValueError(
            f"`y` has classes not in `est.classes_`. `est.classes_` has "
            f"{est.classes_}. `y` has {classes}."
        )
    return est._label_binarizer.transform(y).astype(bool)


def initialize_state(est, image_shape, n_outputs, dtype):
    est._random_state = check_random_state(est.random_state)
    multiclass = est._label_binarizer.y_type_ == "multiclass"
    est.out_activation_ = "softmax" if multiclass else "logistic"
    est.n_outputs_ = n_outputs
    est.image_shape_ = tuple(image_shape)
    est._arch = build_architecture(
        image_shape,
        layer_sizes(est.conv_filters, "conv_filters", True),
        est.kernel_size,
        est.pool_size,
        est.padding,
        est.pooling,
        layer_sizes(est.hidden_layer_sizes, "hidden_layer_sizes", True),
        n_outputs,
        est.activation,
        est.out_activation_,
    )
    est.coefs_, est.intercepts_ = initialize(est._arch, est._random_state, dtype)
    est.n_layers_ = len(est.coefs_) + 1
    est._optimizer = make_optimizer(est, est.coefs_ + est.intercepts_)
    est.n_iter_ = 0
    est.t_ = 0
    est.loss_curve_ = []
    est._no_improvement_count = 0
    if est.early_stopping:
        est.validation_scores_ = []
        est.best_validation_score_ = -np.inf
        est.best_loss_ = None
    else:
        est.validation_scores_ = None
        est.best_validation_score_ = None
        est.best_loss_ = np.inf
    est._best_coefs = [c.copy() for c in est.coefs_]
    est._best_intercepts = [b.copy() for b in est.intercepts_]


def fit_stochastic(est, X, Y, sample_weight, incremental):
    dtype = est.coefs_[0].dtype
    if est.early_stopping:
        stratify = Y if est.n_outputs_ == 1 else Y.argmax(axis=1)
        n_val = int(np.ceil(est.validation_fraction * X.shape[0]))
        n_classes = len(np.unique(stratify, axis=0))
        if n_val < max(2, n_classes):
            raise ValueError(
                f"The validation set is too small: {n_val} samples for "
                f"{n_classes} classes. Increase 'validation_fraction' or the size "
                "of your dataset."
            )
        split = train_test_split(
            X,
            Y,
            *([] if sample_weight is None else [sample_weight]),
            random_state=est._random_state,
            test_size=est.validation_fraction,
            stratify=stratify,
        )
        X, X_val, Y, Y_val = split[:4]
        sw_val = None
        if sample_weight is not None:
            sample_weight, sw_val = split[4:]
        y_val = est._label_binarizer.inverse_transform(Y_val)

    n_samples = X.shape[0]
    if est.batch_size == "auto":
        batch_size = min(200, n_samples)
    else:
        if est.batch_size > n_samples:
            warnings.warn(
                "Got `batch_size` less than 1 or larger than sample size. "
                "It is going to be clipped.",
                stacklevel=3,
            )
        batch_size = int(np.clip(est.batch_size, 1, n_samples))

    params = est.coefs_ + est.intercepts_
    arch = est._arch
    sample_idx = np.arange(n_samples)
    est.n_iter_ = 0
    tune_malloc()
    n_threads = blas_threads()
    with single_threaded_blas(n_threads):
        try:
            for _ in range(est.max_iter):
                if est.shuffle:
                    sample_idx = est._random_state.permutation(n_samples)
                accumulated_loss = 0.0
                for batch in gen_batches(n_samples, batch_size):
                    idx = sample_idx[batch]
                    sw = None if sample_weight is None else sample_weight[idx]
                    if sw is not None and not sw.any():
                        continue  # a batch of zero weight carries no gradient
                    xb = X[idx].reshape((-1,) + est.image_shape_)
                    loss, coef_grads, intercept_grads = loss_and_gradients(
                        arch,
                        est.coefs_,
                        est.intercepts_,
                        xb,
                        Y[idx].astype(dtype),
                        sw,
                        est.alpha,
                        n_threads,
                    )
                    if not np.isfinite(loss):
                        _diverged(est)
                    est._optimizer.update_params(params, coef_grads + intercept_grads)
                    accumulated_loss += loss * len(idx)

                if not all(np.isfinite(p).all() for p in params):
                    _diverged(est)
                est.n_iter_ += 1
                est.loss_ = accumulated_loss / n_samples
                est.t_ += n_samples
                est.loss_curve_.append(est.loss_)
                if est.verbose:
                    print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))

                if est.early_stopping:
                    _update_validation(est, X_val, y_val, sw_val)
                else:
                    _update_training_loss(est)
                est._optimizer.iteration_ends(est.t_)

                if est._no_improvement_count > est.n_iter_no_change:
                    what = "Validation score" if est.early_stopping else "Training loss"
                    msg = (
                        f"{what} did not improve more than tol={est.tol:f} for "
                        f"{est.n_iter_no_change} consecutive epochs."
                    )
                    if est._optimizer.trigger_stopping(msg, est.verbose):
                        break
                    est._no_improvement_count = 0
                if incremental:
                    break
                if est.n_iter_ == est.max_iter:
                    warnings.warn(
                        f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) "
                        "reached and the optimization hasn't converged yet.",
                        ConvergenceWarning,
                        stacklevel=3,
                    )
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.", stacklevel=3)

    if est.early_stopping:
        # restore the best weights, in place so coefs_ stay the live arrays
        for p, best in zip(params, est._best_coefs + est._best_intercepts):
            p[...] = best


def _diverged(est):
    raise ValueError(
        f"Training diverged in epoch {est.n_iter_ + 1}: the loss or the "
        "weights became non-finite. Use a smaller learning_rate_init "
        f"(currently {est.learning_rate_init}) or scale the input features."
    )


def _update_validation(est, X_val, y_val, sw_val):
    score = accuracy_score(y_val, est._predict(X_val), sample_weight=sw_val)
    est.validation_scores_.append(score)
    if est.verbose:
        print("Validation score: %f" % score)
    if score < est.best_validation_score_ + est.tol:
        est._no_improvement_count += 1
    else:
        est._no_improvement_count = 0
    if score > est.best_validation_score_:
        est.best_validation_score_ = score
        est._best_coefs = [c.copy() for c in est.coefs_]
        est._best_intercepts = [b.copy() for b in est.intercepts_]


def _update_training_loss(est):
    if est.loss_curve_[-1] > est.best_loss_ - est.tol:
        est._no_improvement_count += 1
    else:
        est._no_improvement_count = 0
    est.best_loss_ = min(est.best_loss_, est.loss_curve_[-1])


def layer_sizes(value, name, allow_empty):
    """A layer-size parameter (an int or a sequence of ints) as a tuple."""
    sizes = (value,) if isinstance(value, Integral) else tuple(value)
    if not all(isinstance(s, Integral) and not isinstance(s, bool) for s in sizes):
        raise ValueError(f"{name} must hold integers; got {value!r}.")
    if any(s < 1 for s in sizes) or (not sizes and not allow_empty):
        raise ValueError(f"{name} must be positive integers; got {value!r}.")
    return tuple(int(s) for s in sizes)
