"""Large arrays recycled across the steps of one fit (a per-fit workspace).

Every training step allocates the same large arrays (im2col rows, conv
outputs, pooling caches, gradients) and frees them at its end. glibc's
allocator returns such freed memory to the operating system once enough of
it is free at the top of a heap, and the next step faults it back in one
zeroed page at a time: measured 8,000 page faults per step on the reference
network in a fresh process (33 MB zeroed per step), a third of its training
time. A library must not retune its host's allocator (``mallopt`` is
process-wide), so skcnn keeps its own arrays instead, for one fit.

:func:`workspace` makes a :class:`Workspace` current (in this context, and
in the parts that :mod:`~skcnn._parallel` runs for it on other threads);
:func:`empty` and :func:`zeros` take their memory from it when one is
current and the array is large, from NumPy otherwise. An array is handed
out again once nothing references it any more -- not the array, nor any
view of it -- which CPython's reference counts tell exactly: a cache still
held by a part, or a result a caller kept, is never reused. The memory goes
back when the fit ends -- except ``partial_fit``'s, which the estimator keeps
for its next call (see ``BaseCNN._kept_workspace``).
"""

import sys
import threading
from bisect import bisect_left, bisect_right
from contextlib import contextmanager
from contextvars import ContextVar
from math import prod

import numpy as np

# From glibc's initial mmap threshold (128 KiB) up: an array that size gets
# fresh pages from the OS in a new process, each one a page fault. Measured
# with the reference network: with 1 MiB here, a Winograd layer's smaller
# buffers still faulted and the layer ran 1.4-2.1x slower than with warm
# memory; a lookup costs about 3 microseconds.
_MIN_BYTES = 1 << 17

# Buffers start on a cache line: AVX-512 loads and stores of a whole line
# then never straddle two.
_ALIGN = 64

_current = ContextVar("skcnn_workspace", default=None)


def _raw_refcounts(entries):
    # Of each entry's raw memory. A free one is referenced by its entry and
    # by its aligned view alone; the probe, an entry nothing else holds, is
    # counted through the same code, whatever the interpreter's borrowing
    # rules.
    return [sys.getrefcount(entry[0]) for entry in entries]


def _entry(nbytes):
    """``(raw, buffer)``: raw memory and its ``nbytes`` from a cache line on."""
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw, raw[start : start + nbytes]


