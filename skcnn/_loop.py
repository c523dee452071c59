"""The stochastic training loop, with MLPClassifier's semantics.

:class:`TrainingLoop` is the part of the estimators' base class that runs
the epochs and minibatches: shuffling, dropout masks, augmentation, the
optimizer step, batch-norm running statistics, MLPClassifier's stopping
rule, ``history_`` / verbose output, Ctrl-C and scikit-learn callbacks.
It calls two hooks of the concrete estimator: ``_stratify`` (how to split
off a validation set) and ``_validation_score``.
"""

import time
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import gen_batches

from . import _workspace as ws
from ._augment import augment_batch
from ._dropout import dropout_masks, row_keys
from ._engine import Batch, loss_and_gradients
from ._interrupt import InterruptAfterBatch
from ._network import Dropout
from ._optimizers import anneal_factor, cosine_factor
from ._parallel import blas_threads, single_threaded_blas
from ._params import resolve_batch_size
from ._warn import warn

# Weight of a batch's statistics in the running averages (PyTorch's default).
BATCH_NORM_MOMENTUM = 0.1


@dataclass
class TrainingData:
    """Validated rows, encoded targets (n, n_outputs) and sample weights;
    ``y`` is the targets as given, for the callbacks."""

    X: np.ndarray
    Y: np.ndarray
    sample_weight: np.ndarray = None
    y: object = None


@dataclass
class _DropoutPlan:
    """A fit call's dropout: every training row's key, a seed drawn from the
    random state, and the steps taken so far (each step's masks differ)."""

    keys: np.ndarray
    seed: int
    steps: int = 0


@dataclass(frozen=True)
class _Plan:
    """How a fit call trains: minibatch size, epochs, callback context and
    the data as given (the callbacks report it)."""

    batch_size: int
    n_epochs: int
    context: object
    given: TrainingData


@dataclass
class ValidationSet:
    """Early stopping's held-out rows, targets as ``score`` takes them."""

    X: np.ndarray
    y: np.ndarray
    sample_weight: np.ndarray = None


