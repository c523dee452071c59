"""The stochastic training loop, with MLPClassifier's semantics.

``fit_stochastic`` drives a :class:`~skcnn.CNNClassifier` through its
epochs and minibatches: shuffling, dropout masks, augmentation, the
optimizer step, batch-norm running statistics, MLPClassifier's stopping
rule, ``history_`` / verbose output, Ctrl-C and scikit-learn callbacks.
"""

import signal
import threading
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.utils import gen_batches

from ._augment import augment_batch
from ._malloc import tune_malloc
from ._network import loss_and_gradients
from ._optimizers import cosine_factor
from ._parallel import blas_threads, single_threaded_blas


def fit_stochastic(
    est, X, Y, sample_weight, incremental, validation=None, callbacks=(None, None)
):
    """Run up to ``max_iter`` epochs (one with ``incremental``).

    Returns True when Ctrl-C ended training early (after a completed batch).

    ``validation`` is an explicit ``(X_val, y_val)`` for early stopping;
    without it ``validation_fraction`` of the data is held out.
    ``callbacks`` is scikit-learn's callback context of the fit (or None)
    and the labels to report with it: each epoch is a task and each
    minibatch a sub-task; a callback may stop training at an epoch's end.
    """
    context, labels = callbacks
    X_all = X
    if est.early_stopping:
        X, Y, sample_weight, validation = _validation_split(
            est, X, Y, sample_weight, validation
        )
    n_samples = X.shape[0]
    batch_size = _batch_size(est, n_samples)
    params = model_state(est)
    est.n_iter_ = 0
    sync_stopping_state(est)
    tune_malloc()
    # threads to work through a batch's parts: the speed follows the BLAS
    # limit in force, the results do not (see skcnn._parallel)
    n_threads = blas_threads()
    with single_threaded_blas(), _InterruptAfterBatch() as interrupt:
        for _ in range(est.max_iter):
            start = time.perf_counter()
            rate = _current_rate(est)
            epoch = None
            if context is not None:
                # minibatch tasks only when some callback listens (a progress
                # bar): they cost a little Python per step
                listening = bool(getattr(est, "_skl_callbacks", None))
                n_batches = -(-n_samples // batch_size) if listening else 0
                epoch = context.subcontext(task_name="epoch", max_subtasks=n_batches)
                epoch.call_on_fit_task_begin(estimator=est, X=X_all, y=labels)
            loss, n_seen = _run_epoch(
                est, X, Y, sample_weight, batch_size, n_threads, interrupt, epoch
            )
            if interrupt.requested and n_seen < n_samples:
                # Ctrl-C in mid-epoch: the weights are those of the last
                # completed batch; a partial epoch is no loss_curve_ entry.
                # The caller raises KeyboardInterrupt.
                est.t_ += n_seen
                return True
            if not all(np.isfinite(p).all() for p in params):
                _diverged(est)
            stop = _end_epoch(est, loss, n_samples, validation, rate, start)
            if epoch is not None:
                stop |= epoch.call_on_fit_task_end(
                    estimator=est,
                    X=X_all,
                    y=labels,
                    reconstruction_attributes=snapshot(est),
                )
            if stop or incremental or interrupt.requested:
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
    return interrupt.requested


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


def _run_epoch(est, X, Y, sample_weight, batch_size, n_threads, interrupt, epoch):
    """One pass over the data: (mean minibatch loss, samples trained on).

    Stops early, after a completed batch, when Ctrl-C was pressed.
    """
    dtype = est.coefs_[0].dtype
    params = trainable(est)
    norms = batch_norms(est)
    n_samples = X.shape[0]
    order = est._random_state.permutation(n_samples) if est.shuffle else None
    accumulated_loss = 0.0
    n_seen = 0  # samples of this epoch passed so far
    for batch in gen_batches(n_samples, batch_size):
        n_seen = batch.stop
        idx = batch if order is None else order[batch]
        sw = None if sample_weight is None else sample_weight[idx]
        if sw is not None and not sw.any():
            continue  # a batch of zero weight carries no gradient
        task = None
        if epoch is not None and epoch.max_subtasks:
            task = epoch.subcontext(task_name="batch")
        if task is not None:
            task.call_on_fit_task_begin(estimator=est)
        xb = augment_batch(est, X[idx].reshape((-1,) + est.image_shape_))
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
        if task is not None:
            task.call_on_fit_task_end(estimator=est)
        if interrupt.requested:
            break
    return accumulated_loss / n_samples, n_seen


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
    half-updated; instead the first SIGINT only sets a flag that the batch
    loop reads, and the fit raises KeyboardInterrupt once the model is
    consistent. A second Ctrl-C (a batch that takes too long) raises at once;
    the fit then rolls back to the state before the call. Only the main
    thread can install signal handlers: elsewhere this does nothing and
    Ctrl-C behaves as usual.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
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


def sync_stopping_state(est, reset=False):
    """Make the stopping bookkeeping match the current ``early_stopping``.

    ``reset`` starts it afresh (a new fit). Otherwise it is kept, except
    that ``set_params(early_stopping=...)`` between a fit and a warm-started
    fit or ``partial_fit`` switches it to the other rule's attributes (with
    a fresh patience count) instead of failing on the other rule's Nones.
    """
    switched = (est.validation_scores_ is None) == bool(est.early_stopping)
    if not (reset or switched):
        return
    est._no_improvement_count = 0
    if est.early_stopping:
        est.validation_scores_ = []
        est.best_validation_score_ = -np.inf
        est.best_loss_ = None
        est._best_state = [a.copy() for a in model_state(est)]
    else:
        est.validation_scores_ = None
        est.best_validation_score_ = None
        est.best_loss_ = np.inf


def _update_training_loss(est):
    if est.loss_curve_[-1] > est.best_loss_ - est.tol:
        est._no_improvement_count += 1
    else:
        est._no_improvement_count = 0
    est.best_loss_ = min(est.best_loss_, est.loss_curve_[-1])


def snapshot(est):
    """Lazily, the attributes that make a copy of est predict as it does now."""

    def attributes():
        names = ["coefs_", "intercepts_", "batch_norm_scales_"]
        names += ["batch_norm_means_", "batch_norm_vars_"]
        return {
            k: None if getattr(est, k) is None else [a.copy() for a in getattr(est, k)]
            for k in names
        }

    return attributes
