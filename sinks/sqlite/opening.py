"""Making a trail file and connecting to it: the file's creation sealed from the
start, the connection settings, the retries of a busy WAL setup, and the
fallback to reading a trail on read-only storage as it is (`sinks.sqlite.storage`).

Apart from `trail` because none of it is about what the trail holds: the
trail's `_setup` (settings, then migrations) and its genesis seal are passed
in, so the trail decides what a new or opened file gets and this module only
how the file comes to be and is reached.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from config.errors import TrailError
from sinks import trailfiles
from sinks.sqlite.errors import is_busy
from sinks.sqlite.schema import (
    BUSY_TIMEOUT_SECS,
    CACHE_KIB,
    PAGE_SIZE,
    WAL_AUTOCHECKPOINT_BYTES,
    WAL_SIZE_LIMIT,
    immediate,
)
from sinks.sqlite.storage import connect_immutable, connect_read_only, immutable_instead


class Setup(Protocol):
    """Sets a new connection up (`SQLiteTrail._setup`); `read_only` on read-only storage."""

    def __call__(self, conn: sqlite3.Connection, *, read_only: bool = False) -> None: ...


def create(
    path: Path,
    group: str | None,
    setup: Setup,
    seal: Callable[[sqlite3.Connection], None],
) -> bool:
    """Create the trail sealed by its genesis checkpoint, then put it in place.

    Built under a temporary name and linked to `path` (which never replaces
    a trail another process created meanwhile), so a crash never leaves a
    trail file without its genesis: an empty or unsealed file at `path` is
    never docktrail's doing. The new file is `setup`, then `seal`ed in its
    first write transaction. False when another process created `path` first:
    its trail stands.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    trailfiles.create_private(temporary, group)
    try:
        conn = sqlite3.connect(temporary, isolation_level=None)
        try:
            setup(conn)
            with immediate(conn):
                seal(conn)
        finally:
            conn.close()  # the last connection: SQLite folds the WAL into the file
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{temporary}{suffix}").unlink(missing_ok=True)


def configure(conn: sqlite3.Connection, durability: str) -> None:
    """The connection settings of every trail connection (`durability`: full or normal)."""
    conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before WAL: a no-op on an existing file
    conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
    conn.execute(f"PRAGMA synchronous = {durability.upper()}")
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_BYTES // page_size}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")


def connect(path: Path, setup: Setup) -> sqlite3.Connection:
    """A connection to the trail at `path`, set up; immutable on read-only storage."""
    # Switching a new file to WAL (and WAL recovery) can fail with SQLITE_BUSY
    # without consulting the busy handler when others open it at the same
    # moment, so the whole setup is retried until the busy timeout.
    deadline = time.monotonic() + BUSY_TIMEOUT_SECS
    while True:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECS, isolation_level=None)
        try:
            setup(conn)
            return conn
        except sqlite3.OperationalError as exc:
            conn.close()
            if immutable_instead(path, exc):  # an evidence copy: read it as it is
                return _read_only_storage(path, setup)
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
        except BaseException:
            conn.close()
            raise


def connect_as_is(path: Path, identify: Callable[[sqlite3.Connection], None]) -> sqlite3.Connection:
    """A read-only connection to the trail at `path` as it is: nothing created, set or
    migrated; `identify` reads what the trail needs to know of the file."""
    conn = connect_read_only(path, timeout=BUSY_TIMEOUT_SECS)
    try:
        identify(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _read_only_storage(path: Path, setup: Setup) -> sqlite3.Connection:
    conn = connect_immutable(path, timeout=BUSY_TIMEOUT_SECS)
    try:
        setup(conn, read_only=True)
    except sqlite3.OperationalError as exc:
        conn.close()
        if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY":
            raise
        raise TrailError(
            f"{path}: written by an older docktrail and on read-only storage: "
            "its schema must be brought up to date, which writes to it. Copy the trail "
            "to writable storage and read the copy (`docktrail verify` reads it as it is)"
        ) from exc
    return conn