class TrainingLoop:
    """Epochs and minibatches of a fit (a base of the estimators)."""

    def _train(self, data, validation, incremental):
        """Run the planned epochs (one with ``incremental``).

        ``validation`` is an explicit :class:`ValidationSet` for early
        stopping; without it ``validation_fraction`` of the data is held
        out. With scikit-learn's callbacks (>= 1.9) the fit is a task, each
        epoch a sub-task and each minibatch one below; a callback may stop
        training at an epoch's end. Returns True when Ctrl-C ended training
        (after a completed minibatch).
        """
        given = data  # before the hold-out, for the callbacks
        if self.early_stopping:
            data, validation = self._hold_out(data, validation)
        n_samples = data.X.shape[0]
        batch_size = self._batch_size(n_samples)
        n_epochs = self._planned_epochs(-(-n_samples // batch_size))
        context = None
        if hasattr(self, "_init_callback_context"):  # scikit-learn >= 1.9
            context = self._init_callback_context(
                task_name="fit", max_subtasks=1 if incremental else n_epochs
            )
            context.call_on_fit_task_begin(estimator=self, X=given.X, y=given.y)
        plan = _Plan(batch_size, n_epochs, context, given)
        interrupted = self._run_epochs(data, validation, incremental, plan)
        if context is not None:
            context.call_on_fit_task_end(
                estimator=self,
                X=given.X,
                y=given.y,
                reconstruction_attributes=self._snapshot(),
            )
        return interrupted

    def _planned_epochs(self, n_batches):
        """``max_iter``, or fewer epochs when ``max_steps`` optimizer steps
        (minibatches) are reached sooner."""
        if self.max_steps is None:
            return self.max_iter
        return min(self.max_iter, -(-self.max_steps // n_batches))

    def _run_epochs(self, data, validation, incremental, plan):
        n_samples = data.X.shape[0]
        batch_size, n_epochs = plan.batch_size, plan.n_epochs
        context, given = plan.context, plan.given
        self.n_iter_ = 0
        self._sync_stopping_state()
        # threads to work through a batch's parts: the speed follows the BLAS
        # limit in force, the results do not (see skcnn._parallel)
        n_threads = blas_threads()
        dropout = self._dropout_plan(data.X)
        # one workspace for the whole fit: each step's large arrays reuse the
        # previous step's memory (see skcnn._workspace); partial_fit's lives on
        # from call to call
        kept = self._kept_workspace(incremental)
        with (
            single_threaded_blas(),
            InterruptAfterBatch() as interrupt,
            ws.workspace(kept),
        ):
            for epoch_index in range(n_epochs):
                start = time.perf_counter()
                rate = self._current_rate(
                    None if incremental else epoch_index, n_epochs
                )
                epoch = None
                if context is not None:
                    # minibatch tasks only when some callback listens (a
                    # progress bar): they cost a little Python per step
                    listening = bool(getattr(self, "_skl_callbacks", None))
                    n_batches = -(-n_samples // batch_size) if listening else 0
                    epoch = context.subcontext(
                        task_name="epoch", max_subtasks=n_batches
                    )
                    epoch.call_on_fit_task_begin(estimator=self, X=given.X, y=given.y)
                loss, n_seen = self._run_epoch(
                    data, batch_size, n_threads, interrupt, epoch, dropout
                )
                if interrupt.requested and n_seen < n_samples:
                    # Ctrl-C in mid-epoch: the weights are those of the last
                    # completed batch; a partial epoch is no loss_curve_
                    # entry. The caller raises KeyboardInterrupt.
                    self.t_ += n_seen
                    return True
                if not all(np.isfinite(p).all() for p in self._weights().state()):
                    self._diverged()
                stop = self._end_epoch(loss, n_samples, validation, rate, start)
                if epoch is not None:
                    stop |= epoch.call_on_fit_task_end(
                        estimator=self,
                        X=given.X,
                        y=given.y,
                        reconstruction_attributes=self._snapshot(),
                    )
                if stop or incremental or interrupt.requested:
                    break
                if self.n_iter_ == self.max_iter:
                    warn(
                        f"Stochastic Optimizer: Maximum iterations ({self.max_iter})"
                        " reached and the optimization hasn't converged yet.",
                        ConvergenceWarning,
                    )
        if self.early_stopping:
            # restore the best weights, in place so coefs_ stay the live arrays
            for p, best in zip(self._weights().state(), self._best_state):
                p[...] = best
        return interrupt.requested

    def _hold_out(self, data, validation):
        """Split off early stopping's validation set, unless one was given."""
        if validation is not None:
            return data, validation
        stratify, n_classes = self._stratify(data.Y)
        n_val = int(np.ceil(self.validation_fraction * data.X.shape[0]))
        if n_val < max(2, n_classes):
            per_class = f" for {n_classes} classes" if n_classes > 1 else ""
            raise ValueError(
                f"The validation set is too small: {n_val} samples{per_class}. "
                "Increase 'validation_fraction' or the size of your dataset."
            )
        sw = data.sample_weight
        split = train_test_split(
            data.X,
            data.Y,
            *([] if sw is None else [sw]),
            random_state=self._random_state,
            test_size=self.validation_fraction,
            stratify=stratify,
        )
        X, X_val, Y, Y_val = split[:4]
        sw, sw_val = split[4:] if sw is not None else (None, None)
        held_out = ValidationSet(X_val, self._decode(Y_val), sw_val)
        return TrainingData(X, Y, sw), held_out

    def _batch_size(self, n_samples):
        if self.batch_size != "auto" and self.batch_size > n_samples:
            warn(
                "Got `batch_size` less than 1 or larger than sample size. "
                "It is going to be clipped."
            )
        return resolve_batch_size(self.batch_size, n_samples)

    def _current_rate(self, epoch, n_epochs):
        """The base learning rate of the coming epoch, ``epoch`` of this fit
        call's ``n_epochs`` (the "cosine" and "anneal" schedules). A
        schedule restarts with each ``fit`` (a warm start trains again
        rather than at a rate already decayed to 0); ``partial_fit``
        (``epoch=None``) has no horizon: it trains at
        ``learning_rate_init``."""
        optimizer = self._optimizer
        schedule = {"cosine": cosine_factor, "anneal": anneal_factor}
        if self.learning_rate in schedule:
            factor = 1.0
            if epoch is not None:
                factor = schedule[self.learning_rate](epoch, n_epochs)
            optimizer.scale_learning_rate(factor)
        if hasattr(optimizer, "rate_factor"):  # Adam: the rate is bias-corrected
            return optimizer.learning_rate_init * optimizer.rate_factor
        return optimizer.learning_rate

    def _dropout_plan(self, X):
        """What this fit call's dropout masks come from (see
        ``skcnn._dropout``), or None without dropout."""
        if not self.dropout:
            return None
        seed = self._random_state.randint(2**31, size=2)
        keys = row_keys(X, self.input_offset_, self.input_scale_)
        return _DropoutPlan(keys, (int(seed[0]) << 31) | int(seed[1]))

    def _dropout_masks(self, plan, idx, dtype):
        """Inverted-dropout masks per Dropout layer for the rows ``idx`` at
        the call's next step."""
        if plan is None:
            return None
        step_seed = (plan.seed + (plan.steps << 40)) % 2**64
        plan.steps += 1
        layers = [
            (i, layer.units)
            for i, layer in enumerate(self._net.layers)
            if isinstance(layer, Dropout)
        ]
        keep = 1.0 - self.dropout
        return dropout_masks(plan.keys[idx], step_seed, layers, keep, dtype)

    def _run_epoch(self, data, batch_size, n_threads, interrupt, epoch, dropout=None):
        """One pass over the data: (mean minibatch loss, samples passed).

        Stops early, after a completed batch, when Ctrl-C was pressed.
        """
        n_samples = data.X.shape[0]
        order = self._random_state.permutation(n_samples) if self.shuffle else None
        accumulated_loss = 0.0
        n_seen = 0
        for batch in gen_batches(n_samples, batch_size):
            n_seen = batch.stop
            idx = batch if order is None else order[batch]
            sw = None if data.sample_weight is None else data.sample_weight[idx]
            if sw is not None and not sw.any():
                continue  # a batch of zero weight carries no gradient
            task = None
            if epoch is not None and epoch.max_subtasks:
                task = epoch.subcontext(task_name="batch")
                task.call_on_fit_task_begin(estimator=self)
            n = batch.stop - batch.start
            weights = self._weights()
            masks = self._dropout_masks(dropout, idx, weights.coefs[0].dtype)
            loss = self._step(_rows(data.X, idx), data.Y[idx], sw, n_threads, masks)
            accumulated_loss += loss * n
            if task is not None:
                task.call_on_fit_task_end(estimator=self)
            if interrupt.requested:
                break
        return accumulated_loss / n_samples, n_seen

    def _step(self, rows, Y, sample_weight, n_threads, masks=None):
        """One optimizer step on a minibatch; returns its loss."""
        weights = self._weights()
        dtype = weights.coefs[0].dtype
        x = augment_batch(self, rows.reshape((-1,) + self.image_shape_))
        batch = Batch(x, Y.astype(dtype), sample_weight, masks)
        alpha = 0.0 if self.solver == "adamw" else self.alpha  # adamw decays
        step = loss_and_gradients(self._net, weights, batch, alpha, n_threads)
        if not np.isfinite(step.loss):
            self._diverged()
        if step.stats is not None:
            self._update_running_stats(step.stats, len(x))
        self._optimizer.update_params(weights.trainable(), step.grads.flat())
        return step.loss

    def _update_running_stats(self, stats, n):
        """Exponential running averages of the batch means and (unbiased)
        variances."""
        m = BATCH_NORM_MOMENTUM
        for block, (mean, var), run_mean, run_var in zip(
            self._net.conv_blocks, stats, self.batch_norm_means_, self.batch_norm_vars_
        ):
            count = n * int(np.prod(block.conv_hw))  # values per channel
            unbiased = var * (count / max(count - 1, 1))
            run_mean *= 1 - m
            run_mean += m * mean
            run_var *= 1 - m
            run_var += m * unbiased

    def _end_epoch(self, loss, n_samples, validation, rate, start):
        """Epoch bookkeeping with MLPClassifier's stopping rule; True to stop."""
        self.n_iter_ += 1
        self.loss_ = loss
        self.t_ += n_samples
        self.loss_curve_.append(loss)
        score = None
        if self.early_stopping:
            score = self._update_validation(validation)
        else:
            self._update_training_loss()
        seconds = time.perf_counter() - start
        self.history_.append(
            {
                "epoch": len(self.loss_curve_),
                "loss": loss,
                "validation_score": score,
                "learning_rate": rate,
                "seconds": seconds,
            }
        )
        if self.verbose:
            val = "" if score is None else f", validation score = {score:.6f}"
            print(
                f"Iteration {self.n_iter_}, loss = {loss:.8f}{val}, "
                f"{seconds:.2f} s, {n_samples / seconds:.0f} img/s"
            )
        self._optimizer.iteration_ends(self.t_)
        if self._no_improvement_count > self.n_iter_no_change:
            what = "Validation score" if self.early_stopping else "Training loss"
            msg = (
                f"{what} did not improve more than tol={self.tol:f} for "
                f"{self.n_iter_no_change} consecutive epochs."
            )
            if self._optimizer.trigger_stopping(msg, self.verbose):
                return True
            self._no_improvement_count = 0
        return False

    def _update_validation(self, validation):
        # scored outside the workspace: once an epoch, and its arrays would
        # otherwise stay in the fit's buffers on top of the training ones
        with ws.suspended():
            score = self._validation_score(validation)
        self.validation_scores_.append(score)
        if score < self.best_validation_score_ + self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        if score > self.best_validation_score_:
            self.best_validation_score_ = score
            self._best_state = [a.copy() for a in self._weights().state()]
        return score

    def _update_training_loss(self):
        if self.loss_curve_[-1] > self.best_loss_ - self.tol:
            self._no_improvement_count += 1
        else:
            self._no_improvement_count = 0
        self.best_loss_ = min(self.best_loss_, self.loss_curve_[-1])

    def _sync_stopping_state(self, reset=False):
        """Make the stopping bookkeeping match the current ``early_stopping``.

        ``reset`` starts it afresh (a new fit). Otherwise it is kept, except
        that ``set_params(early_stopping=...)`` between a fit and a warm
        start or ``partial_fit`` switches to the other rule's attributes
        (with a fresh patience count) instead of failing on its Nones.
        """
        switched = (self.validation_scores_ is None) == bool(self.early_stopping)
        if not (reset or switched):
            return
        self._no_improvement_count = 0
        self._best_state = [a.copy() for a in self._weights().state()]
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf

    def _diverged(self):
        raise ValueError(
            f"Training diverged in epoch {self.n_iter_ + 1}: the loss or the "
            "weights became non-finite. Use a smaller learning_rate_init "
            f"(currently {self.learning_rate_init}) or scale the input features."
        )

    def _snapshot(self):
        """Lazily, the attributes that make a copy predict as self does now."""

        def attributes():
            names = ["coefs_", "intercepts_", "batch_norm_scales_"]
            names += ["batch_norm_means_", "batch_norm_vars_"]
            return {
                k: None
                if getattr(self, k) is None
                else [a.copy() for a in getattr(self, k)]
                for k in names
            }

        return attributes


def _rows(X, idx):
    """``X[idx]``: a view for a slice, else a copy into the workspace."""
    if isinstance(idx, slice):
        return X[idx]
    out = ws.empty((len(idx),) + X.shape[1:], X.dtype)
    # "clip" copies straight into ``out`` ("raise" would buffer): the
    # indices come from a permutation, all valid
    return np.take(X, idx, axis=0, out=out, mode="clip")
