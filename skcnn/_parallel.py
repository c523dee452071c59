"""Splitting a minibatch into parts computed in parallel threads.

Outside the GEMMs every operation of the network is single-threaded and
memory-bound; NumPy releases the GIL in all of them, so processing parts of
a batch in parallel threads (each with a single-threaded BLAS) uses the
cores that a multi-threaded BLAS alone leaves idle.

Results must not depend on the machine's load or thread settings, so the
*split* never depends on threads: the number of parts follows from the
batch size and the architecture alone (:func:`n_parts`), every part runs
with a single-threaded BLAS whatever the number of threads (a GEMM's
rounding may depend on how BLAS splits it), and the parts' results are
combined in part order. Only the number of threads that work through the
parts follows the BLAS thread limit in force (``OMP_NUM_THREADS``,
threadpoolctl, or the per-worker limit joblib sets inside
``GridSearchCV(n_jobs=...)``), so nested parallelism never oversubscribes
the machine; that number changes the speed, never a bit of the result.
"""

import atexit
import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import ThreadpoolController

from ._workspace import release_pool

try:  # the class exists in every threadpoolctl; its export is not promised
    from threadpoolctl import OpenBLASController
except ImportError:  # pragma: no cover
    OpenBLASController = None

# Fewer activation values than this per part and the per-part overhead
# (Python, thread hand-offs, one more gradient sum) costs more than the
# parallelism gains. Measured on 2 threads against 2**18 and 2**20, with
# Winograd layers and the dense weight gradients collected once (training
# and inference img/s): 2**19 was fastest on every network measured --
# +4 % / +10 % on the reference network (parts of 32 images at batch 128),
# +19 % / +14 % on 64x64x3 images, +9 % / +12 % on (64, 128) filters --
# while 2**20 left too few parts in a prediction chunk.
_MIN_VALUES_PER_PART = 2**19

_controller = None
_blas_libraries = None


def _blas():
    # Inspecting the loaded libraries takes milliseconds: do it once. NumPy's
    # BLAS, the one that matters here, is loaded before this module.
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def _blas_controllers():
    # The BLAS libraries of ``_blas()``, selected once too: a selection costs
    # microseconds, which a one-image predict pays on every call.
    global _blas_libraries
    if _blas_libraries is None:
        _blas_libraries = tuple(_blas().select(user_api="blas").lib_controllers)
    return _blas_libraries


def _blas_thread_counts():
    """``(library, threads)`` of each BLAS, threads None when unknown."""
    return [(lib, lib.get_num_threads()) for lib in _blas_controllers()]


def _threads_of(counts):
    known = [c for _, c in counts if c]
    return max(1, min(known)) if known else 1


def _blas_threads_in_force():
    return _threads_of(_blas_thread_counts())


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


def _free_blas_control():
    # threadpoolctl >= 3.8 lets only one "controlling" thread change the
    # process-wide limit of a pthreads OpenBLAS and silently ignores the
    # others; a thread takes control by setting a limit and keeps it until
    # cleared. The thread that pins or restores the limit here is whichever
    # enters first or leaves last, so control is freed around each change:
    # otherwise the first thread ever to pin (say, the main one) would make
    # every pin from another thread a no-op -- BLAS multi-threaded under
    # parts that expect it single-threaded -- and a restore from another
    # thread a no-op too, leaving BLAS pinned to one thread for good.
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


class _SingleThreadedBlas:
    """Reference-counted BLAS limit: safe when several threads each enter it.

    threadpoolctl's limiter restores the value it saw on entry, so two
    overlapping limiters in two threads (say, two concurrent ``predict``
    calls) could leave BLAS pinned to one thread for good. Here the first
    thread in sets the limit and the last one out restores it; both happen
    under the lock, so a thread entering while the last one leaves either
    keeps the limit alive or sets it anew.

    Only the libraries not already at one thread are set and restored: a
    limit is a few C calls, but threadpoolctl's limiter reads every
    library's full info around them, which a one-image predict would pay
    on every call (and nothing at all is to be done under an outer limit
    of one thread).
    """

    _lock = threading.Lock()
    _depth = 0
    _pinned = ()  # (library, its thread count before the pin), to restore
    _threads_outside = 1  # the limit in force before the first thread set it

    def __enter__(self):
        cls = type(self)
        with cls._lock:
            if cls._depth == 0:
                counts = _blas_thread_counts()
                cls._threads_outside = _threads_of(counts)
                cls._pinned = tuple((lib, c) for lib, c in counts if c and c != 1)
                _set_threads((lib, 1) for lib, _ in cls._pinned)
            cls._depth += 1
        return self

    def __exit__(self, *exc):
        cls = type(self)
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0:
                _set_threads(cls._pinned)
                cls._pinned = ()
        return False


