"""Splitting batches across threads changes nothing but the speed."""

import threading

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info, threadpool_limits

import skcnn._network as network
import skcnn._parallel as parallel
from skcnn import CNNClassifier
from skcnn._malloc import tune_malloc


@pytest.fixture
def always_split(monkeypatch):
    monkeypatch.setattr(parallel, "_MIN_VALUES_PER_PART", 1)


def test_map_parts_covers_rows_in_order():
    for n, parts in [(10, 1), (10, 3), (7, 7), (128, 2)]:
        slices = parallel.map_parts(lambda s: s, n, parts)
        assert len(slices) == parts
        assert np.concatenate([np.arange(n)[s] for s in slices]).tolist() == list(
            range(n)
        )


def test_n_parts():
    assert parallel.n_parts(1, 10**9, 8) == 1  # one row cannot be split
    assert parallel.n_parts(128, 28800, 2) == 2
    assert parallel.n_parts(2, 10, 2) == 1  # too little work
    assert parallel.n_parts(128, 28800, 1) == 1


def test_blas_threads_ignores_skcnn_own_limit_held_by_another_thread():
    # A predict that starts while another thread's fit or predict holds the
    # one-thread limit must split its batch as it would alone: parts of other
    # sizes round differently, so its result would depend on timing.
    with threadpool_limits(limits=2, user_api="blas"):
        if parallel.blas_threads() < 2:
            pytest.skip("this BLAS cannot use 2 threads here")
        with parallel.single_threaded_blas(2):
            blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
            assert {i["num_threads"] for i in blas} == {1}  # the limit is held
            seen = []
            other = threading.Thread(
                target=lambda: seen.append(parallel.blas_threads())
            )
            other.start()
            other.join()
        assert seen == [2]
        assert parallel.blas_threads() == 2  # and was lifted


@pytest.mark.parametrize("weighted", [False, True])
def test_split_gradients_equal_whole_batch(always_split, weighted):
    arch = network.build_architecture(
        (9, 8, 2), (3, 4), 3, 2, "valid", "max", (5,), 3, "relu", "softmax"
    )
    rng = np.random.RandomState(0)
    coefs, intercepts = network.initialize(arch, rng, np.float64)
    x = rng.uniform(size=(13, 9, 8, 2))
    Y = np.eye(3)[rng.randint(0, 3, 13)]
    sw = rng.uniform(0.5, 2, 13) if weighted else None
    whole = network.loss_and_gradients(arch, coefs, intercepts, x, Y, sw, 0.1, 1)
    split = network.loss_and_gradients(arch, coefs, intercepts, x, Y, sw, 0.1, 3)
    assert_allclose(split[0], whole[0], rtol=1e-12)
    for a, b in zip(split[1] + split[2], whole[1] + whole[2]):
        assert_allclose(a, b, rtol=1e-10, atol=1e-14)


def test_threaded_fit_is_deterministic_and_predict_matches(always_split, images):
    X, y = images
    params = dict(conv_filters=(4,), max_iter=3, batch_size=16, random_state=0)
    a = CNNClassifier(**params).fit(X, y)
    b = CNNClassifier(**params).fit(X, y)
    for wa, wb in zip(a.coefs_, b.coefs_):
        assert_array_equal(wa, wb)
    proba = a.predict_proba(X)
    assert_array_equal(proba, b.predict_proba(X))
    for row in (0, 17, 39):
        assert_allclose(a.predict_proba(X[row : row + 1]), proba[row : row + 1])


def test_float32_model_computes_in_float32_everywhere(monkeypatch):
    # one float64 array on the float32 path would silently double GEMM costs
    seen = []

    def checking(fn):
        def wrapper(*args, **kwargs):
            result = fn(*args, **kwargs)
            values = list(result) if isinstance(result, tuple) else [result]
            while values:
                value = values.pop()
                if isinstance(value, (list, tuple)):
                    values.extend(value)
                elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
                    seen.append(value.dtype)
            return result

        return wrapper

    for name in [
        "conv2d_forward",
        "conv2d_backward",
        "maxpool_forward",
        "maxpool_backward",
        "avgpool_forward",
        "avgpool_backward",
        "forward",
        "backward",
    ]:
        monkeypatch.setattr(network, name, checking(getattr(network, name)))
    X = np.random.default_rng(0).integers(0, 255, (24, 10, 10, 3), dtype=np.uint8)
    y = np.arange(24) % 3
    for pooling in ("max", "avg"):
        clf = CNNClassifier(pooling=pooling, max_iter=2, random_state=0).fit(X, y)
        clf.predict_proba(X)
    assert seen and set(seen) == {np.dtype(np.float32)}


def test_tune_malloc_is_safe_to_call_repeatedly():
    tune_malloc()
    tune_malloc()
