"""CNNRegressor, and transform() of both estimators (issue #11)."""

import runpy
import warnings
from pathlib import Path

import numpy as np
import pytest
import sklearn
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import DataConversionWarning
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.svm import SVC

import skcnn
from skcnn import CNNClassifier, CNNRegressor

SMALL = dict(
    conv_filters=(4,),
    hidden_layer_sizes=(8,),
    max_iter=3,
    random_state=0,
    padding="valid",
)


# the example's data: noisy Gaussian blobs and their (row, col) centres
blobs = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "examples" / "regression.py")
)["make_blobs"]


@pytest.mark.slow
def test_finds_the_centre_of_a_blob():
    X, y = blobs(1200)
    X_test, y_test = blobs(400, seed=1)
    reg = CNNRegressor(batch_size=32, max_iter=20, random_state=0).fit(X, y)
    assert reg.n_outputs_ == 2 and reg.out_activation_ == "identity"
    pred = reg.predict(X_test)
    assert pred.shape == (400, 2) and pred.dtype == np.float32
    assert reg.score(X_test, y_test) >= 0.95
    # each coordinate is learned, not just their mean
    assert r2_score(y_test, pred, multioutput="raw_values").min() >= 0.9


def _data(n=60, n_outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(0, 1, (n, 6, 6))
    y = X[:, :3].mean(axis=(1, 2)) - X[:, 3:].mean(axis=(1, 2))
    if n_outputs > 1:
        y = np.column_stack([y * (k + 1) for k in range(n_outputs)])
    return X, y


def test_target_shapes_follow_mlpregressor():
    X, y = _data()
    reg = CNNRegressor(**SMALL).fit(X, y)
    assert reg.predict(X).shape == (60,) and reg.n_outputs_ == 1
    assert not hasattr(reg, "classes_")
    with pytest.warns(DataConversionWarning):
        column = CNNRegressor(**SMALL).fit(X, y[:, None])
    assert column.predict(X).shape == (60,)
    X2, Y2 = _data(n_outputs=3)
    multi = CNNRegressor(**SMALL).fit(X2, Y2)
    assert multi.predict(X2).shape == (60, 3) and multi.n_outputs_ == 3
    with pytest.raises(ValueError, match="3 outputs but the model was fitted with 1"):
        reg.partial_fit(X2, Y2)
    with pytest.raises(ValueError):
        CNNRegressor(**SMALL).fit(X, ["a"] * 60)  # targets must be numbers


def test_partial_fit_takes_no_classes_and_continues():
    X, y = _data()
    reg = CNNRegressor(**SMALL)
    for _ in range(3):
        reg.partial_fit(X, y)
    assert len(reg.loss_curve_) == 3 and reg.loss_curve_[-1] < reg.loss_curve_[0]
    with pytest.raises(TypeError):
        reg.partial_fit(X, y, classes=[0, 1])


def test_early_stopping_scores_r2_and_restores_the_best():
    X, y = _data(120)
    X_val, y_val = _data(40, seed=1)
    params = dict(SMALL, max_iter=12, early_stopping=True, n_iter_no_change=30)
    reg = CNNRegressor(**params).fit(X, y, X_val=X_val, y_val=y_val)
    assert len(reg.validation_scores_) == 12 and reg.best_loss_ is None
    assert reg.best_validation_score_ == max(reg.validation_scores_)
    assert reg.score(X_val, y_val) == pytest.approx(reg.best_validation_score_)
    held_out = CNNRegressor(**params).fit(X, y)  # validation_fraction of X
    assert len(held_out.validation_scores_) == 12
    with pytest.raises(ValueError, match="y_val must hold 40 targets of 1"):
        CNNRegressor(**params).fit(X, y, X_val=X_val, y_val=np.ones((40, 2)))


def test_save_load_knows_the_estimator_type(tmp_path):
    X, y = _data(n_outputs=2)
    reg = CNNRegressor(**SMALL).fit(X, y)
    reg.save(tmp_path / "reg.model")
    loaded = skcnn.load(tmp_path / "reg.model")
    assert type(loaded) is CNNRegressor
    assert_array_equal(loaded.predict(X), reg.predict(X))
    assert loaded.get_params() == reg.get_params()
    loaded.partial_fit(X, y)  # trainable after loading


def test_onnx_variable_matches_predict():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    for n_outputs in (1, 3):
        X, y = _data(n_outputs=n_outputs)
        reg = CNNRegressor(**SMALL, batch_norm=True).fit(X, y)
        session = ort.InferenceSession(reg.to_onnx().SerializeToString())
        rows = X.reshape(len(X), -1).astype(np.float32)
        (variable,) = session.run(["variable"], {"X": rows})
        assert variable.shape == (60, n_outputs)
        expected = reg.predict(X).reshape(60, -1)
        assert_allclose(variable, expected, rtol=1e-5, atol=1e-5)


def test_loss_curve_plot_and_grid_search():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from skcnn.plot import LossCurveDisplay

    X, y = _data(80)
    search = GridSearchCV(
        CNNRegressor(**SMALL), {"learning_rate_init": [1e-3, 1e-2]}, cv=2
    ).fit(X, y)
    assert search.best_estimator_.n_iter_ == 3
    display = LossCurveDisplay.from_estimator(search.best_estimator_)
    assert len(display.line_.get_ydata()) == 3


# --------------------------------------------------------------------------
# transform: the learned features
# --------------------------------------------------------------------------


@pytest.mark.parametrize("Estimator", [CNNClassifier, CNNRegressor])
def test_transform_is_the_last_hidden_layer(Estimator):
    X, y = _data()
    if Estimator is CNNClassifier:
        y = (y > 0).astype(int)
    est = Estimator(**dict(SMALL, hidden_layer_sizes=(7, 5))).fit(X, y)
    features = est.transform(X)
    assert features.shape == (60, 5) and features.dtype == np.float64
    assert (features >= 0).all()  # after the ReLU
    # the output layer applied to the features gives the prediction
    logits = features @ est.coefs_[-1] + est.intercepts_[-1]
    if Estimator is CNNRegressor:
        assert_allclose(logits.ravel(), est.predict(X), rtol=1e-10)
    else:
        assert_allclose(1 / (1 + np.exp(-logits.ravel())), est.predict_proba(X)[:, 1])
    names = est.get_feature_names_out()
    prefix = Estimator.__name__.lower()
    assert list(names) == [f"{prefix}{i}" for i in range(5)]
    # fit_transform is fit then transform
    assert_array_equal(Estimator(**SMALL).fit_transform(X, y), est.set_params(
        hidden_layer_sizes=(8,)).fit(X, y).transform(X))  # fmt: skip


@pytest.mark.parametrize("Estimator", [CNNClassifier, CNNRegressor])
def test_transform_honours_set_output(Estimator):
    # scikit-learn wraps only a transform defined by a _SetOutputMixin class:
    # once, fit_transform gave a DataFrame and transform an ndarray
    pd = pytest.importorskip("pandas")
    X, y = _data()
    if Estimator is CNNClassifier:
        y = (y > 0).astype(int)
    est = Estimator(**SMALL).set_output(transform="pandas")
    fitted = est.fit_transform(X, y)
    features = est.transform(X)
    assert isinstance(fitted, pd.DataFrame) and isinstance(features, pd.DataFrame)
    assert list(features.columns) == list(est.get_feature_names_out())
    assert_array_equal(
        features.to_numpy(), est.set_output(transform="default").transform(X)
    )
    with sklearn.config_context(transform_output="pandas"):
        assert isinstance(Estimator(**SMALL).fit(X, y).transform(X), pd.DataFrame)


def test_transform_without_hidden_layers_gives_the_conv_features():
    X, y = _data()
    flat = CNNRegressor(**dict(SMALL, hidden_layer_sizes=())).fit(X, y)
    # 6x6 -> conv 3x3 -> 4x4x4 -> pool 2 -> 2x2x4, flattened
    assert flat.transform(X).shape == (60, 16)
    pooled = CNNRegressor(**dict(SMALL, hidden_layer_sizes=()), global_pooling=True)
    assert pooled.fit(X, y).transform(X).shape == (60, 4)
    # in chunks as predict: the same values whatever the chunk size
    import skcnn._engine as engine

    whole = flat.transform(X)
    old, engine.PREDICT_CHUNK_VALUES = engine.PREDICT_CHUNK_VALUES, 100
    try:
        assert_array_equal(flat.transform(X), whole)
    finally:
        engine.PREDICT_CHUNK_VALUES = old


def test_cnn_features_feed_another_model_in_a_pipeline():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32)
    pipe = make_pipeline(
        CNNClassifier(conv_filters=(8,), max_iter=10, random_state=0),
        SVC(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.fit(X[:1000], y[:1000])
    # trained supervised, the CNN's 64 features separate the digits
    assert pipe[0].transform(X[:5]).shape == (5, 64)
    assert pipe.score(X[1000:], y[1000:]) > 0.9
    regression = make_pipeline(CNNRegressor(**SMALL), Ridge()).fit(*_data())
    assert regression.predict(_data()[0]).shape == (60,)
