"""CNNClassifier: a convolutional network with MLPClassifier's interface."""

import copy
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, gen_batches
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    unique_labels,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    validate_data,
)

from ._image import check_sample_shape, resolve_image_shape, split_images
from ._losses import OUTPUTS
from ._network import build_architecture, forward, initialize
from ._optimizers import make_optimizer
from ._training import fit_stochastic

# Activation values (not bytes) one prediction chunk may hold at its widest
# layer: 16M values is 64 MB in float32, whatever the number of samples.
_PREDICT_CHUNK_VALUES = 2**24


def _compute_dtype(X):
    """float64 input computes in float64; everything else in float32.

    float32 halves memory and doubles GEMM speed, which is what images
    (uint8, bool, float32) want; float64 data asks for float64 explicitly.
    """
    dtypes = getattr(X, "dtypes", None)  # a pandas DataFrame
    if dtypes is not None and not isinstance(dtypes, np.dtype):
        is_float64 = [isinstance(d, np.dtype) and d == np.float64 for d in dtypes]
        return np.float64 if is_float64 and all(is_float64) else np.float32
    dtype = getattr(X, "dtype", None)
    return np.float64 if dtype == np.float64 else np.float32


class CNNClassifier(ClassifierMixin, BaseEstimator):
    """DOCSTRING"""

    _parameter_constraints: dict = {
        "image_shape": [None, "array-like"],
        "conv_filters": ["array-like", Interval(Integral, 1, None, closed="left")],
        "kernel_size": [Interval(Integral, 1, None, closed="left")],
        "pool_size": [Interval(Integral, 1, None, closed="left")],
        "padding": [StrOptions({"valid", "same"})],
        "pooling": [StrOptions({"max", "avg"})],
        "hidden_layer_sizes": [
            "array-like",
            Interval(Integral, 1, None, closed="left"),
        ],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [
            StrOptions({"auto"}),
            Interval(Integral, 1, None, closed="left"),
        ],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [
            Interval(Integral, 1, None, closed="left"),
            Options(Real, {np.inf}),
        ],
    }

    def __init__(
        self,
        *,
        image_shape=None,
        conv_filters=(32, 64),
        kernel_size=3,
        pool_size=2,
        padding="valid",
        pooling="max",
        hidden_layer_sizes=(64,),
        activation="relu",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="constant",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=20,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
    ):
        self.image_shape = image_shape
        self.conv_filters = conv_filters
        self.kernel_size = kernel_size
        self.pool_size = pool_size
        self.padding = padding
        self.pooling = pooling
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to images X and class labels y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), \
                (n_samples, height, width) or (n_samples, height, width, channels)
            Training images: flattened rows in (height, width, channels) order,
            grayscale images, or channels-last images.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples' losses.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), \
                (n_samples, height, width) or (n_samples, height, width, channels)
            Training images, in any of the forms ``fit`` accepts.
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples' losses.
        classes : array-like of shape (n_classes,), default=None
            All the classes across calls. Required on the first call, ignored
            (if equal) on later ones; y need not contain every class.

        Returns
        -------
        self : object
            The updated estimator.
        """
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True.")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _fit(self, X, y, sample_weight, incremental, classes=None):
        # A failed call must leave the estimator as it was (or cleanly
        # unfitted): snapshot the fitted state, which is small next to the data.
        saved = {
            k: copy.deepcopy(v)
            for k, v in vars(self).items()
            if k.endswith("_") or k.startswith("_")
        }
        try:
            return self._fit_unguarded(X, y, sample_weight, incremental, classes)
        except BaseException:
            for k in [k for k in vars(self) if k.endswith("_") or k.startswith("_")]:
                delattr(self, k)
            vars(self).update(saved)
            raise

    def _fit_unguarded(self, X, y, sample_weight, incremental, classes):
        new_classes = incremental and _check_partial_fit_first_call(self, classes)
        first_pass = (
            not hasattr(self, "coefs_")
            or new_classes
            or (not self.warm_start and not incremental)
        )
        X, sample_shape = split_images(X)
        dtype = _compute_dtype(X) if first_pass else self.coefs_[0].dtype
        X, y = validate_data(self, X, y, dtype=dtype, reset=first_pass)
        check_classification_targets(y)
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=dtype, ensure_non_negative=True
            )
            if not sample_weight.any():
                raise ValueError(
                    "Sample weights must contain at least one non-zero weight."
                )
        if first_pass:
            image_shape = resolve_image_shape(
                X.shape[1], self.image_shape, sample_shape
            )
        else:
            image_shape = self.image_shape_
            check_sample_shape(sample_shape, image_shape)

        Y = self._encode_targets(y, first_pass and not incremental, incremental)
        if first_pass:
            self._initialize(image_shape, Y.shape[1], dtype)
        elif not incremental:
            # a warm-started fit runs a fresh optimizer from the current weights
            self._optimizer = make_optimizer(self, self.coefs_ + self.intercepts_)
        fit_stochastic(self, X, Y, sample_weight, incremental)
        return self

    def _encode_targets(self, y, refit_classes, incremental):
        """Binarize y, with MLPClassifier's rules for which classes are allowed."""
        if refit_classes:
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
            return self._label_binarizer.transform(y).astype(bool)
        if not hasattr(self, "_label_binarizer"):  # first partial_fit call
            self._label_binarizer = LabelBinarizer().fit(self.classes_)
        classes = unique_labels(y)
        if not incremental:
            if set(classes) != set(self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes as "
                    f"in the previous call to fit. Previously got {self.classes_}, "
                    f"`y` has {classes}."
                )
        elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
            raise ValueError(
                f"`y` has classes not in `self.classes_`. `self.classes_` has "
                f"{self.classes_}. `y` has {classes}."
            )
        return self._label_binarizer.transform(y).astype(bool)

    def _initialize(self, image_shape, n_outputs, dtype):
        self._random_state = check_random_state(self.random_state)
        multiclass = self._label_binarizer.y_type_ == "multiclass"
        self.out_activation_ = "softmax" if multiclass else "logistic"
        self.n_outputs_ = n_outputs
        self.image_shape_ = tuple(image_shape)
        self._arch = build_architecture(
            image_shape,
            _as_tuple(self.conv_filters),
            self.kernel_size,
            self.pool_size,
            self.padding,
            self.pooling,
            _as_tuple(self.hidden_layer_sizes),
            n_outputs,
            self.activation,
            self.out_activation_,
        )
        self.coefs_, self.intercepts_ = initialize(
            self._arch, self._random_state, dtype
        )
        self.n_layers_ = len(self.coefs_) + 1
        self._optimizer = make_optimizer(self, self.coefs_ + self.intercepts_)
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = np.inf
        self._best_coefs = [c.copy() for c in self.coefs_]
        self._best_intercepts = [b.copy() for b in self.intercepts_]

    # -------------------------------------------------------------- predict

    def _validate_predict_input(self, X):
        check_is_fitted(self)
        X, sample_shape = split_images(X)
        X = validate_data(self, X, dtype=self.coefs_[0].dtype, reset=False)
        check_sample_shape(sample_shape, self.image_shape_)
        return X

    def _output(self, X):
        """Output-layer probabilities, (n, n_outputs_), computed in chunks."""
        n = X.shape[0]
        chunk = max(1, _PREDICT_CHUNK_VALUES // self._arch.max_values_per_sample())
        out = np.empty((n, self.n_outputs_), dtype=X.dtype)
        prob = OUTPUTS[self.out_activation_][0]
        for batch in gen_batches(n, chunk):
            xb = X[batch].reshape((-1,) + self.image_shape_)
            logits, _ = forward(
                self._arch, self.coefs_, self.intercepts_, xb, train=False
            )
            out[batch] = prob(logits)
        return out

    def _predict(self, X):
        out = self._output(X)
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), \
                (n_samples, height, width) or (n_samples, height, width, channels)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Predicted class labels.
        """
        return self._predict(self._validate_predict_input(X))

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), \
                (n_samples, height, width) or (n_samples, height, width, channels)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities of the classes, ordered as in ``classes_``.
        """
        out = self._output(self._validate_predict_input(X))
        if self.n_outputs_ == 1:
            return np.hstack([1 - out, out])
        return out

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), \
                (n_samples, height, width) or (n_samples, height, width, channels)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        return tags


def _as_tuple(value):
    if isinstance(value, Integral):
        return (int(value),)
    return tuple(value)