def _set_threads(limits):
    """Set each ``(library, threads)``, with BLAS control freed around."""
    limits = tuple(limits)
    if limits:
        _free_blas_control()
        for lib, threads in limits:
            lib.set_num_threads(threads)
        _free_blas_control()


def single_threaded_blas():
    """Pin BLAS to one thread (reference-counted, see ``_SingleThreadedBlas``).

    Always, not only when several threads run: a multi-threaded GEMM may
    round differently from a single-threaded one, and results must not
    depend on the thread count.
    """
    return _SingleThreadedBlas()


def n_parts(n_rows, values_per_row):
    """How many parts to split ``n_rows`` rows into (1 = don't split).

    A power of two (balanced on 2, 4, 8... threads) such that every part
    holds at least ``_MIN_VALUES_PER_PART`` values, and at most one part per
    row. It depends on the batch and the architecture only -- never on the
    thread count -- so the computation, and its rounding, is the same
    whatever the machine's load or thread settings.
    """
    return _power_of_two(n_rows, (n_rows * values_per_row) // _MIN_VALUES_PER_PART)


def training_parts(n_rows, values_per_row):
    """How many parts to split a training step's ``n_rows`` rows into.

    As :func:`n_parts`, but parts of at least twice as many values: a
    training part runs the backward pass too, and each part adds a set of
    gradients to sum. Yet never fewer than two parts where :func:`n_parts`
    would split at all, so that two threads still share a smaller batch.
    Measured on 2 threads against :func:`n_parts` alone (training img/s):
    +13 % on 32x32x3 images, +1-13 % on 64x64x3, +5-10 % on the reference
    network at batch 128 and +13 % at 256, +3-6 % with (64, 128) filters;
    the same at batch 64 (two parts either way). The one loss: -7-11 % on
    28x28x1 images with average pooling and "same" padding, whose 4 parts of
    32 rows become 2 of 64 as the reference network's do.
    """
    values = n_rows * values_per_row
    by_size = values // (2 * _MIN_VALUES_PER_PART)
    if by_size:  # n_parts would split: at least two parts
        by_size = max(by_size, 2)
    return _power_of_two(n_rows, by_size)


def _power_of_two(n_rows, by_size):
    # the largest power of two <= by_size, at least 1 and at most n_rows
    by_size = max(1, min(n_rows, by_size))
    return 1 << (int(by_size).bit_length() - 1)


# One pool for the process, never shut down while it may be in use: a pool
# replaced under a thread about to submit to it makes that submit fail. Its
# threads start on demand; its size only bounds how many helpers all calls
# together get, and a call never depends on getting any (its own thread
# works through the parts too), so a busy pool slows calls down, never
# blocks them.
_POOL_SIZE = max(4, os.cpu_count() or 1)
_pool = None
_pool_lock = threading.Lock()


def _executor():
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="skcnn")
        return _pool


