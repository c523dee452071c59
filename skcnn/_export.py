"""The fitted model as a file, an ONNX graph and a table (a base of the
estimators): ``save``, ``to_onnx``, ``summary``."""

from sklearn.utils.validation import check_is_fitted


class ExportMixin:
    """``save``, ``to_onnx`` and ``summary`` of an skcnn estimator."""

    def save(self, path):
        """Save atomically to exactly ``path`` (any suffix); see :func:`skcnn.load`."""
        from ._persistence import save

        save(self, path)

    def to_onnx(self):
        """The fitted model as an ``onnx.ModelProto`` (needs ``skcnn[onnx]``).

        Input ``X``: the flattened rows ``predict`` accepts, as float32 (a
        float64 model is exported in float32: pass ``X.astype("float32")``).
        Outputs: a classifier's ``label`` and float32 ``probabilities``, a
        regressor's float32 ``variable`` of shape (n, n_outputs); they match
        ``predict`` / ``predict_proba`` to 1e-5.
        """
        from ._onnx import to_onnx

        check_is_fitted(self)
        return to_onnx(self)

    def summary(self):
        """The network as a table, like Keras's ``model.summary()``.

        One row per layer (a conv block as its conv, batch norm, activation
        and pooling) with its output shape for one sample and its trainable
        and non-trainable parameter counts; then the totals, the input
        scaling, the compute dtype and the estimated memory of one training
        step at ``batch_size`` and of one prediction chunk.

        Available after ``fit``, and before it when ``image_shape`` is
        ``(height, width, channels)``: the number of outputs is then unknown
        and the output layer's parameters are given per output.

        Returns
        -------
        text : str
            The table; ``print(est.summary())`` shows it.

        Raises
        ------
        NotFittedError
            Before ``fit`` without a 3-tuple ``image_shape``.

        Examples
        --------
        >>> from skcnn import CNNClassifier
        >>> clf = CNNClassifier(image_shape=(8, 8, 1), conv_filters=(4,),
        ...                     hidden_layer_sizes=(16,))
        >>> print(clf.summary())  # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
        CNNClassifier, not fitted: 8x8x1 images ...
        input scaling (8, 8, 1) 0 2
        conv 3x3, 4 filters, same, relu (8, 8, 4) 40
        max pool 2x2 (4, 4, 4) 0
        flatten (64,) 0
        dense 16, relu (16,) 1,040
        dropout 0.25 (16,) 0
        output dense, softmax/logistic (n_outputs,) 17/output
        ...
        Trainable params: 1,080 + 17 per output
        ...
        """
        from ._summary import summary

        return summary(self)
