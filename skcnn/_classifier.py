"""CNNClassifier: a convolutional network with MLPClassifier's interface."""

import numpy as np
from scipy.special import expit, log_expit
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight
from sklearn.utils.multiclass import (
    _check_partial_fit_first_call,
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import column_or_1d

from ._base import BaseCNN
from ._docs import build_docstring
from ._image import validate_images
from ._losses import log_softmax, softmax
from ._params import CLASSIFIER_CONSTRAINTS
from ._warn import warn


class CNNClassifier(ClassifierMixin, BaseCNN):
    _parameter_constraints: dict = CLASSIFIER_CONSTRAINTS

    __doc__ = build_docstring(
        head="""Convolutional neural network classifier.

A stack of convolution blocks (convolution -> activation -> pooling),
then fully connected hidden layers and an output layer, trained with
stochastic gradient descent or Adam on the cross-entropy loss. The
interface, training parameters and fitted attributes are those of
:class:`~sklearn.neural_network.MLPClassifier`; the engine is pure NumPy.
``transform`` returns the learned features (the last hidden layer), so
the classifier also serves as a supervised feature extractor in a
pipeline.""",
        parameters="""\
class_weight : dict, "balanced" or None, default=None
    Weights of the classes, as in LogisticRegression: a dict
    ``{class: weight}`` or "balanced" (``n_samples / (n_classes *
    bincount(y))``), multiplied into ``sample_weight``. "balanced" is not
    available in ``partial_fit``.""",
        attributes=(
            """\
classes_ : ndarray of shape (n_classes,)
    Class labels.""",
            """\
n_layers_ : int
    ``len(coefs_) + 1``, as in MLPClassifier.

n_outputs_ : int
    Number of output units: 1 for binary targets, else ``n_classes``
    (or the number of labels of a multilabel target).

out_activation_ : str
    "softmax" for multi-class targets, "logistic" for binary and
    multilabel ones.""",
        ),
        tail="""\
See Also
--------
CNNRegressor : The same network for regression.
sklearn.neural_network.MLPClassifier : Multi-layer perceptron classifier.

Examples
--------
>>> from sklearn.datasets import load_digits
>>> from skcnn import CNNClassifier
>>> X, y = load_digits(return_X_y=True)
>>> clf = CNNClassifier(conv_filters=(8,), max_iter=5, random_state=0)
>>> clf.fit(X[:500] / 16, y[:500]).image_shape_
(8, 8, 1)
>>> [w.shape for w in clf.coefs_]
[(3, 3, 1, 8), (128, 64), (64, 10)]
>>> clf.predict_proba(X[:2] / 16).shape
(2, 10)
>>> clf.transform(X[:2] / 16).shape
(2, 64)""",
        score="accuracy",
    )

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
        class_weight=None,
    ):
        super().__init__(
            image_shape=image_shape,
            data_format=data_format,
            input_scaling=input_scaling,
            conv_filters=conv_filters,
            kernel_size=kernel_size,
            pool_size=pool_size,
            padding=padding,
            pooling=pooling,
            strides=strides,
            global_pooling=global_pooling,
            batch_norm=batch_norm,
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            dropout=dropout,
            augment=augment,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            max_steps=max_steps,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
        )
        self.class_weight = class_weight

    # ------------------------------------------------------------------
    # Hooks of BaseCNN
    # ------------------------------------------------------------------

    def _first_partial_fit(self, classes):
        return _check_partial_fit_first_call(self, classes)

    def _check_targets(self, y):
        check_classification_targets(y)
        if (
            y.ndim == 2
            and y.shape[1] > 1
            and type_of_target(y) == "multilabel-indicator"
            and (np.count_nonzero(y, axis=1) == 1).all()
        ):
            warn(
                f"y is a 2-D indicator array with exactly one 1 per row "
                f"(one-hot encoded, {y.shape[1]} columns): it is fitted as "
                "multilabel, one independent logistic output per column. For "
                "single-label classes with a softmax output pass "
                "y.argmax(axis=1) instead."
            )
        return y

    def _sample_weights(self, y, sample_weight, incremental):
        """The given sample weights times the ``class_weight`` ones."""
        if self.class_weight is None:
            return sample_weight
        if incremental and self.class_weight == "balanced":
            raise ValueError(
                "class_weight='balanced' is not supported by partial_fit: the "
                "class frequencies of one chunk are not those of the data. Pass "
                "a dict, e.g. from sklearn.utils.class_weight."
                "compute_class_weight('balanced', classes=..., y=y_all)."
            )
        if isinstance(self.class_weight, dict):
            _check_class_weight_values(self.class_weight)
        if incremental and y.ndim == 1 and isinstance(self.class_weight, dict):
            # by the classes declared on the first call: compute_sample_weight
            # asks for every weighted class in this chunk, which partial_fit
            # does not (a chunk need not hold every class)
            per_class = compute_class_weight(
                self.class_weight, classes=self.classes_, y=y
            )
            weights = per_class[np.searchsorted(self.classes_, y)]
        else:
            weights = compute_sample_weight(self.class_weight, y)
        dtype = np.float64 if sample_weight is None else sample_weight.dtype
        weights = weights.astype(dtype)
        return weights if sample_weight is None else sample_weight * weights

    def _encode(self, y, first_pass, incremental):
        """Binarize y, with MLPClassifier's rules for which classes are allowed."""
        if first_pass and not incremental:
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
            return self._label_binarizer.transform(y).astype(bool)
        if not hasattr(self, "_label_binarizer"):  # first partial_fit call
            multilabel = type_of_target(y).startswith("multilabel")
            self._label_binarizer = LabelBinarizer().fit(
                y if multilabel else self.classes_
            )
        if incremental and y.ndim == 1 and not self._multilabel():
            Y = _one_hot(y, self.classes_)
            if Y is not None:
                return Y
        classes = unique_labels(y)
        if not incremental:
            if set(classes) != set(self.classes_):
                raise ValueError(
                    "warm_start can only be used where `y` has the same classes "
                    f"as in the previous call to fit. Previously got "
                    f"{self.classes_}, `y` has {classes}."
                )
        elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
            raise ValueError(
                f"`y` has classes not in `classes_`. `classes_` has "
                f"{self.classes_}. `y` has {classes}."
            )
        return self._label_binarizer.transform(y).astype(bool)

    def _out_activation(self):
        multiclass = self._label_binarizer.y_type_ == "multiclass"
        return "softmax" if multiclass else "logistic"

    def _multilabel(self):
        return self._label_binarizer.y_type_.startswith("multilabel")

    def _check_validation_targets(self, y_val, X_val):
        """An explicit validation set's labels: known classes, one per row."""
        if self._multilabel():
            y_val = np.asarray(y_val)
            if y_val.ndim != 2 or y_val.shape[1] != self.n_outputs_:
                raise ValueError(
                    f"y_val must be a ({X_val.shape[0]}, {self.n_outputs_}) label "
                    f"indicator array; got shape {y_val.shape}."
                )
            return y_val
        y_val = column_or_1d(y_val)
        if len(y_val) != X_val.shape[0]:
            raise ValueError(
                f"X_val has {X_val.shape[0]} samples but y_val has {len(y_val)}."
            )
        unknown = np.setdiff1d(unique_labels(y_val), self.classes_)
        if len(unknown):
            raise ValueError(f"y_val has classes not in the training data: {unknown}.")
        return y_val

    def _stratify(self, Y):
        """The validation split's strata and number of classes."""
        if self._multilabel():
            return None, 1  # as MLPClassifier: no stratification
        stratify = Y if self.n_outputs_ == 1 else Y.argmax(axis=1)
        return stratify, len(np.unique(stratify, axis=0))

    def _decode(self, Y):
        return self._label_binarizer.inverse_transform(Y)

    def _validation_score(self, validation):
        predicted = self._predict(validation.X)
        return accuracy_score(
            validation.y, predicted, sample_weight=validation.sample_weight
        )

    def _target_state(self):
        """What a model file stores about the targets: (JSON, arrays)."""
        classes = self.classes_
        stored = classes.astype(str) if classes.dtype.kind == "O" else classes
        return {"label_type": self._label_binarizer.y_type_}, {"classes_": stored}

    def _restore_target_state(self, meta, arrays):
        self.classes_ = arrays["classes_"]
        if meta["label_type"].startswith("multilabel"):
            indicator = np.eye(len(self.classes_), dtype=int)
            self._label_binarizer = LabelBinarizer().fit(indicator)
        else:
            self._label_binarizer = LabelBinarizer().fit(self.classes_)

    # ------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *image)
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
        return self._partial_fit(X, y, sample_weight, classes)

    def _predict(self, X):
        out = self._forward(X)
        if self.n_outputs_ == 1:
            out = out.ravel()
        binarizer = self._label_binarizer
        if binarizer.y_type_ == "multiclass" and not binarizer.sparse_input_:
            # what inverse_transform does for these outputs (the first most
            # probable class), without its validation: 20 us of one image's
            # predict
            return binarizer.classes_[out.argmax(axis=1)]
        return binarizer.inverse_transform(out)

    def predict(self, X):
        """Predict class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *image)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Predicted class labels.
        """
        return self._predict(validate_images(self, X))

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *image)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities of the classes, ordered as in ``classes_``.
        """
        return self._probabilities(validate_images(self, X), log=False)

    def _probabilities(self, X, log):
        """(Log-)probabilities from the logits, precise on both sides.

        A binary model's complement is not ``1 - p``: a confident float32
        model would round it to 0 (and its log to -inf). Both sides come
        from the logit z: ``expit(-z)``, ``expit(z)``.
        """
        if len(self.classes_) == 1 and not self._multilabel():
            # fitted on one class: certain of it, one column as classes_ has
            return np.full((len(X), 1), 0.0 if log else 1.0, self.coefs_[0].dtype)
        logits = self._forward(X, stop=len(self._net.layers))
        if self.out_activation_ == "softmax":
            return log_softmax(logits) if log else softmax(logits)
        if self.n_outputs_ == 1:  # binary
            logits = np.hstack([-logits, logits])
        return log_expit(logits) if log else expit(logits)

    def predict_log_proba(self, X):
        """Logarithm of the class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *image)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``, computed from the logits: finite where
            the probability rounds to 0.
        """
        return self._probabilities(validate_images(self, X), log=True)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _check_class_weight_values(class_weight):
    """A sample weight per class must be a finite, non-negative number: a
    negative one would train away from its class, a NaN diverge."""
    try:
        values = np.asarray(list(class_weight.values()), dtype=np.float64)
    except (TypeError, ValueError):
        values = np.array([np.nan])
    if not (np.isfinite(values).all() and (values >= 0).all()):
        raise ValueError(
            "class_weight must map classes to finite, non-negative numbers; "
            f"got {class_weight!r}."
        )


def _one_hot(y, classes):
    """``LabelBinarizer``'s encoding of labels ``y`` of the sorted
    ``classes`` (one column for two classes), or None if a label is not one
    of them or cannot be compared with them (the general path says why).

    A stream of ``partial_fit`` calls encodes every minibatch: sklearn's
    checks (``unique_labels``, ``label_binarize``) took ~0.5 ms a call, a
    sixth of a 32-image step of the reference network.
    """
    if len(classes) < 2 or len(y) == 0:
        return None
    numeric = "biuf"
    if (classes.dtype.kind in numeric) != (y.dtype.kind in numeric):
        return None  # numbers and strings (NumPy < 2 compares them as False)
    try:
        index = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
        known = bool(np.all(classes[index] == y))
    except (TypeError, ValueError):  # labels that do not compare
        return None
    if not known:
        return None
    Y = np.zeros((len(y), len(classes)), dtype=bool)
    Y[np.arange(len(y)), index] = True
    return Y[:, 1:] if len(classes) == 2 else Y
