"""How much memory a step may still take, and refusals that say what it needs.

A volume whose header declares more voxels than the machine can hold must be refused before
its pixels are read: the kernel's OOM killer, or a bare ``MemoryError`` minutes later, tell the
user nothing. The memory available is what the operating system reports (``MemAvailable``, or
psutil where it is installed), capped by the container's cgroup limit and by
``ONCOSEG_MEMORY_LIMIT`` (a budget such as ``6G`` for the whole process, for shared machines and
cluster jobs whose limits the process cannot see).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from oncoseg.errors import InputError

MEMORY_LIMIT_ENV = "ONCOSEG_MEMORY_LIMIT"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_UNLIMITED = 1 << 60


def parse_bytes(text: str) -> int:
    """``6G``, ``6 GB``, ``512M``, ``2.5g`` or a plain number of bytes (binary units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise InputError(MEMORY_LIMIT_ENV, f"'{text}' is not a memory size (e.g. 6G, 512M)")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(count: float) -> str:
    for unit, size in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{int(count)} bytes"


def _meminfo_available() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # other Unix systems: free pages (an underestimate: caches count as used)
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return _UNLIMITED if text == "max" else int(text) if text.isdigit() else None


def _stat_value(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_available() -> int | None:
    """Room left under this container's cgroup memory limit (v2, then v1); reclaimable file
    cache counts as room. None when there is no limit."""
    root = Path("/sys/fs/cgroup")
    for limit_file, usage_file, stat_key in (
            ("memory.max", "memory.current", "inactive_file"),
            ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
             "total_inactive_file")):
        limit = _read_int(root / limit_file)
        usage = _read_int(root / usage_file)
        if limit is None or usage is None or limit >= _UNLIMITED:
            continue
        stat = (root / limit_file).parent / "memory.stat"
        return max(0, limit - usage + _stat_value(stat, stat_key))
    return None


def process_rss() -> int:
    """This process's resident memory now (0 where it cannot be read)."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def available_memory() -> tuple[int | None, str]:
    """(bytes this process may still allocate, where the figure comes from); None when
    nothing could be read (then nothing is refused)."""
    candidates: list[tuple[int, str]] = []
    system = _meminfo_available()
    if system is not None:
        candidates.append((system, "available on this machine"))
    cgroup = _cgroup_available()
    if cgroup is not None:
        candidates.append((cgroup, "left under this container's memory limit"))
    budget = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if budget:
        candidates.append((max(0, parse_bytes(budget) - process_rss()),
                           f"left of the {MEMORY_LIMIT_ENV}={budget} budget"))
    if not candidates:
        return None, "unknown"
    return min(candidates)


def require_memory(what: str, needed: int, purpose: str) -> None:
    """Raise :class:`InputError` naming ``what`` when ``needed`` bytes (to ``purpose``) exceed
    the memory available; nothing is allocated here."""
    available, source = available_memory()
    if available is not None and needed > available:
        raise InputError(what, f"needs about {format_bytes(needed)} of memory to {purpose}, "
                         f"but only {format_bytes(available)} is {source}")