class _Pool:
    """Buffers of raw bytes, each lent out whole as one array at a time.

    Used by one thread at a time (see :meth:`Workspace.release`), so it
    needs no lock; reference counts are the process's, so an array that
    another thread still holds is busy. Views of a buffer reference its raw
    memory (NumPy points a view of a view at the array that owns the
    memory): the buffer is busy while any of them lives.
    """

    def __init__(self):
        self.by_size = {}  # nbytes: entries, the one lent out last at the end
        self.sizes = []  # the keys, sorted
        self.free_count = _raw_refcounts([_entry(0)])[0]

    def empty(self, shape, dtype, nbytes):
        # The same sizes come back step after step: a buffer of exactly the
        # size, the one lent out last (the likeliest in cache), is the
        # common case and the cheapest to find.
        entries = self.by_size.get(nbytes)
        k = self._last_free(entries) if entries else None
        if k is None:
            entries, k = self._other(nbytes)
        entry = entries.pop(k)
        entries.append(entry)
        return entry[1][:nbytes].view(dtype).reshape(shape)

    def _last_free(self, entries):
        counts = _raw_refcounts(entries)
        for k in range(len(counts) - 1, -1, -1):
            if counts[k] <= self.free_count:
                return k
        return None

    def _other(self, nbytes):
        """``(entries, index)`` of a free buffer for ``nbytes``: the smallest
        free one up to twice the size, else a new one."""
        lo = bisect_right(self.sizes, nbytes)
        for size in self.sizes[lo : bisect_right(self.sizes, 2 * nbytes, lo)]:
            k = self._last_free(self.by_size[size])
            if k is not None:
                return self.by_size[size], k
        # Free buffers of half to all of the new size are dropped: too small
        # for this request, and the new buffer serves most of what they
        # served. Arrays that grow (a last, smaller batch split into larger
        # parts, say) then leave no former buffers behind.
        lo = bisect_left(self.sizes, nbytes // 2)
        for size in self.sizes[lo : bisect_left(self.sizes, nbytes, lo)]:
            entries = self.by_size[size]
            counts = _raw_refcounts(entries)
            entries[:] = [e for e, c in zip(entries, counts) if c > self.free_count]
            if not entries:
                del self.by_size[size]
                self.sizes.remove(size)
        if nbytes not in self.by_size:
            self.by_size[nbytes] = []
            self.sizes.insert(bisect_left(self.sizes, nbytes), nbytes)
        entries = self.by_size[nbytes]
        entries.append(_entry(nbytes))
        return entries, len(entries) - 1

    @property
    def nbytes(self):
        return sum(size * len(e) for size, e in self.by_size.items())


class Workspace:
    """Buffers lent out as arrays, from pools that threads take in turn.

    A request takes the smallest free buffer that holds it, if that is at
    most twice its size (so small arrays do not pin large buffers), and
    otherwise allocates a new one; buffers are freed with the workspace.
    Each thread draws from a pool of its own while it works: a buffer last
    written on another core would have to cross between the cores' caches
    (measured: one shared pool trained the reference network 10-20 %
    slower, and unevenly from run to run). A helper thread gives its pool
    back after each part it computes (:func:`release_pool`),
    so there are never more pools than threads working at once, whichever
    threads of the process-wide executor run the parts.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._local = threading.local()
        self._pools = []  # all of them
        self._idle = []  # those no thread holds

    @property
    def nbytes(self):
        """Bytes held by all buffers, lent out or free."""
        with self._lock:
            return sum(pool.nbytes for pool in self._pools)

    @property
    def n_pools(self):
        """How many pools the workspace has made."""
        return len(self._pools)

    def empty(self, shape, dtype, nbytes):
        """An uninitialized C-contiguous array of ``shape`` (a tuple),
        ``dtype`` (a NumPy dtype) and ``nbytes`` bytes, as ``np.empty``."""
        pool = getattr(self._local, "pool", None)
        if pool is None:
            with self._lock:
                if self._idle:
                    pool = self._idle.pop()
                else:
                    pool = _Pool()
                    self._pools.append(pool)
            self._local.pool = pool
        return pool.empty(shape, dtype, nbytes)

    def release(self):
        """Give this thread's pool back, for whichever thread needs one next."""
        pool = getattr(self._local, "pool", None)
        if pool is not None:
            self._local.pool = None
            with self._lock:
                self._idle.append(pool)


@contextmanager
def workspace(kept=None):
    """Make ``kept`` (or a new :class:`Workspace`) current for the ``with``
    block, unless one already is (a nested fit step, say, shares its
    caller's)."""
    if _current.get() is not None:
        yield _current.get()
        return
    ws = Workspace() if kept is None else kept
    token = _current.set(ws)
    try:
        yield ws
    finally:
        # this thread's pool goes back: a kept workspace serves the next
        # call from any thread, without a pool per thread that ever called
        ws.release()
        _current.reset(token)


@contextmanager
def suspended():
    """No workspace current for the ``with`` block: what runs there (early
    stopping's scoring, once an epoch) allocates as it would outside a fit,
    and adds nothing to the fit's buffers."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


def release_pool():
    """Give this thread's pool back to the current workspace (if any): a
    helper thread does so after each part it computes."""
    ws = _current.get()
    if ws is not None:
        ws.release()


def empty(shape, dtype):
    """``np.empty(shape, dtype)``, from the current workspace if large."""
    ws = _current.get()
    if ws is None:
        return np.empty(shape, dtype=dtype)
    if type(shape) is not tuple:
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    dtype = np.dtype(dtype)
    nbytes = prod(shape) * dtype.itemsize
    if nbytes < _MIN_BYTES:
        return np.empty(shape, dtype=dtype)
    return ws.empty(shape, dtype, nbytes)


def copy(a):
    """A C-contiguous copy of ``a``, from the current workspace if large."""
    out = empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def zeros(shape, dtype):
    """``np.zeros(shape, dtype)``, from the current workspace if large."""
    if _current.get() is None:
        return np.zeros(shape, dtype=dtype)  # calloc: zero pages for free
    out = empty(shape, dtype)
    out.fill(0)
    return out
