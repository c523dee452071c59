"""The benchmarks' allocator setting, peak memory measurement and machine
description.

glibc hands a freed block above its (adaptive) mmap threshold straight back
to the system, and trims the heap's top past the trim threshold; the next
block of that size is then faulted in page by page. PyTorch allocates every
activation anew, so its speed came to depend on what the process had
allocated before -- on which shapes had run earlier: measured on this
project's 2-core VM, its inference on 64x64x3 images at 3,900 or 8,600
img/s, its batch-256 training at 5,900 or 10,200. With both thresholds
pinned neither varies, and both reach the faster figure. skcnn's workspace
reuses its buffers, so its figures do not move (within the noise).

The benchmarks time with the thresholds pinned (``--default-malloc``: not)
and measure peak memory in workers with the caller's settings, as a user's
process allocates.
"""

import os
import platform
import resource
import sys

PINNED_MALLOC = (
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
)


def pinned_env(env):
    """``env`` with ``PINNED_MALLOC`` added to its ``GLIBC_TUNABLES``."""
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    return dict(env, GLIBC_TUNABLES=":".join(tunables + [PINNED_MALLOC]))


def unpinned_env(env):
    """``env`` as it was before :func:`pinned_env`."""
    env = dict(env)
    tunables = env.pop("GLIBC_TUNABLES", "").replace(PINNED_MALLOC, "")
    tunables = ":".join(t for t in tunables.split(":") if t)
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    return env


def malloc_pinned():
    return PINNED_MALLOC in os.environ.get("GLIBC_TUNABLES", "")


def pin_malloc():
    """Run this script again with the thresholds pinned, where glibc is the
    C library and they are not pinned yet (glibc reads its tunables at
    start-up only); return where there is nothing to do."""
    if platform.libc_ver()[0] != "glibc" or malloc_pinned():
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, pinned_env(os.environ))


def malloc_line():
    if malloc_pinned():
        return "glibc thresholds pinned for timing (mmap 32 MiB, trim 1 GiB)"
    return "default"


def cpu_model():
    """The CPU's model name: figures from different machines differ."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [x for x in f if x.startswith("model name")]
        return lines[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        return platform.processor() or platform.machine()


def _status_bytes(field):
    with open("/proc/self/status") as f:
        return 1024 * next(int(x.split()[1]) for x in f if x.startswith(field + ":"))


def peak_tracker():
    """``(method, baseline bytes, peak() -> bytes)`` from now on.

    Resets the kernel's high-water mark (Linux's clear_refs "5") so a peak
    of the data loading is not mistaken for one of training; without it,
    the ru_maxrss delta (a lower bound when loading peaked higher).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "VmHWM", _status_bytes("VmRSS"), lambda: _status_bytes("VmHWM")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024  # bytes there, else kB

        def maxrss():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

        return "ru_maxrss", maxrss(), maxrss
