"""SQLite's errors as the trail's: one clear line naming the file and what was done."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from config.errors import TrailBusyError, TrailError


def is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def trail_error(path: Path, doing: str, exc: sqlite3.Error) -> TrailError:
    if is_busy(exc):
        return TrailBusyError(f"{path}: {doing}: locked by another writer ({exc})")
    if isinstance(exc, sqlite3.ProgrammingError) and "thread" in str(exc):
        return TrailError(
            f"{path}: {doing}: called from another thread; after start(), "
            "use `await trail.call(...)`"
        )
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return TrailError(
            f"{path}: {doing}: the disk is full; everything stored before this write is kept "
            "and intact: free space, then run the same command again (it resumes)"
        )
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return TrailError(f"{path}: not a docktrail trail (not an SQLite database)")
    return TrailError(f"{path}: {doing}: {exc}")
