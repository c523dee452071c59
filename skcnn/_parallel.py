"""Splitting a minibatch across threads.

Outside the GEMMs every operation of the network is single-threaded and
memory-bound; NumPy releases the GIL in all of them, so processing parts of
a batch in parallel threads (each with a single-threaded BLAS) uses the
cores that a multi-threaded BLAS alone leaves idle. The thread count follows
the BLAS thread limit in force (``OMP_NUM_THREADS``, threadpoolctl, or the
per-worker limit joblib sets inside ``GridSearchCV(n_jobs=...)``), so nested
parallelism never oversubscribes the machine.
"""

import atexit
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

from threadpoolctl import ThreadpoolController

# Fewer values than this per part and the threads cost more than they save.
_MIN_VALUES_PER_PART = 2**17

_pool = None
_pool_lock = threading.Lock()


_controller = None


def _blas():
    # Inspecting the loaded libraries takes milliseconds: do it once. NumPy's
    # BLAS, the one that matters here, is loaded before this module.
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def _blas_threads_in_force():
    blas = _blas().select(user_api="blas").lib_controllers
    counts = [lib.get_num_threads() for lib in blas]
    counts = [c for c in counts if c]
    return max(1, min(counts)) if counts else 1


def blas_threads():
    """The number of threads BLAS may use now (1 when unknown).

    skcnn's own one-thread limit (:class:`_SingleThreadedBlas`) does not
    count: a call that starts while another thread's call holds it must split
    its work just as it would alone, or its results would depend on timing
    (parts of other sizes round differently in the GEMMs).
    """
    with _SingleThreadedBlas._lock:
        if _SingleThreadedBlas._depth:
            return _SingleThreadedBlas._threads_outside
        return _blas_threads_in_force()


class _SingleThreadedBlas:
    """Reference-counted BLAS limit: safe when several threads each enter it.

    threadpoolctl's limiter restores the value it saw on entry, so two
    overlapping limiters in two threads (say, two concurrent ``predict``
    calls) could leave BLAS pinned to one thread for good. Here the first
    thread in sets the limit and the last one out restores it.
    """

    _lock = threading.Lock()
    _depth = 0
    _limiter = None
    _threads_outside = 1  # the limit in force before the first thread set it

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                cls._threads_outside = _blas_threads_in_force()
                cls._limiter = _blas().limit(limits=1, user_api="blas")
            cls._depth += 1
        return self

    def __exit__(self, *exc):
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0:
                cls._limiter.restore_original_limits()
                cls._limiter = None
        return False


def single_threaded_blas(n_threads):
    """Pin BLAS to one thread while ``n_threads`` threads each call it."""
    return _SingleThreadedBlas() if n_threads > 1 else nullcontext()


def n_parts(n_rows, values_per_row, n_threads):
    """How many parts to split ``n_rows`` rows into (1 = don't split)."""
    by_size = (n_rows * values_per_row) // _MIN_VALUES_PER_PART
    return int(max(1, min(n_threads, n_rows, by_size)))


def _executor(n_workers):
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < n_workers:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(n_workers, thread_name_prefix="skcnn")
        return _pool


def map_parts(fn, n_rows, parts):
    """``[fn(slice) for slice in parts]`` over ``n_rows``, in parallel threads.

    The rows are split into ``parts`` contiguous, near-equal slices; the
    last one runs in the calling thread. Results come back in slice order,
    so whatever combines them does so in a fixed, reproducible order.
    """
    bounds = [n_rows * k // parts for k in range(parts + 1)]
    slices = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    if parts == 1:
        return [fn(slices[0])]
    futures = [_executor(parts - 1).submit(fn, s) for s in slices[:-1]]
    last = fn(slices[-1])
    return [f.result() for f in futures] + [last]


@atexit.register
def _shutdown():
    if _pool is not None:
        _pool.shutdown(wait=False)
