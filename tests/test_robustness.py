"""Bad input, divergence, interruption, memory and concurrency (issue #4)."""

import pickle
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_array_equal
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

import skcnn._parallel as parallel
from skcnn import CNNClassifier

PARAMS = dict(conv_filters=(4,), hidden_layer_sizes=(8,), max_iter=2, random_state=0)
RNG = np.random.default_rng(0)
X4 = RNG.uniform(size=(30, 6, 5, 2))
XF = X4.reshape(30, -1)
Y = np.arange(30) % 3
# a learning rate that makes the weights overflow within a few epochs
DIVERGING = dict(
    solver="sgd", learning_rate_init=1e6, activation="identity", max_iter=20
)


@pytest.fixture(scope="module")
def fitted():
    return CNNClassifier(**PARAMS).fit(X4, Y)


def _with(X, index, value):
    X = X.copy()
    X[index] = value
    return X


def fit(X=XF, y=Y, **kwargs):
    def run(_):
        sample_weight = kwargs.pop("sample_weight", None)
        CNNClassifier(**{**PARAMS, **kwargs}).fit(X, y, sample_weight=sample_weight)

    return run


BAD_INPUTS = {
    # name: (action on a fitted estimator, exception, message pattern)
    "nan in X": (fit(_with(XF, (3, 4), np.nan)), ValueError, "NaN"),
    "inf in X": (fit(_with(XF, (0, 0), np.inf)), ValueError, "infinity"),
    "nan in y": (fit(y=_with(Y.astype(float), 2, np.nan)), ValueError, "NaN"),
    "continuous y": (fit(y=np.linspace(0, 1, 30)), ValueError, "Unknown label type"),
    "string X": (fit(np.full((30, 60), "a")), ValueError, "could not convert"),
    "object X": (fit(_with(XF.astype(object), (2, 2), "x")), ValueError, "convert"),
    "complex X": (fit(XF + 1j), ValueError, "Complex data not supported"),
    "ragged list": (fit([[1.0, 2.0], [3.0]] * 15), ValueError, "ragged"),
    "empty X": (fit(XF[:0], Y[:0]), ValueError, "0 sample"),
    "empty 3-D X": (fit(X4[:0, :, :, 0], Y[:0]), ValueError, "0 sample"),
    "5-D X": (fit(X4[..., None]), ValueError, "got a 5-D array"),
    "1-D X": (fit(XF[:, 0]), ValueError, "Expected 2D array"),
    "image_shape not dividing": (
        fit(image_shape=(7, 7)),
        ValueError,
        "not a whole number of channels",
    ),
    "image_shape too big": (fit(image_shape=(6, 5, 3)), ValueError, "holds 90 values"),
    "image_shape vs 4-D X": (fit(X4, image_shape=(5, 6)), ValueError, "does not match"),
    "image_shape not ints": (fit(image_shape=(6.0, 5)), ValueError, "image_shape"),
    "predict other shape": (
        lambda est: est.predict(X4.reshape(30, 5, 6, 2)),
        ValueError,
        "fitted on images of shape",
    ),
    "predict other channels": (
        lambda est: est.predict(X4[..., :1]),
        ValueError,
        "fitted on images of shape",
    ),
    "predict other size": (
        lambda est: est.predict_proba(XF[:, :50]),
        ValueError,
        "50 features",
    ),
    "partial_fit without classes": (
        lambda est: CNNClassifier(**PARAMS).partial_fit(X4, Y),
        ValueError,
        "classes must be passed",
    ),
    "partial_fit unknown class": (
        lambda est: CNNClassifier(**PARAMS).partial_fit(X4, Y, classes=[0, 1]),
        ValueError,
        "classes not in",
    ),
    "partial_fit other classes": (
        lambda est: pickle.loads(pickle.dumps(est)).partial_fit(X4, Y, classes=[0, 9]),
        ValueError,
        "not the same",
    ),
    "zero filters": (fit(conv_filters=(0,)), ValueError, "positive integers"),
    "negative filters": (fit(conv_filters=(4, -2)), ValueError, "positive integers"),
    "fractional filters": (fit(conv_filters=(2.5,)), ValueError, "integers"),
    "zero hidden units": (fit(hidden_layer_sizes=(0,)), ValueError, "positive"),
    "zero kernel": (fit(kernel_size=0), InvalidParameterError, "kernel_size"),
    "fractional pool": (fit(pool_size=1.5), InvalidParameterError, "pool_size"),
    "zero max_iter": (fit(max_iter=0), InvalidParameterError, "max_iter"),
    "zero batch_size": (fit(batch_size=0), InvalidParameterError, "batch_size"),
    "negative learning rate": (
        fit(learning_rate_init=-1.0),
        InvalidParameterError,
        "learning_rate_init",
    ),
    "unknown activation": (fit(activation="swish"), InvalidParameterError, "activ"),
    "unknown padding": (fit(padding="full"), InvalidParameterError, "padding"),
    "sparse X": (fit(sp.csr_matrix(XF)), TypeError, "dense data is required"),
    "huge X": (fit(_with(XF, (1, 1), 1e30)), ValueError, "magnitude"),
    "predict huge X": (
        lambda est: est.predict(_with(XF, (0, 0), -1e31)),
        ValueError,
        "magnitude",
    ),
    "short sample_weight": (fit(sample_weight=np.ones(29)), ValueError, "shape"),
    "negative sample_weight": (
        fit(sample_weight=_with(np.ones(30), 3, -1.0)),
        ValueError,
        "(?i)negative",
    ),
    "all-zero sample_weight": (fit(sample_weight=np.zeros(30)), ValueError, "non-zero"),
    "nan sample_weight": (
        fit(sample_weight=_with(np.ones(30), 0, np.nan)),
        ValueError,
        "NaN",
    ),
    "tiny validation set": (
        fit(XF[:6], Y[:6], early_stopping=True),
        ValueError,
        "validation set is too small",
    ),
    "predict before fit": (
        lambda est: CNNClassifier().predict(XF),
        NotFittedError,
        "not fitted",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_clear_error(case, fitted):
    action, exception, pattern = BAD_INPUTS[case]
    before = fitted.predict_proba(X4)
    with pytest.raises(exception, match=pattern):
        action(fitted)
    assert_array_equal(fitted.predict_proba(X4), before)


def test_no_feature_map_vanishes():
    # deep stacks on 1x1 and 2x3 images: kernels and windows are clipped
    for shape in [(1, 1, 1), (2, 3, 1), (3, 2, 2)]:
        X = RNG.uniform(size=(12,) + shape)
        clf = CNNClassifier(conv_filters=(3, 3, 3), kernel_size=5, pool_size=4)
        proba = clf.set_params(max_iter=2).fit(X, np.arange(12) % 2).predict_proba(X)
        assert np.isfinite(proba).all()


@pytest.mark.parametrize(
    "bad_call",
    [
        lambda est: est.fit(_with(XF, (0, 0), np.nan), Y),
        lambda est: est.fit(XF, np.linspace(0, 1, 30)),
        lambda est: est.partial_fit(X4, Y + 5),
        lambda est: est.set_params(warm_start=True).fit(XF[Y < 2], Y[Y < 2]),
        lambda est: est.set_params(**DIVERGING).fit(X4.astype(np.float32), Y),
    ],
)
def test_failed_fit_leaves_the_previous_model_usable(bad_call):
    est = CNNClassifier(**PARAMS).fit(X4, Y)
    before = est.predict_proba(X4)
    state = {k: v for k, v in vars(est).items() if k.endswith("_")}
    with pytest.raises(ValueError):
        bad_call(est)
    est.set_params(**{**PARAMS, "warm_start": False})
    assert_array_equal(est.predict_proba(X4), before)
    assert set(state) == {k for k in vars(est) if k.endswith("_")}
    assert len(est.loss_curve_) == len(state["loss_curve_"])


def test_a_failed_partial_fit_restores_the_logs(monkeypatch):
    # the logs a stream of partial_fit calls grows are copied, not deep
    # copied, before a call: a failure after the epoch's entries were
    # added must still take them out
    from skcnn import _loop

    est = CNNClassifier(**PARAMS)
    for _ in range(3):
        est.partial_fit(X4, Y, classes=[0, 1, 2])
    logs = {k: list(getattr(est, k)) for k in ("loss_curve_", "history_")}
    real = _loop.TrainingLoop._end_epoch

    def ends_then_fails(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise RuntimeError("after the epoch's logs")

    monkeypatch.setattr(_loop.TrainingLoop, "_end_epoch", ends_then_fails)
    with pytest.raises(RuntimeError, match="epoch's logs"):
        est.partial_fit(X4, Y)
    assert est.loss_curve_ == logs["loss_curve_"]
    assert est.history_ == logs["history_"]
    monkeypatch.setattr(_loop.TrainingLoop, "_end_epoch", real)
    est.partial_fit(X4, Y)
    assert len(est.history_) == len(est.loss_curve_) == 4


def test_divergence_stops_with_a_clear_error():
    est = CNNClassifier(**{**PARAMS, **DIVERGING})
    with pytest.raises(ValueError, match=r"diverged in epoch \d+.*learning_rate_init"):
        est.fit(X4.astype(np.float32), Y)
    assert not hasattr(est, "coefs_")  # never a model that predicts NaN
    with pytest.raises(NotFittedError):
        est.predict(X4)


def test_pickling_between_partial_fits_changes_nothing():
    params = dict(PARAMS, batch_size=7)
    straight = CNNClassifier(**params)
    resumed = CNNClassifier(**params)
    for k in range(5):
        straight.partial_fit(X4, Y, classes=[0, 1, 2])
        resumed.partial_fit(X4, Y, classes=[0, 1, 2])
        if k in (1, 3):
            resumed = pickle.loads(pickle.dumps(resumed))
    assert resumed.loss_curve_ == straight.loss_curve_
    for a, b in zip(resumed.coefs_ + resumed.intercepts_, straight.coefs_):
        assert_array_equal(a, b)
    for a, b in zip(resumed.intercepts_, straight.intercepts_):
        assert_array_equal(a, b)


def test_concurrent_predictions_match_sequential(monkeypatch):
    monkeypatch.setattr(parallel, "_MIN_VALUES_PER_PART", 1)  # threads inside too
    est = CNNClassifier(**PARAMS).fit(X4, Y)
    blas_before = parallel.blas_threads()
    X = RNG.uniform(size=(400, 6, 5, 2))
    chunks = [X[i : i + 50] for i in range(0, 400, 50)] * 3
    sequential = [est.predict_proba(c) for c in chunks]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(est.predict_proba, chunks))
    for a, b in zip(concurrent, sequential):
        assert_array_equal(a, b)
    assert parallel.blas_threads() == blas_before  # the BLAS limit was restored


@pytest.mark.slow
def test_predict_memory_is_bounded():
    X = np.random.default_rng(1).uniform(size=(100_000, 784)).astype(np.float32)
    est = CNNClassifier(max_iter=1, random_state=0).fit(X[:64], np.arange(64) % 10)
    tracemalloc.start()
    try:
        proba = est.predict_proba(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert proba.shape == (100_000, 10)
    # the output alone is 4 MB; the working set of the prediction chunks is
    # bounded by _PREDICT_CHUNK_VALUES (8 MB per chunk), not by len(X)
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MB"