def _after_fork_in_child():
    # A forked child inherits the pool but not its threads, and locks that a
    # thread which does not exist there may hold: start afresh.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()
    _SingleThreadedBlas._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Parts:
    """Parts of one call: handed out in order, folded in order.

    Each thread claims the next unclaimed part, computes it, and stores its
    result; whichever thread stores the result the fold awaits folds every
    consecutive stored result. At most ``window`` parts are claimed but not
    yet folded, which bounds how many results (gradients) wait in memory.
    """

    def __init__(self, fn, combine, slices, window):
        self.fn, self.combine, self.slices = fn, combine, slices
        self.window = window
        self.cond = threading.Condition()
        self.claimed = 0  # parts handed out
        self.folded = 0  # parts folded into ``result``
        self.busy = 0  # parts being computed
        self.done = {}  # results computed, awaiting their turn
        self.folding = False  # some thread is folding
        self.result = None
        self.error = None

    def work(self, after_part=None):
        """Claim and compute parts until none is left (or one failed),
        calling ``after_part()`` after each, before its result is stored."""
        while True:
            with self.cond:
                while (
                    self.error is None
                    and self.claimed < len(self.slices)
                    and self.claimed >= self.folded + self.window
                ):
                    self.cond.wait()
                if self.error is not None or self.claimed == len(self.slices):
                    return
                k = self.claimed
                self.claimed += 1
                self.busy += 1
            try:
                try:
                    value = self.fn(self.slices[k])
                finally:  # a failed part's thread gives its pool back too
                    if after_part is not None:
                        after_part()
            except BaseException as exc:
                self.fail(exc)
                return
            with self.cond:
                self.busy -= 1
                self.done[k] = value
                if self.folding:  # the folding thread will find it
                    continue
                self.folding = True
            self._fold()

    def _fold(self):
        # Only the thread that set ``folding`` gets here, so ``result`` has
        # one writer at a time; the lock hands it from thread to thread.
        while True:
            with self.cond:
                if self.folded not in self.done or self.error is not None:
                    self.folding = False
                    self.cond.notify_all()
                    return
                value = self.done.pop(self.folded)
                first = self.folded == 0
            try:
                self.result = value if first else self.combine(self.result, value)
            except BaseException as exc:
                with self.cond:
                    self.folding = False
                self.fail(exc, claimed=False)
                return
            with self.cond:
                self.folded += 1
                self.cond.notify_all()  # the window moved on

    def fail(self, exc, claimed=True):
        with self.cond:
            self.busy -= claimed
            if self.error is None:
                self.error = exc
            self.cond.notify_all()

    def wait(self):
        """Wait until every part is folded, or one failed and none runs."""
        with self.cond:
            while self.folding or (
                self.busy if self.error is not None else self.folded < len(self.slices)
            ):
                self.cond.wait()


def split(n_rows, parts, start=0):
    """``parts`` contiguous, near-equal slices of rows ``start`` to
    ``start + n_rows``."""
    bounds = [start + n_rows * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def reduce_parts(fn, combine, n_rows, parts, n_workers):
    """Fold ``fn(slice)`` over ``parts`` slices of ``n_rows`` rows, in order.

    The rows are split into ``parts`` contiguous, near-equal slices
    (:func:`split`); see :func:`reduce_slices`.
    """
    return reduce_slices(fn, combine, split(n_rows, parts), n_workers)


def reduce_slices(fn, combine, slices, n_workers):
    """Fold ``fn(slice)`` over ``slices``, in order.

    The result is ``combine(...combine(combine(r0, r1), r2)..., r_last)`` with
    ``r_k = fn(slices[k])`` -- the same fold in the same order whatever
    ``n_workers``, so the same bits. Up to ``n_workers`` threads (the calling
    one and pool threads) compute the parts, each with a single-threaded
    BLAS; the call returns once every part is done, and re-raises the first
    exception a part raised.
    """
    if not slices:
        return None
    n_workers = max(1, min(n_workers, len(slices)))
    with single_threaded_blas():
        if n_workers == 1:
            result = fn(slices[0])
            for s in slices[1:]:
                result = combine(result, fn(s))
            return result
        state = _Parts(fn, combine, slices, window=2 * n_workers)
        pool = _executor()
        # Each helper runs in a copy of this context: what the caller made
        # current (a fit's workspace) is current in its parts too, and its
        # workspace pool goes back when its share is done. The submit itself
        # runs in an empty context: an executor thread it starts must not
        # keep this one (Python 3.14 lets new threads inherit the context).
        helpers = [
            contextvars.Context().run(
                pool.submit, contextvars.copy_context().run, _helper, state
            )
            for _ in range(n_workers - 1)
        ]
        try:
            state.work()
            state.wait()  # the BLAS limit must outlive every running part
        except BaseException as exc:  # say, KeyboardInterrupt while waiting
            state.fail(exc, claimed=False)  # stops the helpers claiming
            state.wait()
            raise
        finally:
            for helper in helpers:
                helper.cancel()  # a helper still queued has nothing to do
    if state.error is not None:
        raise state.error
    return state.result


def _helper(state):
    # The pool goes back after each part, before its result is stored: the
    # caller may return, and start another call whose helper needs a pool,
    # as soon as the last result is folded, before this thread gets here.
    state.work(after_part=release_pool)


def map_parts(fn, n_rows, parts, n_workers=None):
    """``[fn(slice) for slice in parts slices]`` on up to ``n_workers`` threads.

    See :func:`reduce_parts`; the results come back in slice order.
    ``n_workers=None`` means one thread per part.
    """
    n_workers = parts if n_workers is None else n_workers
    return reduce_parts(lambda s: [fn(s)], lambda a, b: a + b, n_rows, parts, n_workers)


@atexit.register
def _shutdown():
    if _pool is not None:
        _pool.shutdown(wait=False)
