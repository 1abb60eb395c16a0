"""Files beside the trail: created private, and the writers' lock.

The trail holds who did what on the host, so it is created 0600 (0640 with
`trail.group`): SQLite gives its WAL and SHM files the mode and owner of the
database file, so creating the database file ourselves before SQLite does
covers all three. The witness file is created the same way.

The writers' lock (`<trail>-writer`, `flock`) tells a writer that opens the
trail whether another writer is alive: every writer holds it shared while
open. Only a writer that got it exclusively knows that an unsealed tail is
left over from a crash rather than the running service's latest writes. The
kernel drops a `flock` when its process dies, kill -9 included.
"""

from __future__ import annotations

import fcntl
import grp
import os
from pathlib import Path

from config.errors import TrailError

PRIVATE_MODE = 0o600
GROUP_MODE = 0o640


def file_mode(group: str | None) -> int:
    return PRIVATE_MODE if group is None else GROUP_MODE


def create_private(path: Path, group: str | None = None) -> bool:
    """Create `path` empty with the trail's mode unless it exists; True when created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_MODE)
    except FileExistsError:
        return False
    except OSError as exc:
        raise TrailError(f"{path}: cannot create: {exc.strerror}") from exc
    try:
        _restrict(fd, path, group)
    finally:
        os.close(fd)
    return True


def _restrict(fd: int, path: Path, group: str | None) -> None:
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise TrailError(f"trail.group: no group named {group!r}") from None
        try:
            os.fchown(fd, -1, gid)
        except OSError as exc:
            raise TrailError(f"{path}: cannot give it to group {group}: {exc.strerror}") from exc
    os.fchmod(fd, file_mode(group))  # explicit: the umask may have removed the group bit


class WriterLock:
    """The writers' `flock` beside the trail (module docstring)."""

    def __init__(self, trail_path: Path, group: str | None = None) -> None:
        self.path = trail_path.with_name(trail_path.name + "-writer")
        self.group = group
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock: exclusively (True) when no other writer holds it, else shared.

        The holder of the exclusive lock calls `share()` once it has dealt with
        what a crashed writer left; the others wait for that here.
        """
        if self._fd is None:
            create_private(self.path, self.group)
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise TrailError(
                    f"{self.path}: cannot open the writers' lock: {exc.strerror}"
                ) from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fcntl.flock(self._fd, fcntl.LOCK_SH)
            return False
        return True

    def share(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_SH)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
