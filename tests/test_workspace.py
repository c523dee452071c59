"""The per-fit workspace: large arrays reused, never while referenced."""

import threading

import numpy as np
import pytest

from skcnn import CNNClassifier
from skcnn import _workspace as ws
from skcnn._parallel import map_parts

BIG = (512, 1024)  # 2 MB of float32: above the workspace's minimum


def _images(n, n_classes=3):
    """``n`` random 32x32x3 images (large enough maps for the workspace)."""
    rng = np.random.default_rng(0)
    X = rng.random((n, 32, 32, 3), dtype=np.float32)
    return X, rng.integers(0, n_classes, n)


def test_without_a_workspace_arrays_are_plain_numpy():
    a = ws.empty(BIG, np.float32)
    assert a.flags.owndata and a.shape == BIG and a.dtype == np.float32
    z = ws.zeros(BIG, np.float64)
    assert not z.any()


def test_a_freed_array_is_reused_a_referenced_one_never():
    with ws.workspace() as space:
        a = ws.empty(BIG, np.float32)
        address = a.ctypes.data
        b = ws.empty(BIG, np.float32)
        assert not np.shares_memory(a, b)
        view = a.reshape(-1)[::3]  # a view alone keeps the memory busy
        del a
        c = ws.empty(BIG, np.float32)
        assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
        del view
        d = ws.empty(BIG, np.float32)
        assert d.ctypes.data == address  # the first buffer, free again
        assert space.nbytes == 3 * np.prod(BIG) * 4


def test_arrays_come_aligned_in_shape_dtype_and_zeroed():
    with ws.workspace():
        a = ws.empty(BIG, np.float32)
        a.fill(7)
        del a
        z = ws.zeros(BIG, np.float32)  # the same memory, zeroed again
        assert z.shape == BIG and z.dtype == np.float32 and not z.any()
        assert z.flags.c_contiguous and z.flags.writeable
        assert z.ctypes.data % 64 == 0
        u = ws.empty(BIG[0] * BIG[1] * 2, np.uint16)  # same bytes, other dtype
        assert u.shape == (BIG[0] * BIG[1] * 2,) and u.dtype == np.uint16


def test_small_requests_do_not_take_large_buffers():
    with ws.workspace() as space:
        del_me = ws.empty((4096, 1024), np.float32)  # 16 MB
        del del_me
        small = ws.empty(BIG, np.float32)  # 2 MB: not served by 16 MB
        assert space.nbytes == (16 + 2) * 2**20
        tiny = ws.empty(10, np.float32)  # below the minimum: plain NumPy
        assert tiny.flags.owndata
        del small


def test_workspace_is_current_in_parallel_parts_and_shared():
    with ws.workspace() as space:
        seen = []

        def part(rows):
            seen.append(ws._current.get())
            return ws.empty(BIG, np.float32).nbytes  # not its garbage: may overflow

        map_parts(part, 8, 8, n_workers=2)
        assert seen and all(s is space for s in seen)
    assert ws._current.get() is None


def test_workspace_is_thread_safe():
    # every thread holds its array while the others ask: none may share
    with ws.workspace():
        held, barrier = [], threading.Barrier(4)

        def take():
            a = ws.empty(BIG, np.float32)
            barrier.wait()
            held.append(a)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i in range(4):
            for j in range(i):
                assert not np.shares_memory(held[i], held[j])


