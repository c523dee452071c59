"""ONNX export: the graph predicts what the estimator predicts, in onnxruntime."""

import numpy as np
import pytest
from sklearn.datasets import make_multilabel_classification

from skcnn import CNNClassifier

onnx = pytest.importorskip("onnx")


def _run(model, X):
    """(labels, probabilities) from onnxruntime, fed float32 rows.

    onnxruntime, not onnx's reference evaluator: the reference evaluator
    runs graphs (float64 Conv) that onnxruntime refuses to load.
    """
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"X": X.astype(np.float32)})


ARCHITECTURES = {
    "default": dict(),
    "same-avg": dict(padding="same", pooling="avg"),
    "three-blocks-even-kernel": dict(conv_filters=(3, 4, 5), kernel_size=2),
    "strides-per-block": dict(conv_filters=(3, 4), strides=(2, 1), pool_size=(1, 2)),
    "batch-norm-tanh": dict(batch_norm=True, activation="tanh"),
    "global-logistic": dict(global_pooling=True, activation="logistic"),
    "clipped-kernel": dict(conv_filters=(3,), kernel_size=9, pool_size=4),
    "mlp": dict(conv_filters=(), hidden_layer_sizes=(7, 5)),
}


def _targets(labels, n):
    if labels == "multilabel":  # an indicator matrix, every column mixed
        return (np.arange(n)[:, None] // [1, 2, 4]) % 2
    if labels == "one class":  # one probability column, of ones
        return np.full(n, 7)
    y = np.arange(n) % (2 if labels == "binary" else 3)
    return np.array(["ant", "bee", "cow"])[y] if labels == "strings" else y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize(
    "labels", ["ints", "strings", "binary", "multilabel", "one class"]
)
def test_onnx_matches_predict_proba(name, labels, dtype):
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(40, 7, 9, 2)).astype(dtype)  # non-square, 2 ch
    y = _targets(labels, 40)
    params = dict(conv_filters=(3, 4), max_iter=3, random_state=0)
    clf = CNNClassifier(**{**params, **ARCHITECTURES[name]}).fit(X, y)
    assert clf.coefs_[0].dtype == dtype
    X_flat = X.reshape(40, -1)
    label, proba = _run(clf.to_onnx(), X_flat)
    expected = clf.predict_proba(X_flat)
    assert proba.dtype == np.float32
    assert proba.shape == expected.shape
    assert np.abs(proba - expected).max() <= 1e-5
    np.testing.assert_array_equal(label, clf.predict(X_flat))


def test_onnx_float64_and_multilabel():
    X, Y = make_multilabel_classification(30, 16, n_classes=3, random_state=0)
    X = X / X.max()
    clf = CNNClassifier(conv_filters=(3,), max_iter=3, random_state=0).fit(X, Y)
    assert clf.coefs_[0].dtype == np.float64
    label, proba = _run(clf.to_onnx(), X)  # exported in float32
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label, clf.predict(X))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_onnx_model_is_valid_and_documented(dtype):
    X = np.random.default_rng(1).uniform(size=(12, 16)).astype(dtype)
    model = CNNClassifier(max_iter=1).fit(X, np.arange(12) % 2).to_onnx()
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert model.graph.input[0].name == "X"
    # float32 in and out, whatever the model's dtype
    float32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == float32
    assert model.graph.output[1].type.tensor_type.elem_type == float32
    assert all(
        t.data_type in (float32, onnx.TensorProto.INT64, onnx.TensorProto.STRING)
        for t in model.graph.initializer
    )
