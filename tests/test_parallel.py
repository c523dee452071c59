"""Splitting batches across threads changes nothing but the speed."""

import threading
import time

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from threadpoolctl import threadpool_info, threadpool_limits

import skcnn._blocks as blocks
import skcnn._engine as engine
import skcnn._parallel as parallel
from skcnn import CNNClassifier
from skcnn._engine import Batch, loss_and_gradients
from skcnn._network import Design, Grads, build_network, initialize


@pytest.fixture
def always_split(monkeypatch):
    monkeypatch.setattr(parallel, "_MIN_VALUES_PER_PART", 1)


def test_map_parts_covers_rows_in_order():
    for n, parts, workers in [
        (10, 1, 1),
        (10, 3, 3),
        (7, 7, 2),
        (128, 2, 1),
        (50, 8, 3),
    ]:
        slices = parallel.map_parts(lambda s: s, n, parts, workers)
        assert len(slices) == parts
        assert np.concatenate([np.arange(n)[s] for s in slices]).tolist() == list(
            range(n)
        )


def test_reduce_parts_folds_in_part_order_with_bounded_backlog():
    # a non-commutative fold shows the order; random delays shuffle the
    # order in which the parts finish
    rng = np.random.default_rng(0)
    delays = rng.uniform(0, 0.003, 32)
    lock = threading.Lock()
    counts = {"started": 0, "folded": 1, "backlog": 0}

    def fn(s):
        with lock:
            counts["started"] += 1
            counts["backlog"] = max(
                counts["backlog"], counts["started"] - counts["folded"]
            )
        time.sleep(delays[s.start])
        return [s.start]

    def combine(a, b):
        counts["folded"] += 1
        return a + b

    for workers in (1, 2, 4, 7):
        counts.update(started=0, folded=1, backlog=0)
        assert parallel.reduce_parts(fn, combine, 32, 32, workers) == list(range(32))
        # at most two parts per thread wait to be folded: memory stays bounded
        assert counts["backlog"] <= 2 * workers


def test_a_failing_part_raises_in_the_caller_and_restores_blas():
    before = parallel.blas_threads()

    def fn(s):
        if s.start == 5:
            raise ValueError("part 5")
        return s.start

    for workers in (1, 3):
        with pytest.raises(ValueError, match="part 5"):
            parallel.map_parts(fn, 8, 8, workers)
    assert parallel.blas_threads() == before
    assert parallel.map_parts(lambda s: s.start, 8, 8, 3) == list(range(8))


def test_a_failing_part_gives_its_pool_back():
    # partial_fit keeps its workspace from call to call: a helper whose part
    # raised must not keep a pool (and its buffers) out of the idle ones
    from skcnn import _workspace as ws

    def fn(s):
        ws.empty((512, 256), np.float32)  # 512 kB: from this thread's pool
        if s.start == 2:
            raise ValueError("part 2")
        return s.start

    space = ws.Workspace()
    with ws.workspace(space), pytest.raises(ValueError, match="part 2"):
        parallel.map_parts(fn, 4, 4, 4)
    assert len(space._idle) == space.n_pools


def test_n_parts():
    assert parallel.n_parts(1, 10**9) == 1  # one row cannot be split
    assert parallel.n_parts(2, 10) == 1  # too little work
    # powers of two of at least _MIN_VALUES_PER_PART values each
    assert parallel._MIN_VALUES_PER_PART == 2**19
    assert parallel.n_parts(128, 28800) == 4  # 7.03 parts' worth of values
    assert parallel.n_parts(200, 28800) == 8  # 10.99
    assert parallel.n_parts(72, 28800) == 2  # 3.96
    assert parallel.n_parts(128, 32768) == 8  # exactly 8
    assert parallel.n_parts(3, 10**9) == 2


def test_training_parts():
    # at least twice _MIN_VALUES_PER_PART values per part...
    assert parallel.training_parts(128, 28800) == 2  # 3.52 parts' worth of 2**20
    assert parallel.training_parts(200, 28800) == 4  # 5.49
    assert parallel.training_parts(128, 32768) == 4  # exactly 4
    assert parallel.training_parts(256, 21632) == 4  # the reference net, 5.28
    # ...but two parts wherever n_parts would split at all
    assert parallel.training_parts(72, 28800) == 2  # 1.98 parts' worth
    assert parallel.training_parts(64, 2**14) == 2  # exactly 2**20 values
    assert parallel.training_parts(64, 2**14 - 1) == 1  # one value short
    assert parallel.training_parts(2, 10) == 1  # too little work
    assert parallel.training_parts(1, 10**9) == 1  # one row cannot be split
    assert parallel.training_parts(3, 10**9) == 2  # at most one part per row
    for n in range(1, 600, 7):
        for values in (100, 5000, 28800, 10**6):
            parts = parallel.training_parts(n, values)
            assert parts & (parts - 1) == 0  # a power of two
            assert min(2, parallel.n_parts(n, values)) <= parts
            assert parts <= parallel.n_parts(n, values)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_training_splits_into_fewer_parts_than_prediction(monkeypatch, batch_norm):
    design = Design(conv_filters=(3,), hidden_layer_sizes=(5,), batch_norm=batch_norm)
    arch = build_network((8, 8, 1), design, 3, "softmax")
    rng = np.random.RandomState(0)
    weights = initialize(arch, rng, np.float32)
    x = rng.uniform(size=(16, 8, 8, 1)).astype(np.float32)
    Y = np.eye(3, dtype=np.float32)[rng.randint(0, 3, 16)]
    # parts of 4 rows' values: prediction in 4 parts, training in 2
    values = arch.max_values_per_sample()
    monkeypatch.setattr(parallel, "_MIN_VALUES_PER_PART", 4 * values)
    rows = []  # the images each convolution of a part gets
    real = blocks.conv2d_forward

    def counting(x, *args, **kwargs):
        rows.append(len(x))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(blocks, "conv2d_forward", counting)
    loss_and_gradients(arch, weights, Batch(x, Y), 0.0, 2)
    assert rows == [8, 8]
    rows.clear()
    engine.predict_rows(arch, weights, x.reshape(16, -1), (8, 8, 1))
    assert rows == [4, 4, 4, 4]


