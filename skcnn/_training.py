"""Training state and the stochastic loop, with MLPClassifier's semantics.

These functions set up a :class:`~skcnn.CNNClassifier`'s fitted state (its
classes, architecture, weights and optimizer) and drive it through its
epochs, updating the fitted attributes in place.
"""

import copy
import signal
import threading
import time
import warnings
from numbers import Integral

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    column_or_1d,
    validate_data,
)

from ._image import (
    check_magnitude,
    check_sample_shape,
    compute_dtype,
    resolve_image_shape,
    split_images,
)
from ._malloc import tune_malloc
from ._network import build_architecture, initialize, loss_and_gradients
from ._optimizers import cosine_factor, make_optimizer
from ._parallel import blas_threads, single_threaded_blas


def guarded_fit(est, X, y, sample_weight, incremental, classes, validation):
    """fit / partial_fit: validate, set up or reuse the state, train."""
    # A failed call must leave the estimator as it was (or cleanly
    # unfitted): snapshot the fitted state, which is small next to the data.
    saved = {
        k: copy.deepcopy(v)
        for k, v in vars(est).items()
        if k.endswith("_") or k.startswith("_")
    }
    try:
        return _fit_unguarded(
            est, X, y, sample_weight, incremental, classes, validation
        )
    except BaseException:
        for k in [k for k in vars(est) if k.endswith("_") or k.startswith("_")]:
            delattr(est, k)
        vars(est).update(saved)
        raise


def _fit_unguarded(est, X, y, sample_weight, incremental, classes, validation):
    new_classes = incremental and _check_partial_fit_first_call(est, classes)
    first_pass = (
        not hasattr(est, "coefs_")
        or new_classes
        or (not est.warm_start and not incremental)
    )
    check_augment(est.augment)
    X, sample_shape = split_images(X)
    if not first_pass:
        check_sample_shape(sample_shape, est.image_shape_)
    dtype = compute_dtype(X) if first_pass else est.coefs_[0].dtype
    X, y = validate_data(est, X, y, dtype=dtype, reset=first_pass, multi_output=True)
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)
    check_magnitude(X)
    check_classification_targets(y)
    sample_weight = combined_sample_weight(est, X, y, sample_weight, incremental)
    if first_pass:
        image_shape = resolve_image_shape(X.shape[1], est.image_shape, sample_shape)

    Y = encode_targets(est, y, first_pass and not incremental, incremental)
    if first_pass:
        initialize_state(est, image_shape, Y.shape[1], dtype)
    elif not incremental:
        # a warm-started fit runs a fresh optimizer from the current weights
        est._optimizer = make_optimizer(est, trainable(est))
    if validation is not None:
        X_val = est._validate_predict_input(validation[0])
        y_val = check_validation_targets(est, validation[1], X_val)
        validation = (X_val, y_val)
    fit_stochastic(est, X, Y, sample_weight, incremental, validation)
    return est


def combined_sample_weight(est, X, y, sample_weight, incremental):
    """Validated sample weights times the ``class_weight`` ones (or None)."""
    if sample_weight is not None:
        sample_weight = _check_sample_weight(
            sample_weight, X, dtype=X.dtype, ensure_non_negative=True
        )
    if est.class_weight is not None:
        if incremental and est.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit: the "
                "class frequencies of one chunk are not those of the data. Pass "
                "a dict, e.g. from sklearn.utils.class_weight."
                "compute_class_weight('balanced', classes=..., y=y_all)."
            )
        weights = compute_sample_weight(est.class_weight, y).astype(X.dtype)
        sample_weight = weights if sample_weight is None else sample_weight * weights
    if sample_weight is not None and not sample_weight.any():
        raise ValueError("Sample weights must contain at least one non-zero weight.")
    return sample_weight


def check_validation_targets(est, y_val, X_val):
    """An explicit validation set's labels: known classes, one per row."""
    if est._label_binarizer.y_type_.startswith("multilabel"):
        y_val = np.asarray(y_val)
        if y_val.ndim != 2 or y_val.shape[1] != est.n_outputs_:
            raise ValueError(
                f"y_val must be a ({X_val.shape[0]}, {est.n_outputs_}) label "
                f"indicator array; got shape {y_val.shape}."
            )
        return y_val
    y_val = column_or_1d(y_val)
    if len(y_val) != X_val.shape[0]:
        raise ValueError(
            f"X_val has {X_val.shape[0]} samples but y_val has {len(y_val)}."
        )
    unknown = np.setdiff1d(unique_labels(y_val), est.classes_)
    if len(unknown):
        raise ValueError(f"y_val has classes not in the training data: {unknown}.")
    return y_val


