"""WAL checkpoints off the writer's thread, for bulk ingest.

Each commit appends the pages it dirtied to the WAL; a checkpoint copies them
back into the trail file. On a big trail a batch dirties a page per index
entry (ids are random, so every insert lands on another leaf), and with
SQLite's automatic checkpoints the writer stops every few batches to copy and
sync tens of megabytes: the cost of a batch grows with the trail. Here a
thread with its own connection runs PASSIVE checkpoints (they never block the
writer) while the writer goes on committing, and the writer's automatic
checkpoint stays only as a backstop at a larger WAL size.

Checkpoints are SQLite's own; nothing in the trail changes, and a checkpoint
that fails loses nothing (the pages stay in the WAL for the next one).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# The writer checkpoints itself only when the WAL is this many times its usual
# automatic checkpoint size: the thread fell behind (or failed).
BACKSTOP_FACTOR = 4


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own thread every `every_commits` commits.

    Counted in commits, not WAL bytes: the WAL file keeps its size when SQLite
    starts writing it from the top again, so its size says nothing of what is
    left to copy. A WAL smaller than `floor_bytes` is left alone.
    """

    def __init__(
        self, path: Path, *, synchronous: str, every_commits: int = 4, floor_bytes: int = 1 << 20
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.every_commits = every_commits
        self.floor_bytes = floor_bytes
        self.checkpoints = 0  # completed (for tests and benchmarks)
        self._commits = 0  # since the last checkpoint began
        self._wal = Path(f"{path}-wal")
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="docktrail-wal-checkpoints", daemon=True
            )
            self._thread.start()

    def nudge(self) -> None:
        """After each commit of the writer."""
        self._commits += 1
        if self._commits >= self.every_commits:
            self._wake.set()

    def stop(self) -> None:
        """Wait for a checkpoint in progress to end, then close the connection."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping = True
        self._wake.set()
        thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            log.warning("background WAL checkpoints off for %s: %s", self.path, exc)
            return
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                self._commits = 0
                if self._wal_bytes() >= self.floor_bytes:
                    self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the writer's own checkpoint is the backstop
            log.warning("background WAL checkpoint of %s failed: %s", self.path, exc)
        else:
            self.checkpoints += 1

    def _wal_bytes(self) -> int:
        try:
            return os.stat(self._wal).st_size
        except OSError:
            return 0
