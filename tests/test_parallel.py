"""Splitting batches across threads changes nothing but the speed."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import skcnn._engine as engine
import skcnn._network as network
import skcnn._parallel as parallel
from skcnn import CNNClassifier
from skcnn._engine import Batch, loss_and_gradients
from skcnn._malloc import tune_malloc
from skcnn._network import Design, Grads, build_network, initialize


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


@pytest.mark.parametrize("weighted", [False, True])
def test_split_gradients_equal_whole_batch(always_split, weighted):
    design = Design(conv_filters=(3, 4), hidden_layer_sizes=(5,))
    arch = build_network((9, 8, 2), design, 3, "softmax")
    rng = np.random.RandomState(0)
    weights = initialize(arch, rng, np.float64)
    x = rng.uniform(size=(13, 9, 8, 2))
    Y = np.eye(3)[rng.randint(0, 3, 13)]
    sw = rng.uniform(0.5, 2, 13) if weighted else None
    whole = loss_and_gradients(arch, weights, Batch(x, Y, sw), 0.1, 1)
    split = loss_and_gradients(arch, weights, Batch(x, Y, sw), 0.1, 3)
    assert_allclose(split.loss, whole.loss, rtol=1e-12)
    for a, b in zip(split.grads.flat(), whole.grads.flat()):
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
                elif isinstance(value, Grads):
                    values.extend(value.flat())
            return result

        return wrapper

    for name in [
        "conv2d_forward",
        "conv2d_backward",
        "maxpool_forward",
        "maxpool_backward",
        "avgpool_forward",
        "avgpool_backward",
    ]:
        monkeypatch.setattr(network, name, checking(getattr(network, name)))
    for name in ["forward", "backward"]:  # the network's passes, as run
        monkeypatch.setattr(engine, name, checking(getattr(engine, name)))
    X = np.random.default_rng(0).integers(0, 255, (24, 10, 10, 3), dtype=np.uint8)
    y = np.arange(24) % 3
    for pooling in ("max", "avg"):
        clf = CNNClassifier(pooling=pooling, max_iter=2, random_state=0).fit(X, y)
        clf.predict_proba(X)
    assert seen and set(seen) == {np.dtype(np.float32)}


def test_tune_malloc_is_safe_to_call_repeatedly():
    tune_malloc()
    tune_malloc()
