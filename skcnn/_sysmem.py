"""How much memory this process can still allocate, where it can be known.

The smallest of the kernel's ``MemAvailable``, the room under the process's
cgroup memory limits and under ``RLIMIT_AS`` (``ulimit -v``); elsewhere the
free physical pages, or None. Read by the memory check (``_memory``) only
when an estimate is large enough to matter.
"""

import os

_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge page-aligned value


def available_memory():
    """Bytes this process can still allocate, or None when unknown.

    The smallest of: the kernel's ``MemAvailable`` (free memory plus what
    can be reclaimed without swapping), the room left under the process's
    cgroup memory limits (v1 or v2, every level up to the root; reclaimable
    file cache counts as free) and under ``RLIMIT_AS``. Where
    ``/proc/meminfo`` cannot be read, the free physical pages
    (``os.sysconf``) if the platform reports them; else None, and no check
    is made.
    """
    limits = [_safely(_meminfo_available), _safely(_cgroup_available)]
    limits.append(_safely(_rlimit_available))
    if limits[0] is None:
        limits[0] = _safely(_sysconf_available)
    limits = [limit for limit in limits if limit is not None]
    return max(0, min(limits)) if limits else None


def _safely(query):
    # an unexpected format (another kernel, a container runtime's fake
    # files) means "unknown", never a failed fit
    try:
        return query()
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _meminfo_available():
    text = _read("/proc/meminfo")
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def _sysconf_available():
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _cgroup_available():
    """The least room left under any cgroup memory limit of this process."""
    text = _read("/proc/self/cgroup")
    if text is None:
        return None
    room = []
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            root = "/sys/fs/cgroup"
            files = ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):  # cgroup v1
            root = "/sys/fs/cgroup/memory"
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes")
            files += ("total_inactive_file",)
        else:
            continue
        directory = os.path.normpath(os.path.join(root, path.lstrip("/")))
        if not os.path.isdir(directory):  # a cgroup namespace: we are its root
            directory = root
        # a parent's limit binds its children too: walk up to the root
        while directory.startswith(root):
            room.append(_cgroup_room(directory, *files))
            if directory == root:
                break
            directory = os.path.dirname(directory)
    room = [r for r in room if r is not None]
    return min(room) if room else None


def _cgroup_room(directory, limit_file, usage_file, inactive_key):
    limit = (_read(os.path.join(directory, limit_file)) or "max").strip()
    usage = _read(os.path.join(directory, usage_file))
    if not limit.isdigit() or int(limit) >= _UNLIMITED or usage is None:
        return None
    # inactive file cache is reclaimed before the OOM killer acts
    inactive = 0
    for line in (_read(os.path.join(directory, "memory.stat")) or "").splitlines():
        key, _, value = line.partition(" ")
        if key == inactive_key:
            inactive = int(value)
    return int(limit) - max(0, int(usage) - inactive)


def _rlimit_available():
    """Room under ``RLIMIT_AS`` (ulimit -v): beyond it allocations fail."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    statm = _read("/proc/self/statm")
    if limit == resource.RLIM_INFINITY or statm is None:
        return None
    return limit - int(statm.split()[0]) * os.sysconf("SC_PAGE_SIZE")
