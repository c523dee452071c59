"""The base of CNNClassifier and CNNRegressor: one engine, two estimators.

:class:`BaseCNN` owns the parameters, ``fit`` / ``partial_fit`` with their
validation and rollback, the fitted state, prediction in bounded chunks and
``transform``. A subclass supplies a few hooks -- how targets are encoded
and decoded, which output layer and loss, how a validation set is drawn
and scored -- as MLPClassifier / MLPRegressor do over their common base.
"""

from dataclasses import dataclass

from scipy.sparse import issparse
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils.validation import (
    _check_sample_weight,
    column_or_1d,
    validate_data,
)

from . import _built_from as built_from
from . import _rollback as rollback
from ._engine import predict_rows
from ._export import ExportMixin
from ._image import (
    channel_range,
    channel_statistics,
    check_magnitude,
    check_sample_shape,
    compute_dtype,
    resolve_image_shape,
    rows_to_channels_last,
    split_images,
    validate_images,
)
from ._loop import TrainingData, TrainingLoop, ValidationSet
from ._memory import (
    check_fit_memory,
    check_memory_before_copy,
    check_predict_memory,
)
from ._network import Design, Weights, build_network, initialize
from ._optimizers import make_optimizer
from ._params import PARAMETER_CONSTRAINTS, check_augment
from ._workspace import Workspace

try:  # scikit-learn >= 1.9 has a callback API (progress bars, monitors)
    from sklearn.callback import CallbackSupportMixin as CallbackSupport
except ImportError:  # older releases: no callbacks, nothing else changes
    CallbackSupport = None


@dataclass(frozen=True)
class FitRequest:
    """What one ``fit`` or ``partial_fit`` call asks for."""

    X: object
    y: object
    sample_weight: object = None
    incremental: bool = False  # partial_fit: one epoch, keep the state
    classes: object = None  # partial_fit's classes (classifier)
    X_val: object = None  # fit's explicit early-stopping validation set
    y_val: object = None


