"""Reading a trail kept on read-only storage: an evidence copy on a read-only mount,
a write-blocked disk, an image an investigator was handed.

SQLite reads a WAL-mode file only where it can create the file's `-shm` index
beside it, so on read-only storage every read failed with "unable to open
database file", `verify` included. There, and only there (the file system is
mounted read-only: nothing can change the file under the reader), the file is
opened `immutable`, which needs no index. A trail whose `-wal` still holds
pages not yet folded into the file cannot be read that way (immutable ignores
the log, so the newest events would look missing): it is refused with what to
do instead. A reader who merely lacks write permission beside a trail on
writable storage (the service may be writing it) is told so, never given an
immutable view of a file that can change.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path

from config.errors import TrailError


def read_only_uri(path: Path, *, immutable: bool = False) -> str:
    uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
    return uri + "&immutable=1" if immutable else uri


def on_read_only_storage(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def immutable_instead(path: Path, exc: sqlite3.Error) -> bool:
    """Whether `exc`, from the first statement on `path`, is SQLite failing to create
    the WAL index beside a trail on read-only storage, which can be read immutable.

    Raises TrailError when the reader cannot create the index for another reason,
    or when the trail's log holds what an immutable read would miss.
    """
    if getattr(exc, "sqlite_errorname", "") != "SQLITE_CANTOPEN" or not path.is_file():
        return False
    wal = path.with_name(path.name + "-wal")
    if not on_read_only_storage(path):
        if os.access(path.parent, os.W_OK):
            return False
        raise TrailError(
            f"{path}: cannot read it from here: SQLite must create {path.name}-shm beside it "
            f"and {path.parent} is not writable for this user; read a copy, or run as the "
            "trail's group"
        )
    if wal.exists() and wal.stat().st_size > 0:
        raise TrailError(
            f"{path}: on read-only storage with a write-ahead log ({wal.name}) that holds "
            "events not yet folded into the file, and SQLite cannot read that log without "
            f"creating {path.name}-shm: copy the trail with its {wal.name} to writable storage"
        )
    return True


def connect_read_only(
    path: Path, *, timeout: float, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A read-only connection to `path`; immutable on read-only storage (see above)."""
    conn = _connect(path, timeout, check_same_thread, immutable=False)
    try:
        conn.execute("SELECT 1 FROM sqlite_schema LIMIT 1")  # opens the file and its index
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if not immutable_instead(path, exc):
            raise
    return connect_immutable(path, timeout=timeout, check_same_thread=check_same_thread)


def connect_immutable(
    path: Path, *, timeout: float, check_same_thread: bool = True
) -> sqlite3.Connection:
    """For a caller that already knows (`immutable_instead`) that it must."""
    return _connect(path, timeout, check_same_thread, immutable=True)


def _connect(
    path: Path, timeout: float, check_same_thread: bool, *, immutable: bool
) -> sqlite3.Connection:
    uri = read_only_uri(path, immutable=immutable)
    return sqlite3.connect(
        uri, uri=True, isolation_level=None, timeout=timeout, check_same_thread=check_same_thread
    )