@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_is_unchanged_by_the_workspace(monkeypatch, shuffle):
    # the same bits with the workspace's recycled memory as with fresh
    # arrays; the conv maps are large enough (parts of 2**19 values) to
    # go through it
    X, y = _images(96)
    params = dict(
        conv_filters=(16, 32),
        hidden_layer_sizes=(16,),
        padding="same",
        batch_size=48,
        max_iter=2,
        shuffle=shuffle,
        random_state=0,
    )
    taken = []
    original = ws.Workspace.empty

    def counting(self, shape, dtype, nbytes=None):
        taken.append(shape)
        return original(self, shape, dtype, nbytes)

    monkeypatch.setattr(ws.Workspace, "empty", counting)
    with pytest.warns(Warning):  # 2 epochs: not converged
        recycled = CNNClassifier(**params).fit(X, y)
    assert taken  # the workspace was used
    monkeypatch.setattr(ws, "_MIN_BYTES", 2**62)  # everything from NumPy
    with pytest.warns(Warning):
        fresh = CNNClassifier(**params).fit(X, y)
    for a, b in zip(recycled.coefs_, fresh.coefs_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(recycled.predict_proba(X), fresh.predict_proba(X))


def test_a_fit_reuses_its_buffers_step_after_step(monkeypatch):
    # the workspace stops growing after the first steps: later steps reuse
    # its buffers instead of allocating (and faulting in) fresh memory
    spaces = _workspaces(monkeypatch)
    X, y = _images(256, 2)
    held = {}
    for n_steps in (1, 3, 8):
        clf = CNNClassifier(
            conv_filters=(16,), hidden_layer_sizes=(8,), padding="same", batch_size=32
        )
        clf.partial_fit(X[: 32 * n_steps], y[: 32 * n_steps], classes=[0, 1])
        held[n_steps] = spaces[-1].nbytes
    assert len(spaces) == 3  # one workspace per call
    assert held[8] == held[3]
    assert 0 < held[1] <= held[8] < 1.5 * held[1]


def _workspaces(monkeypatch):
    spaces = []
    original = ws.Workspace.__init__

    def remember(self):
        original(self)
        spaces.append(self)

    monkeypatch.setattr(ws.Workspace, "__init__", remember)
    return spaces


def test_no_more_pools_than_threads_working_at_once(monkeypatch):
    # the parts' helpers run on whichever threads of the process-wide
    # executor are free: each gives its pool back when its share is done,
    # so a 2-thread fit holds 2 pools, not one per executor thread it met
    from threadpoolctl import threadpool_limits

    spaces = _workspaces(monkeypatch)
    X, y = _images(512)
    clf = CNNClassifier(
        conv_filters=(16, 32),
        hidden_layer_sizes=(16,),
        padding="same",
        batch_norm=True,  # several parallel calls a step
        batch_size=128,
        max_iter=3,
        random_state=0,
    )
    with threadpool_limits(2), pytest.warns(Warning):
        clf.fit(X, y)
    assert 1 <= spaces[-1].n_pools <= 2


@pytest.mark.parametrize("early_stopping", [False, True])
def test_the_memory_estimate_covers_the_workspace(monkeypatch, early_stopping):
    # an epoch's last batch (100 rows) is split into larger parts than the
    # full ones (128): the workspace drops the buffers those outgrow, and
    # the estimate counts the larger parts; early stopping's scoring runs
    # outside the workspace, counted on top of it
    from threadpoolctl import threadpool_limits

    from skcnn._memory import fit_estimate

    spaces = _workspaces(monkeypatch)
    X, y = _images(612)
    clf = CNNClassifier(
        conv_filters=(16, 32),
        hidden_layer_sizes=(64,),
        padding="same",
        batch_size=128,
        max_iter=3,
        early_stopping=early_stopping,
        n_iter_no_change=10,
        random_state=0,
    )
    with threadpool_limits(2), pytest.warns(Warning):
        clf.fit(X, y)
        estimate = fit_estimate(
            clf, clf._net, len(X), 4, new_model=True, new_optimizer=True
        )
    assert spaces[-1].nbytes <= estimate.step


def test_predicting_no_rows_gives_no_rows():
    from skcnn._engine import predict_rows

    clf = CNNClassifier(conv_filters=(2,), hidden_layer_sizes=(4,), max_iter=1)
    rng = np.random.default_rng(0)
    with pytest.warns(Warning):
        clf.fit(rng.random((8, 8, 8)), np.arange(8) % 2)
    X = np.empty((0, 64), dtype=np.float32)
    out = predict_rows(clf._net, clf._weights(), X, clf.image_shape_)
    assert out.shape == (0, 1)


def _streamed(clf, X, y, batch):
    """One partial_fit call per minibatch, as streamed data is trained."""
    for start in range(0, len(X), batch):
        clf.partial_fit(
            X[start : start + batch], y[start : start + batch], classes=[0, 1]
        )
        yield clf


STREAMED = dict(
    conv_filters=(16,),
    hidden_layer_sizes=(8,),
    padding="same",
    max_iter=1,
    random_state=0,
)


def test_partial_fit_keeps_its_workspace_from_call_to_call(monkeypatch):
    # one call per minibatch: a workspace per call faulted its buffers in
    # afresh every step (2x slower than one call over the same batches);
    # the kept one serves every call and stops growing, and fit gives the
    # memory back
    spaces = _workspaces(monkeypatch)
    X, y = _images(256, 2)
    clf = CNNClassifier(**STREAMED)
    held = [space.nbytes for c in _streamed(clf, X, y, 32) for space in spaces]
    assert len(spaces) == 1 and clf._workspace is spaces[0]
    assert held[0] > 0 and held[1:] == [held[1]] * 7
    with pytest.warns(Warning):  # one epoch: not converged
        clf.fit(X[:64], y[:64])
    assert clf._workspace is None and len(spaces) == 2


def test_the_kept_workspace_changes_no_result():
    # its buffers hold the last call's values: none may leak into the next
    X, y = _images(192, 2)
    kept, fresh = CNNClassifier(**STREAMED), CNNClassifier(**STREAMED)
    for _ in zip(_streamed(kept, X, y, 32), range(6)):
        pass
    for start in range(0, 192, 32):
        fresh._workspace = None  # a new workspace every call
        next(_streamed(fresh, X[start : start + 32], y[start : start + 32], 32))
    for a, b in zip(kept.coefs_, fresh.coefs_):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(kept.predict_proba(X), fresh.predict_proba(X))


def test_the_kept_workspace_is_not_part_of_the_model():
    import copy
    import pickle

    X, y = _images(64, 2)
    clf = CNNClassifier(**STREAMED)
    for _ in _streamed(clf, X, y, 32):
        pass
    assert clf._workspace is not None
    for copied in (pickle.loads(pickle.dumps(clf)), copy.deepcopy(clf)):
        assert getattr(copied, "_workspace", None) is None
        np.testing.assert_array_equal(copied.predict_proba(X), clf.predict_proba(X))
        copied.partial_fit(X[:32], y[:32])  # makes its own
        assert copied._workspace is not clf._workspace


def test_a_call_that_fails_in_training_leaves_the_workspace_usable(monkeypatch):
    import skcnn._loop as loop

    X, y = _images(64, 2)
    clf = CNNClassifier(**STREAMED)
    for _ in _streamed(clf, X, y, 32):
        pass
    kept, before = clf._workspace, clf.predict_proba(X)
    real = loop.loss_and_gradients

    def fails_after_computing(*args, **kwargs):
        real(*args, **kwargs)  # the step's arrays came from the workspace
        raise RuntimeError("out of luck")

    monkeypatch.setattr(loop, "loss_and_gradients", fails_after_computing)
    with pytest.raises(RuntimeError, match="out of luck"):
        clf.partial_fit(X[:32], y[:32])
    np.testing.assert_array_equal(clf.predict_proba(X), before)  # rolled back
    monkeypatch.setattr(loop, "loss_and_gradients", real)
    clf.partial_fit(X[:32], y[:32])
    assert clf._workspace is kept and kept.n_pools == 1


def test_calls_from_other_threads_share_the_kept_pools():
    # a streaming consumer on a thread pool: each call's thread gives its
    # pool back at the end, so the next call's (another) thread takes it,
    # where a pool per thread that ever called would pile up
    X, y = _images(64, 2)
    clf = CNNClassifier(**STREAMED)
    clf.partial_fit(X[:32], y[:32], classes=[0, 1])
    held = clf._workspace.nbytes
    for _ in range(4):
        thread = threading.Thread(target=clf.partial_fit, args=(X[:32], y[:32]))
        thread.start()
        thread.join()
    assert clf._workspace.n_pools == 1 and clf._workspace.nbytes == held


def test_fit_gives_the_kept_memory_back_before_its_memory_check(monkeypatch):
    from skcnn import _base

    X, y = _images(64, 2)
    clf = CNNClassifier(**STREAMED)
    clf.partial_fit(X[:32], y[:32], classes=[0, 1])
    seen = []
    real = _base.check_memory_before_copy

    def spy(est, *args):
        seen.append(getattr(est, "_workspace", None))
        return real(est, *args)

    monkeypatch.setattr(_base, "check_memory_before_copy", spy)
    with pytest.warns(Warning):  # one epoch: not converged
        clf.fit(X, y)
    assert seen == [None]


def test_partial_fit_counts_the_memory_it_kept(monkeypatch):
    # the memory check of a continued partial_fit counts the kept buffers
    # as held already: otherwise a call that fits in memory, and did last
    # time, would be refused
    from skcnn import _memory
    from skcnn._memory import fit_estimate

    X, y = _images(64, 2)
    clf = CNNClassifier(**STREAMED)
    clf.partial_fit(X, y, classes=[0, 1])
    held = clf._workspace.nbytes
    total = fit_estimate(
        clf, clf._net, len(X), 4, new_model=False, new_optimizer=False
    ).total
    assert 0 < held < total
    monkeypatch.delenv("SKCNN_CHECK_MEMORY", raising=False)
    monkeypatch.setattr(_memory, "_QUERY_ABOVE", 0)
    available = int((total - held / 2) / _memory._USABLE_FRACTION)
    monkeypatch.setattr(_memory, "available_memory", lambda: available)
    clf.partial_fit(X, y)
    clf._workspace = None  # without the kept buffers it would not fit
    with pytest.raises(MemoryError, match="needs an estimated"):
        clf.partial_fit(X, y)
