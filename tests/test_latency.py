"""Small-batch prediction skips work it does not need, and changes nothing.

A one-image predict must not pay scikit-learn's validation, the detailed
memory estimate, threadpoolctl's limiter or the label binarizer's checks
when they cannot change the outcome (issue #13); the inputs they exist for
still get them. No timing here: benchmarks/latency.py measures.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from threadpoolctl import threadpool_limits

import skcnn._engine as engine
import skcnn._image as image
import skcnn._memory as memory
import skcnn._parallel as parallel
from skcnn import CNNClassifier
from skcnn._network import Design, build_network

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SHAPE = (7, 6, 2)


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(size=(n,) + SHAPE).astype(np.float32)
    return X, np.arange(n) % 3


@pytest.fixture(scope="module")
def fitted():
    X, y = _data()
    return CNNClassifier(conv_filters=(3, 4), max_iter=2, random_state=0).fit(X, y)


def _refuse(name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{name} called")

    return refuse


def test_plain_arrays_skip_sklearn_validation_with_the_same_result(fitted, monkeypatch):
    X, _ = _data(5, seed=1)
    batches = [X, X.reshape(5, -1), X[:1], np.asfortranarray(X.reshape(5, -1))]
    # a list goes through validate_data: the reference results
    expected = [
        (clf_out(fitted.predict_proba, b), clf_out(fitted.predict, b)) for b in batches
    ]
    monkeypatch.setattr(image, "validate_data", _refuse("validate_data"))
    for images, (proba, labels) in zip(batches, expected):
        assert_array_equal(fitted.predict_proba(images), proba)
        assert_array_equal(fitted.predict(images), labels)


def clf_out(method, images):
    """``method`` on ``images`` given as a nested list of rows."""
    return method(images.reshape(len(images), -1).tolist())


def _spy_validate(monkeypatch):
    calls = []
    real = image.validate_data

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(image, "validate_data", spy)
    return calls


@pytest.mark.parametrize(
    "value, pattern",
    [
        (np.nan, "NaN"),
        (np.inf, "infinity"),
        (-np.inf, "infinity"),
        (np.float32(1e30), "magnitude"),  # the bound itself is refused
        (-1e31, "magnitude"),
    ],
)
def test_bad_values_still_get_the_full_validation(fitted, monkeypatch, value, pattern):
    X, _ = _data(3, seed=2)
    X[1, 2, 3, 1] = value
    calls = _spy_validate(monkeypatch)
    with pytest.raises(ValueError, match=pattern):
        fitted.predict_proba(X)
    assert calls == [1]


def test_the_largest_sane_value_is_accepted_without_validation(fitted, monkeypatch):
    X, _ = _data(2, seed=3)
    X[0, 0, 0, 0] = np.nextafter(np.float32(1e30), np.float32(0))
    calls = _spy_validate(monkeypatch)
    assert np.isfinite(fitted.predict_proba(X)).all()
    assert calls == []


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
def test_other_inputs_still_get_the_full_validation(fitted, monkeypatch):
    X, _ = _data(3, seed=4)
    rows = X.reshape(3, -1)
    calls = _spy_validate(monkeypatch)
    expected = fitted.predict_proba(rows)
    assert calls == []
    assert_array_equal(fitted.predict_proba(rows.astype(np.float64)), expected)
    assert len(calls) == 1
    with pytest.raises(TypeError, match="np.matrix"):
        fitted.predict_proba(np.asmatrix(rows))
    with pytest.raises(ValueError, match="features"):
        fitted.predict_proba(rows[:, :-1])
    with pytest.raises(ValueError, match="0 sample"):
        fitted.predict_proba(rows[:0])
    assert len(calls) == 4


def test_fitted_feature_names_are_still_checked(monkeypatch):
    pd = pytest.importorskip("pandas")
    X, y = _data()
    rows = X.reshape(len(X), -1)
    frame = pd.DataFrame(rows, columns=[f"p{i}" for i in range(rows.shape[1])])
    clf = CNNClassifier(conv_filters=(3,), max_iter=1, random_state=0)
    clf.fit(frame, y)
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        clf.predict_proba(rows[:1])


def test_one_image_reads_no_thread_count(fitted, monkeypatch):
    # one part: neither the memory check nor the engine needs the number of
    # BLAS threads (a threadpoolctl query)
    X, _ = _data(1, seed=5)
    expected = fitted.predict_proba(X)
    monkeypatch.setattr(memory, "blas_threads", _refuse("blas_threads"))
    monkeypatch.setattr(engine, "blas_threads", _refuse("blas_threads"))
    assert_array_equal(fitted.predict_proba(X), expected)


def test_a_one_thread_blas_is_left_alone(monkeypatch):
    with threadpool_limits(1, user_api="blas"):
        libs = parallel._blas().select(user_api="blas").lib_controllers
        if not libs:
            pytest.skip("no BLAS under threadpoolctl's control")
        for lib in libs:
            monkeypatch.setattr(lib, "set_num_threads", _refuse("set_num_threads"))
        with parallel.single_threaded_blas():
            assert parallel._blas_threads_in_force() == 1


@pytest.mark.parametrize("threads", [1, 2, 64])
@pytest.mark.parametrize(
    "shape, design",
    [
        ((28, 28, 1), Design()),
        ((64, 64, 3), Design(padding="same", conv_filters=(16, 32, 64))),
        ((16, 16, 3), Design(padding="same", conv_filters=(32, 64, 64))),  # Winograd
        ((21, 21, 2), Design(padding="same", kernel_size=2, strides=3)),
        ((5, 4, 1), Design(conv_filters=(), hidden_layer_sizes=(300,))),
        ((300, 300, 3), Design(conv_filters=(8,), pool_size=1, batch_norm=True)),
    ],
)
def test_the_memory_shortcut_bounds_the_estimate(monkeypatch, shape, design, threads):
    # the check stops early only where the detailed estimate is smaller
    monkeypatch.setattr(memory, "blas_threads", lambda: threads)
    for n_outputs in (1, 10):
        net = build_network(shape, design, n_outputs, "softmax")
        values = net.max_values_per_sample()
        chunk = max(1, engine.PREDICT_CHUNK_VALUES // values)
        sizes = {1, 2, 7, chunk - 1, chunk, chunk + 1, 10 * chunk, 10**6} - {0}
        for n in sorted(sizes):
            for itemsize in (4, 8):
                bound = memory.predict_bound(net, n, itemsize)
                assert bound >= memory.predict_estimate(net, n, itemsize)


@pytest.mark.parametrize("labels", [["b", "a", "c"], [2.0, -1.0, 7.0], [0, 1, 2]])
def test_multiclass_labels_decode_as_the_label_binarizer(monkeypatch, labels):
    X, _ = _data()
    y = np.asarray(labels)[np.arange(len(X)) % 3]
    clf = CNNClassifier(conv_filters=(2,), max_iter=1, random_state=0).fit(X, y)
    # outputs with ties: the first most probable class wins, as in
    # inverse_transform
    out = np.random.default_rng(6).integers(0, 3, (len(X), 3)).astype(np.float32)
    monkeypatch.setattr(clf, "_forward", lambda X: out.copy())
    got = clf.predict(X)
    expected = clf._label_binarizer.inverse_transform(out)
    assert_array_equal(got, expected)
    assert got.dtype == expected.dtype


def test_the_latency_benchmark_runs(capsys):
    # the script, not its timings: a few calls, one JSON line of medians
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "latency.py"
    spec = importlib.util.spec_from_file_location("latency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--repeats", "3", "--threads", "1"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["batch"] == 1 and result["threads"] == 1
    assert result["predict_proba"] > 0 and result["predict"] > 0
