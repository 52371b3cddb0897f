"""Memory guard: a stage that would need more memory than this process may use stops with a clear error
before it loads anything, instead of driving the machine into swap or the OOM killer.

The need is estimated from the input's size (rows times the stage's measured peak bytes per row,
``bench/bench_data_scale.py``); what is available is the least of the memory the kernel reports available
(``MemAvailable``), the cgroup's limit less its usage, and the address-space limit (``ulimit -v`` /
``prlimit --as``) less what this process has mapped already.
"""

from __future__ import annotations

import gzip
import logging
import os
import resource
from pathlib import Path

from r2rec.errors import MemoryBudgetError

log = logging.getLogger(__name__)

GIB = 1 << 30
_SAMPLE_BYTES = 1 << 20


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _cgroup_free() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None


def available_memory() -> tuple[int, str]:
    """(bytes this process can still allocate, what limits it)."""
    found: list[tuple[int, str]] = []
    avail = _meminfo("MemAvailable")
    if avail is not None:
        found.append((avail, "available memory (MemAvailable)"))
    cgroup = _cgroup_free()
    if cgroup is not None:
        found.append((cgroup, "the cgroup's memory limit less its usage"))
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append((soft - _vm_size(), "the address-space limit (ulimit -v / prlimit --as) less what is mapped"))
    if not found:
        return 1 << 62, "no known limit"
    return min(found)


def estimate_rows(path: str | os.PathLike) -> int:
    """Lines in a text file (gunzipped when it ends in ``.gz``), estimated from its size and its first MiB."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as raw:
        if path.name.endswith(".gz"):
            try:
                with gzip.GzipFile(fileobj=raw) as gz:
                    head = gz.read(_SAMPLE_BYTES)
                    read = raw.tell()  # compressed bytes consumed (to the reader's buffer)
            except (OSError, EOFError):
                return 0  # a damaged gzip file: the reader names the fault
            ratio = len(head) / max(read, 1)
        else:
            head, ratio = raw.read(_SAMPLE_BYTES), 1.0
    if len(head) >= size * ratio:
        return head.count(b"\n") + (not head.endswith(b"\n"))
    per_line = len(head) / max(head.count(b"\n"), 1)
    return int(size * ratio / per_line) + 1


def check_memory(need: int, path: str | os.PathLike | None, what: str, fix: str) -> None:
    """MemoryBudgetError when ``need`` bytes (the estimate for ``what``) exceed what is available."""
    avail, limit = available_memory()
    log.debug(f"memory: {what} needs ~{need / GIB:.2f} GiB; {avail / GIB:.2f} GiB available ({limit})")
    if need > avail:
        raise MemoryBudgetError(
            f"{what} needs ~{need / GIB:.1f} GiB of memory, but only {max(avail, 0) / GIB:.1f} GiB is "
            f"available ({limit}); stopped before loading, to spare the machine from swapping. To fix: {fix}",
            path,
        )