def encode_targets(est, y, refit_classes, incremental):
    """Binarize y, with MLPClassifier's rules for which classes are allowed."""
    if refit_classes:
        est._label_binarizer = LabelBinarizer().fit(y)
        est.classes_ = est._label_binarizer.classes_
        return est._label_binarizer.transform(y).astype(bool)
    if not hasattr(est, "_label_binarizer"):  # first partial_fit call
        multilabel = type_of_target(y).startswith("multilabel")
        est._label_binarizer = LabelBinarizer().fit(y if multilabel else est.classes_)
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
            f"`y` has classes not in `classes_`. `classes_` has "
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
        strides=est.strides,
        global_pooling=est.global_pooling,
        batch_norm=est.batch_norm,
    )
    est.coefs_, est.intercepts_ = initialize(est._arch, est._random_state, dtype)
    if est._arch.batch_norm:
        filters = [b.filters for b in est._arch.conv_blocks]
        est.batch_norm_scales_ = [np.ones(f, dtype=dtype) for f in filters]
        est.batch_norm_means_ = [np.zeros(f, dtype=dtype) for f in filters]
        est.batch_norm_vars_ = [np.ones(f, dtype=dtype) for f in filters]
    else:
        est.batch_norm_scales_ = est.batch_norm_means_ = est.batch_norm_vars_ = None
    est.n_layers_ = len(est.coefs_) + 1
    est._optimizer = make_optimizer(est, trainable(est))
    est.n_iter_ = 0
    est.t_ = 0
    est.loss_curve_ = []
    est.history_ = []
    est._no_improvement_count = 0
    if est.early_stopping:
        est.validation_scores_ = []
        est.best_validation_score_ = -np.inf
        est.best_loss_ = None
    else:
        est.validation_scores_ = None
        est.best_validation_score_ = None
        est.best_loss_ = np.inf
    est._best_state = [a.copy() for a in model_state(est)]


def fit_stochastic(est, X, Y, sample_weight, incremental, validation=None):
    """Run up to ``max_iter`` epochs (one with ``incremental``).

    ``validation`` is an explicit ``(X_val, y_val)`` for early stopping;
    without it ``validation_fraction`` of the data is held out.
    """
    if est.early_stopping:
        X, Y, sample_weight, validation = _validation_split(
            est, X, Y, sample_weight, validation
        )
    n_samples = X.shape[0]
    batch_size = _batch_size(est, n_samples)
    params = model_state(est)
    est.n_iter_ = 0
    tune_malloc()
    n_threads = blas_threads()
    with single_threaded_blas(n_threads), _InterruptAfterBatch() as interrupt:
        for _ in range(est.max_iter):
            start = time.perf_counter()
            rate = _current_rate(est)
            loss = _run_epoch(
                est, X, Y, sample_weight, batch_size, n_threads, interrupt
            )
            if interrupt.requested:
                warnings.warn(
                    "Training interrupted by user: stopped after the current batch.",
                    stacklevel=3,
                )
                break
            if not all(np.isfinite(p).all() for p in params):
                _diverged(est)
            stop = _end_epoch(est, loss, n_samples, validation, rate, start)
            if stop or incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn(
                    f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) "
                    "reached and the optimization hasn't converged yet.",
                    ConvergenceWarning,
                    stacklevel=3,
                )

    if est.early_stopping:
        # restore the best weights, in place so coefs_ stay the live arrays
        for p, best in zip(params, est._best_state):
            p[...] = best


def _validation_split(est, X, Y, sample_weight, validation):
    if validation is not None:
        return X, Y, sample_weight, validation + (None,)
    if est._label_binarizer.y_type_.startswith("multilabel"):
        stratify, n_classes = None, 1  # as MLPClassifier: no stratification
    else:
        stratify = Y if est.n_outputs_ == 1 else Y.argmax(axis=1)
        n_classes = len(np.unique(stratify, axis=0))
    n_val = int(np.ceil(est.validation_fraction * X.shape[0]))
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
    return X, Y, sample_weight, (X_val, y_val, sw_val)


