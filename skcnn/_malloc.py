"""Keep glibc from returning every large temporary to the OS.

A training step allocates a few dozen arrays of 0.1-10 MB and frees them
again. glibc serves allocations above its mmap threshold (128 KB until a
large block has been freed, then adapted up to 32 MB) with fresh ``mmap``
pages, which the kernel must fault in and zero on first touch: measured on
the reference network that page-faulting cost 40 % of the training
throughput whenever the process had not happened to free a large block
before. Fixing the threshold at glibc's own upper bound makes those
temporaries be recycled from the heap, as they would be after such a free.

Applied once per process, on Linux with glibc only; set the environment
variable ``SKCNN_TUNE_MALLOC=0`` to leave malloc untouched.
"""

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum (DEFAULT_MMAP_THRESHOLD_MAX)

_done = False


def tune_malloc():
    """Raise glibc's mmap and trim thresholds once; a no-op elsewhere."""
    global _done
    if _done:
        return
    _done = True
    if not sys.platform.startswith("linux") or os.environ.get(
        "SKCNN_TUNE_MALLOC", "1"
    ) in ("0", "false", "no"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        # the trim threshold at twice the mmap one is what glibc's own
        # adaptation sets
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass  # not glibc (musl, ...): nothing to tune
