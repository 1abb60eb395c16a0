"""Reading a trail file into the OS page cache ahead of verify's two passes.

Verify reads every page twice at once: the chain walk in row order, the
integrity check b-tree by b-tree. On a file that is not in the page cache (an
evidence copy, a trail written days ago) both are random reads, since each
b-tree's pages are spread over the file in the order they were appended. One
sequential read of the whole file runs at the disk's streaming rate instead, and
the passes then find their pages cached (10M events, 13.4 GB: verify 123 s cold,
56 s once the file is cached, which a sequential read does in 12 s here).

A thread reads the file front to back, a chunk at a time into one buffer that
is dropped (the GIL is released while it reads; 1 MB more RSS). Asking the
kernel instead was measured not to do it: `posix_fadvise(WILLNEED)` over the
whole file returned in 0.7 s, and reading the file afterwards still took 14 s,
as cold; `readahead(2)` left 9.4 s of the 12.8 s. Only when the file fits in
three quarters of the memory available (MemAvailable, or what the process's
cgroup limit leaves, whichever is less: in a container the page cache counts
against its limit): otherwise what is read early would be evicted before the
passes get to it, and each page would be read twice.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CHUNK_BYTES = 1024 * 1024  # read and dropped; `stop` is heard within one
MEMORY_SHARE = 0.75  # of the memory available the file may take up in the page cache
_NO_V1_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


def available_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable, None where the system does not say (not Linux)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cgroup_room(
    proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")
) -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), None when there is
    no limit or it cannot be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        here = path.lstrip("/")
        if hierarchy == "0" and not controllers:
            room = _room(root / here / "memory.max", root / here / "memory.current")
        elif "memory" in controllers.split(","):
            folder = root / "memory" / here
            room = _room(folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes")
        else:
            continue
        if room is not None:
            return room
    return None


def _room(limit_file: Path, usage_file: Path) -> int | None:
    try:
        limit_text = limit_file.read_text().strip()
        used = int(usage_file.read_text())
        limit = None if limit_text == "max" else int(limit_text)
    except (OSError, ValueError):
        return None
    if limit is None or limit >= _NO_V1_LIMIT:
        return None
    return max(limit - used, 0)


def room_for_pages() -> int | None:
    """What the page cache may take for this process: the lesser of the two."""
    known = [room for room in (available_bytes(), cgroup_room()) if room is not None]
    return min(known) if known else None


def worth_reading(size: int, available: int | None) -> bool:
    return available is not None and 0 < size <= available * MEMORY_SHARE


class ReadAhead:
    """Reads the file front to back in a daemon thread, until done or stopped."""

    def __init__(self, path: Path) -> None:
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        size = os.fstat(fd).st_size
        if not worth_reading(size, room_for_pages()):
            os.close(fd)
            return
        self._thread = threading.Thread(
            target=self._run, args=(fd,), name="docktrail-verify-readahead", daemon=True
        )
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def _run(self, fd: int) -> None:
        chunk = bytearray(CHUNK_BYTES)
        try:
            with open(fd, "rb", buffering=0) as raw:
                while not self._stopping.is_set() and raw.readinto(chunk):
                    pass
        except OSError:
            return  # only a head start: the passes read the file anyway

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