def trainable(est):
    """The arrays the optimizer updates: weights, intercepts, norm scales."""
    return est.coefs_ + est.intercepts_ + (est.batch_norm_scales_ or [])


def model_state(est):
    """Every array prediction depends on (what early stopping snapshots)."""
    if est.batch_norm_scales_ is None:
        return trainable(est)
    return trainable(est) + est.batch_norm_means_ + est.batch_norm_vars_


def batch_norms(est):
    """Per conv block (scale, running mean, running var), or None."""
    if est.batch_norm_scales_ is None:
        return None
    return list(
        zip(est.batch_norm_scales_, est.batch_norm_means_, est.batch_norm_vars_)
    )


# Weight of a batch's statistics in the running averages (PyTorch's default).
_BATCH_NORM_MOMENTUM = 0.1


def _update_running_stats(est, stats, n):
    """Exponential running averages of the batch means and (unbiased) vars."""
    m = _BATCH_NORM_MOMENTUM
    for block, (mean, var), run_mean, run_var in zip(
        est._arch.conv_blocks, stats, est.batch_norm_means_, est.batch_norm_vars_
    ):
        count = n * int(np.prod(block.conv_hw))  # values per channel
        unbiased = var * (count / max(count - 1, 1))
        run_mean *= 1 - m
        run_mean += m * mean
        run_var *= 1 - m
        run_var += m * unbiased


def _batch_size(est, n_samples):
    if est.batch_size == "auto":
        return min(200, n_samples)
    if est.batch_size > n_samples:
        warnings.warn(
            "Got `batch_size` less than 1 or larger than sample size. "
            "It is going to be clipped.",
            stacklevel=4,
        )
    return int(np.clip(est.batch_size, 1, n_samples))


def _current_rate(est):
    """The base learning rate of the coming epoch (cosine-scheduled if asked)."""
    optimizer = est._optimizer
    if est.learning_rate == "cosine":
        optimizer.scale_learning_rate(cosine_factor(len(est.loss_curve_), est.max_iter))
    if hasattr(optimizer, "rate_factor"):  # Adam: learning_rate is bias-corrected
        return optimizer.learning_rate_init * optimizer.rate_factor
    return optimizer.learning_rate


def _dropout_masks(est, n, dtype):
    """Inverted-dropout masks for the hidden dense layers, from est's RNG."""
    if not est.dropout:
        return None
    keep = 1.0 - est.dropout
    scale = dtype.type(1.0 / keep)
    return [
        (est._random_state.random_sample((n, units)) < keep).astype(dtype) * scale
        for units in est._arch.dense_sizes[1:-1]
    ]


def check_augment(augment):
    """The ``augment`` parameter as (max shift in pixels, flips), or None."""
    if augment is None:
        return None
    unknown = set(augment) - {"shift", "flip"}
    shift, flip = augment.get("shift", 0), augment.get("flip", False)
    if (
        unknown
        or not isinstance(shift, Integral)
        or isinstance(shift, bool)
        or shift < 0
        or not isinstance(flip, bool)
    ):
        raise ValueError(
            "augment must be None or a dict with keys 'shift' (an int >= 0, the "
            "largest shift in pixels) and 'flip' (bool, random horizontal "
            f"flips); got {augment!r}."
        )
    return int(shift), flip


def _augment(est, xb):
    """Randomly shifted (zero-filled) and flipped copies of the images xb."""
    settings = check_augment(est.augment)
    if settings is None:
        return xb
    shift, flip = settings
    rng = est._random_state
    n, height, width, _ = xb.shape
    if shift:
        padded = np.pad(xb, ((0, 0), (shift, shift), (shift, shift), (0, 0)))
        dy = rng.randint(0, 2 * shift + 1, n)
        dx = rng.randint(0, 2 * shift + 1, n)
        rows = dy[:, None, None] + np.arange(height)[None, :, None]
        cols = dx[:, None, None] + np.arange(width)[None, None, :]
        xb = padded[np.arange(n)[:, None, None], rows, cols]
    if flip:
        flipped = rng.random_sample(n) < 0.5
        xb = xb.copy() if not shift else xb
        xb[flipped] = xb[flipped, :, ::-1]
    return xb


