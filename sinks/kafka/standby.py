"""One active consumer per central trail; the others wait as hot standbys.

The central trail is one SQLite file: its writes serialize whatever the
number of consumers, and each consumer keeps per-host chain states and the
fleet rules' windows in memory. Consumers sharing partitions would gain no
write throughput and would need those states handed over on every
rebalance; a second consumer on the same trail therefore waits on an
exclusive lock beside it (`<trail>.consume-lock`, flock) and takes over, from
the offsets the trail stored, when the active one stops or dies (the kernel
drops a dead process's lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from config.errors import TrailError

log = logging.getLogger("docktrail.consume")

POLL_SECS = 0.5


def lock_path(trail: Path) -> Path:
    return trail.with_name(trail.name + ".consume-lock")


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.asynccontextmanager
async def active_consumer(trail: Path, stop: asyncio.Event) -> AsyncIterator[bool]:
    """Hold the trail's consumer lock; yields False if `stop` came while waiting for it."""
    path = lock_path(trail)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise TrailError(f"{path}: open the consumer lock: {exc}") from exc
    try:
        if not _try_lock(fd):
            log.warning("another consumer writes %s; waiting as a hot standby", trail)
            while not _try_lock(fd):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=POLL_SECS)
                if stop.is_set():
                    yield False
                    return
            log.warning("the active consumer of %s stopped; taking over", trail)
        yield True
    finally:
        os.close(fd)  # releases the lock
