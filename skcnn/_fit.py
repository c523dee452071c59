"""Fitting a CNNClassifier: validation, fitted state, failure safety.

``guarded_fit`` is what ``fit`` and ``partial_fit`` run: it validates the
input, sets up (or reuses) the classes, architecture, weights and optimizer
with MLPClassifier's rules, runs the epochs (``_training``) and, if
anything fails, puts the estimator back as it was.
"""

import copy
from numbers import Integral

import numpy as np
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state
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

from ._augment import check_augment

try:  # scikit-learn >= 1.9 has a callback API (progress bars, monitors)
    from sklearn.callback import CallbackSupportMixin as CallbackSupport
except ImportError:  # older releases: no callbacks, nothing else changes
    CallbackSupport = None
from ._image import (
    check_magnitude,
    check_sample_shape,
    compute_dtype,
    resolve_image_shape,
    split_images,
    validate_images,
)
from ._memory import check_fit_memory
from ._network import build_architecture, initialize
from ._optimizers import make_optimizer
from ._training import (
    fit_stochastic,
    model_state,
    snapshot,
    sync_stopping_state,
    trainable,
)


def guarded_fit(est, X, y, sample_weight, incremental, classes, validation):
    """fit / partial_fit: validate, set up or reuse the state, train.

    ``validation`` is fit's ``(X_val, y_val)``, both None when not given.
    """
    if validation is not None:
        X_val, y_val = validation
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        if X_val is not None and not est.early_stopping:
            raise ValueError("X_val and y_val are used with early_stopping=True only.")
        validation = None if X_val is None else validation
    # A failed call must leave the estimator as it was (or cleanly
    # unfitted): snapshot the fitted state, which is small next to the data.
    saved = {k: copy.deepcopy(v) for k, v in vars(est).items() if _is_state(k)}
    try:
        interrupted = _fit_unguarded(
            est, X, y, sample_weight, incremental, classes, validation
        )
    except BaseException:
        for k in [k for k in vars(est) if _is_state(k)]:
            delattr(est, k)
        vars(est).update(saved)
        raise
    if interrupted:
        # Ctrl-C: the model is consistent (the weights of the last completed
        # batch) and stays fitted, but the caller -- a script, a loop, a
        # GridSearchCV -- must stop too: the user asked for control back.
        raise KeyboardInterrupt(
            f"{type(est).__name__} training interrupted by Ctrl-C after "
            f"{est.n_iter_} complete epoch(s); the model keeps the weights of "
            "the last completed minibatch and can be used or trained further."
        )
    return est


def _is_state(name):
    """Fitted state: public ``*_`` and private ``_*`` attributes, except the
    callbacks' (set by the user or by sklearn around the fit, never copied)."""
    if name.startswith(("_skl_", "_callback", "_parent_callback")):
        return False
    return name.endswith("_") or name.startswith("_")


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
    check_memory_before_copy(est, X, sample_shape, dtype, first_pass, incremental)
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
        initialize_state(est, image_shape, Y.shape[1], dtype, X.shape[0])
    elif not incremental:
        # a warm-started fit runs a fresh optimizer from the current weights
        est._optimizer = make_optimizer(est, trainable(est))
    if validation is not None:
        X_val = validate_images(est, validation[0])
        y_val = check_validation_targets(est, validation[1], X_val)
        validation = (X_val, y_val)
    callbacks = None
    if hasattr(est, "_init_callback_context"):  # scikit-learn >= 1.9
        callbacks = est._init_callback_context(
            task_name="fit", max_subtasks=1 if incremental else est.max_iter
        )
        callbacks.call_on_fit_task_begin(estimator=est, X=X, y=y)
    interrupted = fit_stochastic(
        est, X, Y, sample_weight, incremental, validation, (callbacks, y)
    )
    if callbacks is not None:
        callbacks.call_on_fit_task_end(
            estimator=est, X=X, y=y, reconstruction_attributes=snapshot(est)
        )
    return interrupted


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


def architecture(est, image_shape=None, n_outputs=None):
    """The resolved network of est's parameters, image shape and outputs.

    ``image_shape`` and ``n_outputs`` default to the fitted ones; given, the
    network is a plan (for the memory check) whose output activation is
    irrelevant.
    """
    planned = n_outputs is not None
    return build_architecture(
        est.image_shape_ if image_shape is None else image_shape,
        layer_sizes(est.conv_filters, "conv_filters", True),
        est.kernel_size,
        est.pool_size,
        est.padding,
        est.pooling,
        layer_sizes(est.hidden_layer_sizes, "hidden_layer_sizes", True),
        est.n_outputs_ if n_outputs is None else n_outputs,
        est.activation,
        "logistic" if planned else est.out_activation_,
        strides=est.strides,
        global_pooling=est.global_pooling,
        batch_norm=est.batch_norm,
    )


def check_memory_before_copy(est, X, sample_shape, dtype, first_pass, incremental):
    """The memory check of a fit, before ``validate_data`` copies X.

    The conversion of X to the compute dtype (uint8 images to float32, say)
    is a copy of the whole data set: it counts too. A first fit's network
    needs the number of outputs, known only once y is validated; 1 is a
    lower bound here, and ``initialize_state`` checks the exact network.
    """
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2 or min(shape) < 1:
        return  # validate_data reports it
    n_samples, n_features = int(shape[0]), int(shape[1])
    if first_pass:
        try:
            image_shape = resolve_image_shape(n_features, est.image_shape, sample_shape)
            arch = architecture(est, image_shape, n_outputs=1)
        except ValueError:
            return  # reported below, in the usual order
    else:
        arch = est._arch
    itemsize = np.dtype(dtype).itemsize
    copy = (
        0 if getattr(X, "dtype", None) == dtype else n_samples * n_features * itemsize
    )
    check_fit_memory(
        est,
        arch,
        n_samples,
        dtype,
        new_model=first_pass,
        new_optimizer=not incremental,
        copy_bytes=copy,
    )


def initialize_state(est, image_shape, n_outputs, dtype, n_samples):
    est._random_state = check_random_state(est.random_state)
    multiclass = est._label_binarizer.y_type_ == "multiclass"
    est.out_activation_ = "softmax" if multiclass else "logistic"
    est.n_outputs_ = n_outputs
    est.image_shape_ = tuple(image_shape)
    est._arch = architecture(est)
    # before any weight is allocated: a flatten of a large map into a dense
    # layer can need more memory than the machine has
    check_fit_memory(
        est, est._arch, n_samples, dtype, new_model=True, new_optimizer=True
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
    est.validation_scores_ = None
    sync_stopping_state(est, reset=True)
    est._best_state = [a.copy() for a in model_state(est)]


def layer_sizes(value, name, allow_empty):
    """A layer-size parameter (an int or a sequence of ints) as a tuple."""
    sizes = (value,) if isinstance(value, Integral) else tuple(value)
    if not all(isinstance(s, Integral) and not isinstance(s, bool) for s in sizes):
        raise ValueError(f"{name} must hold integers; got {value!r}.")
    if any(s < 1 for s in sizes) or (not sizes and not allow_empty):
        raise ValueError(f"{name} must be positive integers; got {value!r}.")
    return tuple(int(s) for s in sizes)