class BaseCNN(
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    TrainingLoop,
    ExportMixin,
    BaseEstimator,
):
    """Parameters, fitting and prediction shared by the skcnn estimators.

    The transformer mixins are bases here, not of the estimators: scikit-learn
    wraps ``transform`` for ``set_output`` only in the class that defines it.
    """

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS
    _y_numeric = False  # regression targets are converted to floats

    if CallbackSupport is not None:  # scikit-learn >= 1.9; found by duck typing
        set_callbacks = CallbackSupport.set_callbacks
        _init_callback_context = CallbackSupport._init_callback_context

    def __init__(
        self,
        *,
        image_shape=None,
        data_format="channels_last",
        input_scaling="minmax",
        conv_filters=(32, 64),
        kernel_size=3,
        pool_size=2,
        padding="auto",
        pooling="max",
        strides=1,
        global_pooling=False,
        batch_norm=False,
        hidden_layer_sizes=(64,),
        activation="relu",
        dropout=0.25,
        augment=None,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate="anneal",
        learning_rate_init=0.001,
        power_t=0.5,
        max_iter=200,
        max_steps=9000,
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
        self.data_format = data_format
        self.input_scaling = input_scaling
        self.conv_filters = conv_filters
        self.kernel_size = kernel_size
        self.pool_size = pool_size
        self.padding = padding
        self.pooling = pooling
        self.strides = strides
        self.global_pooling = global_pooling
        self.batch_norm = batch_norm
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.dropout = dropout
        self.augment = augment
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.max_steps = max_steps
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

    # ------------------------------------------------------------------
    # Hooks of the concrete estimators
    # ------------------------------------------------------------------

    def _first_partial_fit(self, classes):
        """Whether this partial_fit call starts a new model."""
        return not hasattr(self, "coefs_")

    def _check_targets(self, y):
        """Validated targets, before encoding."""
        return y

    def _sample_weights(self, y, sample_weight, incremental):
        """Sample weights the estimator adds (class weights), or the given."""
        return sample_weight

    def _encode(self, y, first_pass, incremental):
        """Targets as an (n, n_outputs) array for the loss; a first pass
        (a new model) learns the encoding afresh, except what a first
        ``partial_fit`` call was given (its ``classes``)."""
        raise NotImplementedError

    def _out_activation(self):
        raise NotImplementedError

    def _check_validation_targets(self, y_val, X_val):
        """fit's ``y_val``, validated against ``X_val``."""
        raise NotImplementedError

    def _stratify(self, Y):
        """(strata for the validation split or None, number of classes)."""
        raise NotImplementedError

    def _decode(self, Y):
        """Encoded targets or outputs back to what ``predict`` returns."""
        raise NotImplementedError

    def _validation_score(self, validation):
        """Early stopping's score of a :class:`ValidationSet`."""
        raise NotImplementedError

    # ------------------------------------------------------------------
    # Fitting
    # ------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None, X_val=None, y_val=None):
        """Fit the model to images X and targets y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), \
                (n_samples, height, width) or (n_samples, height, width, channels)
            Training images: flattened rows in (height, width, channels) order,
            grayscale images, or channels-last images.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets: class labels (a label indicator array for multilabel
            classification) or real values.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples' losses.
        X_val, y_val : array-like, default=None
            An explicit validation set for ``early_stopping=True``, used
            instead of holding out ``validation_fraction`` of X.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        if (X_val is None) != (y_val is None):
            raise ValueError("Pass both X_val and y_val, or neither.")
        if X_val is not None and not self.early_stopping:
            raise ValueError("X_val and y_val are used with early_stopping=True only.")
        return self._guarded_fit(
            FitRequest(X, y, sample_weight, X_val=X_val, y_val=y_val)
        )

    def _partial_fit(self, X, y, sample_weight=None, classes=None):
        if self.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True.")
        request = FitRequest(X, y, sample_weight, incremental=True, classes=classes)
        return self._guarded_fit(request)

    def _guarded_fit(self, request):
        """Validate, set up or reuse the state, train; on failure roll back."""
        # A failed call must leave the estimator as it was (or cleanly
        # unfitted): snapshot the fitted state, which is small next to the data.
        saved = rollback.snapshot(self)
        try:
            interrupted = self._fit_unguarded(request)
        except BaseException:
            rollback.restore(self, saved)
            raise
        if interrupted:
            # Ctrl-C: the model is consistent (the weights of the last
            # completed batch) and stays fitted, but the caller -- a script, a
            # loop, a GridSearchCV -- must stop too: the user asked for
            # control back.
            raise KeyboardInterrupt(
                f"{type(self).__name__} training interrupted by Ctrl-C after "
                f"{self.n_iter_} complete epoch(s); the model keeps the weights "
                "of the last completed minibatch and can be used or trained "
                "further."
            )
        return self

    def _fit_unguarded(self, request):
        incremental = request.incremental
        # evaluated first: the classifier's hook also validates ``classes``
        restart = incremental and self._first_partial_fit(request.classes)
        first_pass = (
            restart
            or not hasattr(self, "coefs_")
            or (not self.warm_start and not incremental)
        )
        check_augment(self.augment)
        if not incremental:  # before the memory check: fit makes its own
            self._workspace = None
        if not first_pass:
            built_from.check_unchanged(self)
        X, sample_shape = split_images(request.X, self.data_format)
        if not first_pass:
            check_sample_shape(sample_shape, self.image_shape_)
        dtype = compute_dtype(X) if first_pass else self.coefs_[0].dtype
        check_memory_before_copy(
            self, X, sample_shape, dtype, (first_pass, incremental)
        )
        X, y = validate_data(
            self,
            X,
            request.y,
            dtype=dtype,
            reset=first_pass,
            multi_output=True,
            y_numeric=self._y_numeric,
        )
        if issparse(y):  # a sparse indicator (MultiLabelBinarizer's): small
            y = y.toarray()
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_magnitude(X)
        y = self._check_targets(y)
        # before the class weights: an unknown class gets the class check's error
        Y = self._encode(y, first_pass, incremental)
        sample_weight = request.sample_weight
        if sample_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=X.dtype, ensure_non_negative=True
            )
        sample_weight = self._sample_weights(y, sample_weight, incremental)
        if sample_weight is not None:
            if not sample_weight.any():
                raise ValueError(
                    "Sample weights must contain at least one non-zero weight."
                )
            sample_weight = sample_weight.astype(X.dtype, copy=False)
        if first_pass:
            image_shape = resolve_image_shape(
                X.shape[1], self.image_shape, sample_shape
            )
        else:
            image_shape = self.image_shape_
        if sample_shape is None:  # rows in data_format order
            X = rows_to_channels_last(X, image_shape, self.data_format)
        if first_pass:
            self._fit_input_scaling(X, image_shape[2], sample_weight)
            self._initialize(image_shape, Y.shape[1], dtype, X.shape[0])
        elif not incremental:
            # a warm-started fit runs a fresh optimizer from the current weights
            self._optimizer = make_optimizer(self, self._weights().trainable())
        validation = None
        if request.X_val is not None:
            X_val = validate_images(self, request.X_val)
            y_val = request.y_val
            y_val = self._check_validation_targets(
                y_val.toarray() if issparse(y_val) else y_val, X_val
            )
            validation = ValidationSet(X_val, y_val)
        data = TrainingData(X, Y, sample_weight, y)
        interrupted = self._train(data, validation, incremental)
        return interrupted

    def _initialize(self, image_shape, n_outputs, dtype, n_samples):
        """A new model: network, weights, optimizer and bookkeeping."""
        self._random_state = check_random_state(self.random_state)
        self.n_outputs_ = n_outputs
        self.out_activation_ = self._out_activation()
        self.image_shape_ = tuple(image_shape)
        self._fitted_params = built_from.record(self)
        self._net = self._build_network()
        # before any weight is allocated: a flatten of a large map into a
        # dense layer can need more memory than the machine has
        check_fit_memory(
            self, self._net, n_samples, dtype, new_model=True, new_optimizer=True
        )
        weights = initialize(self._net, self._random_state, dtype)
        self._set_weights(weights)
        self.n_layers_ = len(self.coefs_) + 1
        self._optimizer = make_optimizer(self, weights.trainable())
        self.n_iter_ = 0
        self.t_ = 0
        self.loss_curve_ = []
        self.history_ = []
        self.validation_scores_ = None
        self._sync_stopping_state(reset=True)

    def _fit_input_scaling(self, X, channels, sample_weight):
        """The input scaling's statistics, learned once per new model."""
        self.input_offset_ = self.input_scale_ = None
        if self.input_scaling is not None:
            statistics = {"minmax": channel_range, "standard": channel_statistics}
            offset, scale = statistics[self.input_scaling](X, channels, sample_weight)
            self.input_offset_ = offset.astype(X.dtype)
            self.input_scale_ = scale.astype(X.dtype)

    def _kept_workspace(self, incremental):
        """The workspace ``partial_fit`` keeps from call to call (None for
        ``fit``, which makes its own and gives its memory back at the end).

        Streaming data, a user calls ``partial_fit`` once per minibatch: a
        workspace per call would fault its buffers in afresh at every step
        (measured 2x slower than one call over the same minibatches on the
        reference network, 1.6x with batch norm). The memory kept is one
        step's working set; ``fit`` releases it, and it is neither pickled
        nor copied: it is scratch, not the model.
        """
        if not incremental:
            return None
        if getattr(self, "_workspace", None) is None:
            self._workspace = Workspace()
        return self._workspace

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_workspace", None)  # scratch memory, not the model
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if hasattr(self, "coefs_") and not hasattr(self, "_fitted_params"):
            # pickled before the model kept them: its parameters built it
            self._fitted_params = built_from.record(self)

    def _input_format(self):
        """The ``data_format`` prediction reads rows in: the fitted one."""
        return self._fitted_params["data_format"]

    def _build_network(self):
        """The network of the current parameters and fitted shapes."""
        return build_network(
            self.image_shape_, Design.of(self), self.n_outputs_, self.out_activation_
        )

    def _weights(self):
        """The live fitted arrays as the network's :class:`Weights`."""
        return Weights(
            self.coefs_,
            self.intercepts_,
            self.batch_norm_scales_,
            self.batch_norm_means_,
            self.batch_norm_vars_,
            self.input_offset_,
            self.input_scale_,
        )

    def _set_weights(self, weights):
        self.coefs_ = weights.coefs
        self.intercepts_ = weights.intercepts
        self.batch_norm_scales_ = weights.scales
        self.batch_norm_means_ = weights.means
        self.batch_norm_vars_ = weights.vars

    # ------------------------------------------------------------------
    # Prediction and embeddings
    # ------------------------------------------------------------------

    def _forward(self, X, stop=None):
        """Outputs (or, with ``stop``, features) for validated rows X."""
        check_predict_memory(self._net, X.shape[0], X.dtype)
        return predict_rows(self._net, self._weights(), X, self.image_shape_, stop)

    def transform(self, X):
        """The learned features of X: the last hidden layer's activations.

        These are the activations of the last hidden dense layer, or the
        flattened (or globally pooled) conv features when
        ``hidden_layer_sizes=()``; computed in bounded-memory chunks like
        ``predict``. With ``fit_transform`` this makes the estimator a
        supervised feature extractor for a following pipeline step.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *image)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_features_out)
            The features, in the model's float dtype.
        """
        X = validate_images(self, X)
        return self._forward(X, stop=self._net.embedding_end())

    @property
    def _n_features_out(self):
        """Width of ``transform``'s output (for ``get_feature_names_out``):
        the features are what the output layer reads."""
        return self._net.dense_layers[-1].n_in

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        if tags.transformer_tags is not None:
            tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags
