"""ONNX export: the graph predicts what the estimator predicts."""

import numpy as np
import pytest
from sklearn.datasets import make_multilabel_classification

from skcnn import CNNClassifier

onnx = pytest.importorskip("onnx")


def _run(model, X):
    """(labels, probabilities) from onnxruntime, or onnx's reference evaluator."""
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(None, {"X": X})
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {"X": X})


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


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("labels", ["ints", "strings", "binary"])
def test_onnx_matches_predict_proba(name, labels):
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(40, 7, 9, 2)).astype(np.float32)  # non-square, 2 ch
    y = np.arange(40) % (2 if labels == "binary" else 3)
    if labels == "strings":
        y = np.array(["ant", "bee", "cow"])[y]
    params = dict(conv_filters=(3, 4), max_iter=3, random_state=0)
    clf = CNNClassifier(**{**params, **ARCHITECTURES[name]}).fit(X, y)
    X_flat = X.reshape(40, -1)
    label, proba = _run(clf.to_onnx(), X_flat)
    expected = clf.predict_proba(X_flat)
    assert proba.shape == expected.shape
    assert np.abs(proba - expected).max() <= 1e-5
    np.testing.assert_array_equal(label, clf.predict(X_flat))


def test_onnx_float64_and_multilabel():
    X, Y = make_multilabel_classification(30, 16, n_classes=3, random_state=0)
    X = X / X.max()
    clf = CNNClassifier(conv_filters=(3,), max_iter=3, random_state=0).fit(X, Y)
    from onnx.reference import ReferenceEvaluator

    label, proba = ReferenceEvaluator(clf.to_onnx()).run(None, {"X": X})
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(label, clf.predict(X))


def test_onnx_model_is_valid_and_documented():
    X = np.random.default_rng(1).uniform(size=(12, 16)).astype(np.float32)
    model = CNNClassifier(max_iter=1).fit(X, np.arange(12) % 2).to_onnx()
    onnx.checker.check_model(model)
    assert [o.name for o in model.graph.output] == ["label", "probabilities"]
    assert model.graph.input[0].name == "X"
