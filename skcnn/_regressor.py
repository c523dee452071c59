"""CNNRegressor: a convolutional network with MLPRegressor's interface."""

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.metrics import r2_score

from ._base import BaseCNN
from ._docs import build_docstring
from ._image import validate_images


class CNNRegressor(RegressorMixin, BaseCNN):
    __doc__ = build_docstring(
        head="""Convolutional neural network regressor.

The network of :class:`CNNClassifier` with an identity output layer,
trained on MLPRegressor's squared error: ``0.5 * mean((y - pred) ** 2)``
over the samples (weighted by ``sample_weight``) and the outputs, plus
the same L2 term. ``y`` is 1-D (``predict`` returns 1-D) or 2-D for
several outputs; ``score`` is the R^2 of the predictions, which early
stopping also measures. The interface, training parameters and fitted
attributes are those of :class:`~sklearn.neural_network.MLPRegressor`;
``transform`` returns the learned features (the last hidden layer).""",
        parameters="",
        attributes=(
            "",
            """\
n_layers_ : int
    ``len(coefs_) + 1``, as in MLPRegressor.

n_outputs_ : int
    Number of outputs (columns of a 2-D ``y``; 1 for a 1-D ``y``).

out_activation_ : str
    Always "identity".""",
        ),
        tail="""\
See Also
--------
CNNClassifier : The same network for classification.
sklearn.neural_network.MLPRegressor : Multi-layer perceptron regressor.

Examples
--------
>>> import numpy as np
>>> from skcnn import CNNRegressor
>>> rng = np.random.default_rng(0)
>>> X = rng.uniform(0, 1, (200, 8, 8)).astype(np.float32)
>>> y = X[:, :4].mean(axis=(1, 2)) - X[:, 4:].mean(axis=(1, 2))
>>> reg = CNNRegressor(conv_filters=(8,), max_iter=5, random_state=0).fit(X, y)
>>> reg.predict(X[:3]).shape
(3,)
>>> reg.transform(X[:3]).shape
(3, 64)""",
        score="R^2",
    )

    _y_numeric = True

    # ------------------------------------------------------------------
    # Hooks of BaseCNN
    # ------------------------------------------------------------------

    def _encode(self, y, first_pass, incremental):
        Y = y.reshape(len(y), -1)
        if not first_pass and Y.shape[1] != self.n_outputs_:
            raise ValueError(
                f"y has {Y.shape[1]} outputs but the model was fitted with "
                f"{self.n_outputs_}."
            )
        return Y

    def _out_activation(self):
        return "identity"

    def _check_validation_targets(self, y_val, X_val):
        y_val = np.asarray(y_val, dtype=np.float64)
        if y_val.ndim == 2 and y_val.shape[1] == 1:
            y_val = y_val.ravel()
        width = 1 if y_val.ndim == 1 else y_val.shape[1]
        if len(y_val) != X_val.shape[0] or width != self.n_outputs_:
            raise ValueError(
                f"y_val must hold {X_val.shape[0]} targets of {self.n_outputs_} "
                f"output(s); got shape {y_val.shape}."
            )
        if not np.isfinite(y_val).all():
            raise ValueError("y_val contains NaN or infinity.")
        return y_val

    def _stratify(self, Y):
        return None, 1

    def _decode(self, Y):
        return Y.ravel() if self.n_outputs_ == 1 else Y

    def _validation_score(self, validation):
        predicted = self._decode(self._forward(validation.X))
        return r2_score(validation.y, predicted, sample_weight=validation.sample_weight)

    def _target_state(self):
        return {}, {}  # the number of outputs is a fitted scalar

    def _restore_target_state(self, meta, arrays):
        pass

    # ------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with one epoch over the given data.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *image)
            Training images, in any of the forms ``fit`` accepts.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the samples' losses.

        Returns
        -------
        self : object
            The updated estimator.
        """
        return self._partial_fit(X, y, sample_weight)

    def predict(self, X):
        """Predict the targets of images X.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, *image)
            Images, in the fitted per-sample shape or flattened.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predicted values, 1-D when the model has one output.
        """
        return self._decode(self._forward(validate_images(self, X)))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