def _run_epoch(est, X, Y, sample_weight, batch_size, n_threads, interrupt):
    """One pass over the data; returns the mean minibatch loss."""
    dtype = est.coefs_[0].dtype
    params = trainable(est)
    norms = batch_norms(est)
    n_samples = X.shape[0]
    order = est._random_state.permutation(n_samples) if est.shuffle else None
    accumulated_loss = 0.0
    for batch in gen_batches(n_samples, batch_size):
        idx = batch if order is None else order[batch]
        sw = None if sample_weight is None else sample_weight[idx]
        if sw is not None and not sw.any():
            continue  # a batch of zero weight carries no gradient
        xb = _augment(est, X[idx].reshape((-1,) + est.image_shape_))
        loss, coef_grads, intercept_grads, *norm_info = loss_and_gradients(
            est._arch,
            est.coefs_,
            est.intercepts_,
            xb,
            Y[idx].astype(dtype),
            sw,
            0.0 if est.solver == "adamw" else est.alpha,  # adamw decays instead
            n_threads,
            _dropout_masks(est, xb.shape[0], dtype),
            norms,
        )
        if not np.isfinite(loss):
            _diverged(est)
        grads = coef_grads + intercept_grads
        if norms is not None:
            scale_grads, stats = norm_info
            grads += scale_grads
            _update_running_stats(est, stats, xb.shape[0])
        est._optimizer.update_params(params, grads)
        accumulated_loss += loss * xb.shape[0]
        if interrupt.requested:
            break
    return accumulated_loss / n_samples


def _end_epoch(est, loss, n_samples, validation, rate, start):
    """Epoch bookkeeping with MLPClassifier's stopping rule; True to stop."""
    est.n_iter_ += 1
    est.loss_ = loss
    est.t_ += n_samples
    est.loss_curve_.append(loss)
    score = None
    if est.early_stopping:
        score = _update_validation(est, *validation)
    else:
        _update_training_loss(est)
    seconds = time.perf_counter() - start
    est.history_.append(
        {
            "epoch": len(est.loss_curve_),
            "loss": loss,
            "validation_score": score,
            "learning_rate": rate,
            "seconds": seconds,
        }
    )
    if est.verbose:
        val = "" if score is None else f", validation score = {score:.6f}"
        print(
            f"Iteration {est.n_iter_}, loss = {loss:.8f}{val}, "
            f"{seconds:.2f} s, {n_samples / seconds:.0f} img/s"
        )
    est._optimizer.iteration_ends(est.t_)
    if est._no_improvement_count > est.n_iter_no_change:
        what = "Validation score" if est.early_stopping else "Training loss"
        msg = (
            f"{what} did not improve more than tol={est.tol:f} for "
            f"{est.n_iter_no_change} consecutive epochs."
        )
        if est._optimizer.trigger_stopping(msg, est.verbose):
            return True
        est._no_improvement_count = 0
    return False


class _InterruptAfterBatch:
    """Turn Ctrl-C during fit into a request to stop after the current batch.

    A KeyboardInterrupt raised at an arbitrary point could leave the weights
    half-updated; instead the SIGINT handler only sets a flag that the batch
    loop reads. Only the main thread can install signal handlers: elsewhere
    this does nothing and Ctrl-C behaves as usual.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._handler)
            except ValueError:  # e.g. an embedded interpreter
                self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _diverged(est):
    raise ValueError(
        f"Training diverged in epoch {est.n_iter_ + 1}: the loss or the "
        "weights became non-finite. Use a smaller learning_rate_init "
        f"(currently {est.learning_rate_init}) or scale the input features."
    )


def _update_validation(est, X_val, y_val, sw_val):
    score = accuracy_score(y_val, est._predict(X_val), sample_weight=sw_val)
    est.validation_scores_.append(score)
    if score < est.best_validation_score_ + est.tol:
        est._no_improvement_count += 1
    else:
        est._no_improvement_count = 0
    if score > est.best_validation_score_:
        est.best_validation_score_ = score
        est._best_state = [a.copy() for a in model_state(est)]
    return score


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
