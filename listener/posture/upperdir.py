"""Executables in a container's drift, read from its overlay2 upper directory.

`docker diff` names paths but no modes. On overlay2 the container's writable
layer (`GraphDriver.Data.UpperDir`) is a directory on the host, and docktrail
runs as root: an lstat of each changed path there tells whether it is a
regular file with an exec bit. The paths are named by whoever controls the
container, so each is walked one component at a time from a descriptor of the
upper directory, never following a symbolic link (`O_NOFOLLOW`, `lstat`), and
a path with `..`, `.` or an empty component is refused. The walk is bounded:
at most `limit` paths and no stat after `deadline` (monotonic seconds).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

OVERLAY2 = "overlay2"
_EXEC_BITS = stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH
_DIR_FLAGS = os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_PATH", os.O_RDONLY)


@dataclass(frozen=True)
class ExecScan:
    """What the upper directory told: `scan` is `overlay2`, or why it was not read."""

    scan: str
    executables: tuple[str, ...] = ()
    truncated: bool = False


def upper_dir(inspect: Mapping[str, Any] | None) -> tuple[str | None, str]:
    """(upper directory, "overlay2") or (None, why it cannot be read)."""
    driver = (inspect or {}).get("GraphDriver") or {}
    name = str(driver.get("Name") or "unknown")
    if name != OVERLAY2:
        return None, f"storage driver {name}: no file modes"
    upper = str((driver.get("Data") or {}).get("UpperDir") or "")
    if not os.path.isabs(upper):
        return None, "no upper directory in inspect"
    return upper, OVERLAY2


def components(path: str) -> list[str] | None:
    """The names of a container path from its root; None when it could leave the root."""
    parts = path[1:].split("/")
    if not path.startswith("/") or any(p in ("", ".", "..") or "\0" in p for p in parts):
        return None
    return parts


@contextlib.contextmanager
def _opened(path: str, flags: int, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def is_executable(root_fd: int, path: str) -> bool:
    """Whether `path` (inside the container) is a regular file with an exec bit below
    `root_fd`; False when it is refused, gone, a link, or anything but a file."""
    parts = components(path)
    if parts is None:
        return False
    with contextlib.ExitStack() as stack:
        current = root_fd
        try:
            for name in parts[:-1]:
                current = stack.enter_context(_opened(name, _DIR_FLAGS, current))
            mode = os.stat(parts[-1], dir_fd=current, follow_symlinks=False).st_mode
        except OSError:  # gone since the diff, a link on the way, not a directory
            return False
    return stat.S_ISREG(mode) and bool(mode & _EXEC_BITS)


def executables(upper: str, paths: Iterable[str], limit: int, deadline: float) -> ExecScan:
    """Blocking: the paths (added or changed) that are executable files in `upper`."""
    try:
        root = os.open(upper, _DIR_FLAGS)
    except OSError as exc:
        return ExecScan(f"upper directory unreadable: {exc.strerror or exc}")
    found: list[str] = []
    truncated = False
    try:
        for count, path in enumerate(paths):
            if count >= limit or time.monotonic() > deadline:
                truncated = True
                break
            if is_executable(root, path):
                found.append(path)
    finally:
        os.close(root)
    return ExecScan(OVERLAY2, tuple(found), truncated)