def test_parts_do_not_depend_on_threads():
    # the split follows the data and architecture, never the thread limit
    with threadpool_limits(1):
        one = [
            (parallel.n_parts(n, 5000), parallel.training_parts(n, 5000))
            for n in range(1, 600, 7)
        ]
    assert [
        (parallel.n_parts(n, 5000), parallel.training_parts(n, 5000))
        for n in range(1, 600, 7)
    ] == one


def test_blas_threads_ignores_skcnn_own_limit_held_by_another_thread():
    # A predict that starts while another thread's fit or predict holds the
    # one-thread limit must split its batch as it would alone: parts of other
    # sizes round differently, so its result would depend on timing.
    with threadpool_limits(limits=2, user_api="blas"):
        if parallel.blas_threads() < 2:
            pytest.skip("this BLAS cannot use 2 threads here")
        with parallel.single_threaded_blas():
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
@pytest.mark.parametrize("batch_norm", [False, True])
def test_split_gradients_equal_whole_batch(monkeypatch, weighted, batch_norm):
    # batch norm: the parts meet at every normalization for the batch's
    # moments and sums, so the split is exact there too
    design = Design(
        conv_filters=(3, 4), hidden_layer_sizes=(5,), batch_norm=batch_norm, dropout=0
    )
    arch = build_network((9, 8, 2), design, 3, "softmax")
    rng = np.random.RandomState(0)
    weights = initialize(arch, rng, np.float64)
    x = rng.uniform(size=(13, 9, 8, 2))
    Y = np.eye(3)[rng.randint(0, 3, 13)]
    sw = rng.uniform(0.5, 2, 13) if weighted else None
    args = (arch, weights, Batch(x, Y, sw), 0.1)
    monkeypatch.setattr(parallel, "_MIN_VALUES_PER_PART", 10**9)
    whole = loss_and_gradients(*args, 3)
    monkeypatch.setattr(parallel, "_MIN_VALUES_PER_PART", 1)  # 8 parts
    split = loss_and_gradients(*args, 3)
    assert_allclose(split.loss, whole.loss, rtol=1e-12)
    for a, b in zip(split.grads.flat(), whole.grads.flat()):
        assert_allclose(a, b, rtol=1e-10, atol=1e-14)
    assert len(split.grads.flat()) == (10 if batch_norm else 8)
    if batch_norm:
        for (m, v), (m0, v0) in zip(split.stats, whole.stats):
            assert_allclose(m, m0, rtol=1e-12)
            assert_allclose(v, v0, rtol=1e-12)
    # the same parts give the same bits on any number of threads
    for n_threads in (1, 2, 5):
        again = loss_and_gradients(*args, n_threads)
        assert again.loss == split.loss
        for a, b in zip(again.grads.flat(), split.grads.flat()):
            assert_array_equal(a, b)


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
        monkeypatch.setattr(blocks, name, checking(getattr(blocks, name)))
    for name in ["forward", "backward"]:  # the network's passes, as run
        monkeypatch.setattr(engine, name, checking(getattr(engine, name)))
    X = np.random.default_rng(0).integers(0, 255, (24, 10, 10, 3), dtype=np.uint8)
    y = np.arange(24) % 3
    for pooling in ("max", "avg"):
        clf = CNNClassifier(pooling=pooling, max_iter=2, random_state=0).fit(X, y)
        clf.predict_proba(X)
    assert seen and set(seen) == {np.dtype(np.float32)}


def test_single_threaded_blas_pins_from_any_thread_and_restores():
    # threadpoolctl >= 3.8 ignores limits set by a thread other than the one
    # that set one first: the pin must hold whichever thread enters first,
    # and the limit come back whichever thread leaves last.
    with threadpool_limits(2):
        before = parallel.blas_threads()
        if before < 2:
            pytest.skip("BLAS runs one thread here: nothing to pin")
        with parallel.single_threaded_blas():  # the main thread pins first
            pass
        a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
        seen = {}

        def first():
            with parallel.single_threaded_blas():
                # what BLAS runs with (blas_threads() ignores skcnn's own pin)
                seen["first"] = parallel._blas_threads_in_force()
                a_in.set()
                b_in.wait()
            a_out.set()

        def last():
            a_in.wait()
            with parallel.single_threaded_blas():
                b_in.set()
                a_out.wait()
                # still pinned: B holds it
                seen["last"] = parallel._blas_threads_in_force()
            seen["after"] = parallel._blas_threads_in_force()

        threads = [threading.Thread(target=first), threading.Thread(target=last)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert seen == {"first": 1, "last": 1, "after": before}
        assert parallel.blas_threads() == before
