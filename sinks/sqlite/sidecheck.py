"""A check of a trail file run on its own read-only connection, in a thread, while
verify walks the chains on the main one.

SQLite releases the GIL while it steps a statement, so a check that is one
statement (`PRAGMA integrity_check`, an aggregate over the table) runs on the
other core beside the walk's Python. A later snapshot than the walk's (a writer
appending meanwhile) is as good for a check of the file's structure or of rows
up to a seq the walk saw: the trail is append-only, and rows edited after the
walk's snapshot are found by the next verify. Without a file (or a second
connection), the check runs inline on the walk's own connection and snapshot.
"""

from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar, cast

from sinks.sqlite.schema import BUSY_TIMEOUT_SECS

T = TypeVar("T")


class SideCheck(Generic[T]):
    """`check(connection)` on a second connection of the file behind `conn`, started now."""

    def __init__(
        self, conn: sqlite3.Connection, check: Callable[[sqlite3.Connection], T], name: str
    ) -> None:
        self.conn = conn
        self.check = check
        self.other: sqlite3.Connection | None = None
        self.outcome: T | None = None
        self.done = False  # outcome set: the check ran to its end
        self.thread: threading.Thread | None = None
        path = file_of(conn)
        if path is None:
            return
        try:
            self.other = sqlite3.connect(
                read_only_uri(Path(path)),
                uri=True,
                isolation_level=None,
                timeout=BUSY_TIMEOUT_SECS,
                check_same_thread=False,
            )
        except sqlite3.Error:
            return
        self.thread = threading.Thread(target=self._run, args=(self.other,), name=name, daemon=True)
        self.thread.start()

    def _run(self, other: sqlite3.Connection) -> None:
        try:
            self.outcome = self.check(other)
            self.done = True
        except BaseException:  # interrupted or failed: result() runs it again, inline
            self.done = False

    def result(self) -> T:
        """The check's outcome; inline on the walk's snapshot if the second connection failed."""
        if self.thread is None:
            return self.check(self.conn)
        self.thread.join()
        if not self.done:
            return self.check(self.conn)  # say it again, on the snapshot
        return cast(T, self.outcome)

    def stop(self) -> None:
        """After the verdict (or an early finding): stop the check and close its connection."""
        if self.other is None or self.thread is None:
            return
        self.other.interrupt()
        self.thread.join()
        self.other.close()
        self.other = None


def file_of(conn: sqlite3.Connection) -> str | None:
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(path) or None
    return None


def read_only_uri(path: Path) -> str:
    return "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
