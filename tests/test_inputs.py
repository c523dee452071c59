"""Inputs as users hold them (issue #12): scale, layout, targets, messages."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skcnn import CNNClassifier, CNNRegressor

SMALL = dict(conv_filters=(4,), hidden_layer_sizes=(8,), max_iter=3, random_state=0)


def _images(n=60, shape=(6, 5, 3), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 255, (n,) + shape)
    X[..., 0] *= 0.1  # channels on different scales
    y = (X[:, :3, :, 1].mean(axis=(1, 2)) > 127).astype(int)
    return X, y


# --------------------------------------------------------------------------
# input scaling
# --------------------------------------------------------------------------


def test_minmax_scaling_is_the_default_and_ignores_zero_weights():
    X, y = _images()
    clf = CNNClassifier(**SMALL).fit(X, y)
    values = X.reshape(-1, 3)
    assert_array_equal(clf.input_offset_, values.min(axis=0))
    assert_allclose(clf.input_scale_, values.max(axis=0) - values.min(axis=0))
    w = np.ones(len(X))
    w[np.argmax(X[..., 1].max(axis=(1, 2)))] = 0  # the brightest sample
    weighted = CNNClassifier(**SMALL).fit(X, y, sample_weight=w)
    kept = X[w > 0].reshape(-1, 3)
    assert_allclose(weighted.input_scale_, kept.max(axis=0) - kept.min(axis=0))
    assert weighted.input_scale_[1] < clf.input_scale_[1]


def test_statistics_are_per_channel_and_weighted():
    X, y = _images()
    w = np.random.default_rng(1).integers(0, 4, len(X)).astype(float)
    params = dict(SMALL, input_scaling="standard")
    clf = CNNClassifier(**params).fit(X, y, sample_weight=w)
    values = X.reshape(len(X), -1, 3)
    weights = np.broadcast_to(w[:, None, None], values.shape)
    mean = np.average(values, axis=(0, 1), weights=weights)
    std = np.sqrt(np.average((values - mean) ** 2, axis=(0, 1), weights=weights))
    assert_allclose(clf.input_offset_, mean, rtol=1e-12)
    assert_allclose(clf.input_scale_, std, rtol=1e-12)
    # integer weights are repeated rows
    counts = w.astype(int)
    repeated = CNNClassifier(**params).fit(
        np.repeat(X, counts, axis=0), np.repeat(y, counts)
    )
    assert_allclose(repeated.input_offset_, clf.input_offset_, rtol=1e-12)
    assert_allclose(repeated.input_scale_, clf.input_scale_, rtol=1e-12)


def test_the_network_acts_on_standardized_input():
    X, y = _images()
    scaled = CNNClassifier(**SMALL).fit(X, y)
    raw = CNNClassifier(**SMALL, input_scaling=None).fit(X, y)
    assert raw.input_offset_ is None and raw.input_scale_ is None
    # the same weights without scaling, applied to standardized X
    manual = CNNClassifier(**SMALL, input_scaling=None).fit(X, y)
    for name in ("coefs_", "intercepts_"):
        setattr(manual, name, [a.copy() for a in getattr(scaled, name)])
    standardized = (X - scaled.input_offset_) / scaled.input_scale_
    assert_allclose(
        manual.predict_proba(standardized), scaled.predict_proba(X), rtol=1e-10
    )
    assert_allclose(
        manual.transform(standardized), scaled.transform(X), rtol=1e-10, atol=1e-12
    )
    # a constant channel is not divided by 0
    X[..., 2] = 7.0
    for scaling in ("minmax", "standard"):
        constant = CNNClassifier(**SMALL, input_scaling=scaling).fit(X, y)
        assert constant.input_scale_[2] == 1.0 and constant.input_offset_[2] == 7.0


def test_raw_pixels_train_like_scaled_ones():
    X, y = _images(200)
    raw = X.astype(np.uint8)
    a = CNNClassifier(**SMALL).fit(raw, y)
    b = CNNClassifier(**SMALL).fit(raw.astype(np.float32) / 255, y)
    # standardized, the inputs are the same up to rounding: so are the models
    scaled = raw.astype(np.float32) / 255
    assert_allclose(a.predict_proba(raw), b.predict_proba(scaled), atol=1e-4)


def test_partial_fit_learns_the_statistics_from_the_first_call():
    X, y = _images(90)
    clf = CNNClassifier(**SMALL).partial_fit(X[:30], y[:30], classes=[0, 1])
    first = clf.input_offset_.copy()
    clf.partial_fit(X[30:] * 2, y[30:])
    assert_array_equal(clf.input_offset_, first)  # kept, as part of the model
    assert_array_equal(first, X[:30].reshape(-1, 3).min(axis=0))


# --------------------------------------------------------------------------
# data_format
# --------------------------------------------------------------------------


@pytest.mark.parametrize("Estimator", [CNNClassifier, CNNRegressor])
def test_channels_first_equals_channels_last_on_transposed_data(Estimator):
    X, y = _images(shape=(7, 6, 3))
    first = np.ascontiguousarray(X.transpose(0, 3, 1, 2))  # (n, C, H, W)
    a = Estimator(**SMALL, data_format="channels_first").fit(first, y)
    b = Estimator(**SMALL).fit(X, y)
    for u, v in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        assert_array_equal(u, v)
    assert a.image_shape_ == (7, 6, 3)
    assert_array_equal(a.predict(first), b.predict(X))
    # flat rows follow the data_format too: (channels, height, width)
    assert_array_equal(a.predict(first.reshape(len(X), -1)), b.predict(X))
    rows = Estimator(**SMALL, data_format="channels_first", image_shape=(7, 6))
    rows.fit(first.reshape(len(X), -1), y)
    assert rows.image_shape_ == (7, 6, 3)
    assert_array_equal(rows.coefs_[0], b.coefs_[0])


def test_channels_first_onnx_takes_channels_first_rows():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    X, y = _images(shape=(7, 6, 3))
    first = np.ascontiguousarray(X.transpose(0, 3, 1, 2)).astype(np.float32)
    for params in (SMALL, dict(SMALL, conv_filters=())):
        clf = CNNClassifier(**params, data_format="channels_first").fit(first, y)
        session = ort.InferenceSession(clf.to_onnx().SerializeToString())
        _, proba = session.run(None, {"X": first.reshape(len(X), -1)})
        assert_allclose(proba, clf.predict_proba(first), atol=1e-5)


def test_channels_first_looking_input_gets_a_warning():
    X = np.random.default_rng(0).uniform(size=(20, 3, 8, 8))
    y = np.arange(20) % 2
    with pytest.warns(UserWarning, match="data_format='channels_first'") as record:
        CNNClassifier(**SMALL).fit(X, y)
    assert record[0].filename == __file__  # the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for these
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        CNNClassifier(**SMALL, data_format="channels_first").fit(X, y)
        CNNClassifier(**SMALL).fit(X.transpose(0, 2, 3, 1), y)
        CNNClassifier(**SMALL).fit(np.ones((20, 1, 1, 30)), y)  # 1x1, 30 channels


# --------------------------------------------------------------------------
# targets and probabilities
# --------------------------------------------------------------------------


def test_one_hot_targets_get_a_warning():
    X, y = _images()
    with pytest.warns(UserWarning, match=r"one-hot.*y.argmax\(axis=1\)"):
        CNNClassifier(**SMALL).fit(X, np.eye(2, dtype=int)[y])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        labels = np.array([[1, 1], [0, 1], [1, 0], [0, 0]] * 15)  # real multilabel
        CNNClassifier(**SMALL).fit(X, labels)


def test_confident_binary_probabilities_keep_their_precision():
    X, y = _images()
    clf = CNNClassifier(**SMALL).fit(X.astype(np.float32), y)
    # a very confident model: logits up to +-40, where 1 - expit(z) is 0 in
    # float32 (and in float64) but expit(-z) is ~4e-18
    logits = clf.transform(X) @ clf.coefs_[-1] + clf.intercepts_[-1]
    factor = np.float32(40 / np.abs(logits).max())
    clf.coefs_[-1] *= factor
    clf.intercepts_[-1] *= factor
    proba = clf.predict_proba(X)
    log_proba = clf.predict_log_proba(X)
    assert proba.dtype == np.float32
    assert np.isfinite(log_proba).all()  # no log(0) = -inf
    small = proba.min(axis=1)
    # 1 - p rounds to 0 in float32 once p > 1 - 6e-8; these stay positive
    assert (small[small < 1e-7] > 0).all() and (small < 1e-7).any()
    assert_allclose(np.exp(log_proba), proba, rtol=1e-5, atol=0)
    assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)


# --------------------------------------------------------------------------
# warnings point at the caller
# --------------------------------------------------------------------------


def test_convergence_warning_points_at_the_callers_line():
    X, y = _images()
    with pytest.warns(ConvergenceWarning) as record:
        CNNClassifier(**SMALL).fit(X, y)
    assert record[0].filename == __file__
    # inside a Pipeline it points at scikit-learn's line, where the gallery's
    # filter on module="sklearn" applies
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn")
        make_pipeline(FunctionTransformer(), CNNClassifier(**SMALL)).fit(X, y)
    assert not [w for w in caught if w.category is ConvergenceWarning]
    with pytest.warns(ConvergenceWarning) as record:
        make_pipeline(FunctionTransformer(), CNNClassifier(**SMALL)).fit(X, y)
    assert Path(record[0].filename).parts[-2:] == ("sklearn", "pipeline.py")


# --------------------------------------------------------------------------
# padding="auto"
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((8, 8, 1), "same"),
        ((15, 30, 3), "same"),
        ((16, 16, 1), "valid"),
        ((28, 28, 1), "valid"),
    ],  # fmt: skip
)
def test_auto_padding_keeps_small_images_maps(shape, expected):
    X = np.random.default_rng(0).uniform(size=(10,) + shape)
    clf = CNNClassifier(**dict(SMALL, conv_filters=(4, 4))).fit(X, np.arange(10) % 2)
    block = clf._net.conv_blocks[0]
    padded = any(block.pads[0]) or any(block.pads[1])
    assert padded == (expected == "same")
    explicit = CNNClassifier(**dict(SMALL, conv_filters=(4, 4)), padding=expected)
    assert_array_equal(explicit.fit(X, np.arange(10) % 2).coefs_[-1], clf.coefs_[-1])


@pytest.mark.parametrize(
    "classes, y",
    [
        ([0, 1], [1, 0, 1, 1]),
        ([0, 1, 2], [2, 0, 1, 1]),
        (["ant", "bee"], ["bee", "bee", "ant"]),
        (np.array(["a", "b", "c"], dtype=object), np.array(["c", "a"], dtype=object)),
        ([False, True], [True, False]),
        ([-3, 7, 10], [10, -3]),
    ],
)
def test_streamed_labels_encode_as_label_binarizer_does(classes, y, monkeypatch):
    from sklearn.preprocessing import LabelBinarizer

    from skcnn import _classifier

    classes, y = np.asarray(classes), np.asarray(y)
    expected = LabelBinarizer().fit(classes).transform(y).astype(bool)
    assert_array_equal(_classifier._one_hot(y, classes), expected)
    # and a stream of partial_fit calls trains the same bits either way
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(len(y), 8, 8))
    fast = CNNClassifier(**SMALL).partial_fit(X, y, classes=classes)
    fast.partial_fit(X, y)
    monkeypatch.setattr(_classifier, "_one_hot", lambda y, classes: None)
    general = CNNClassifier(**SMALL).partial_fit(X, y, classes=classes)
    general.partial_fit(X, y)
    for a, b in zip(fast.coefs_, general.coefs_):
        assert_array_equal(a, b)


def test_streamed_labels_not_among_the_classes_get_the_class_error():
    from skcnn._classifier import _one_hot

    assert _one_hot(np.array([5]), np.array([0, 1, 2])) is None
    assert _one_hot(np.array(["x"]), np.array([0, 1])) is None
    rng = np.random.default_rng(0)
    clf = CNNClassifier(**SMALL).partial_fit(
        rng.uniform(size=(4, 8, 8)), [0, 1, 0, 1], classes=[0, 1]
    )
    with pytest.raises(ValueError, match="not in `classes_`"):
        clf.partial_fit(rng.uniform(size=(2, 8, 8)), [1, 2])


def test_sparse_multilabel_targets_are_the_dense_ones():
    # MultiLabelBinarizer(sparse_output=True) gives a sparse indicator:
    # once a "setting an array element with a sequence" from numpy
    from scipy.sparse import csr_matrix

    X, Y = make_multilabel_classification(40, 16, n_classes=3, random_state=0)
    X = X / X.max()
    options = dict(conv_filters=(4,), max_iter=2, random_state=0)
    dense = CNNClassifier(**options, early_stopping=True)
    dense.fit(X, Y, X_val=X[:8], y_val=Y[:8])
    sparse = CNNClassifier(**options, early_stopping=True)
    sparse.fit(X, csr_matrix(Y), X_val=X[:8], y_val=csr_matrix(Y[:8]))
    assert_array_equal(sparse.predict_proba(X), dense.predict_proba(X))
    inc = CNNClassifier(**options).partial_fit(X, csr_matrix(Y), classes=np.arange(3))
    inc.partial_fit(X, csr_matrix(Y))
    assert inc.n_outputs_ == 3
