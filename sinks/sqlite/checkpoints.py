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
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# The writer checkpoints itself only when the WAL is this many times its usual
# automatic checkpoint size: the thread fell behind (or failed).
BACKSTOP_FACTOR = 4
# The thread checkpoints at this share of the usual automatic checkpoint size:
# a trail that never reaches it (a small ingest) is never checkpointed more
# often than SQLite itself would.
BACKGROUND_SHARE = 2


class WalCheckpointer:
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own thread when about `threshold_frames` wait.

    SQLite tells how many frames the WAL held only when it checkpoints; the
    WAL file's size says nothing (SQLite writes it from the top again after a
    checkpoint), and the `-shm` file must not be opened beside SQLite (closing
    any descriptor of a file drops every POSIX lock the process holds on it).
    So the frames per commit are learnt from each checkpoint's count, and the
    next one is due when that many commits fill the threshold: rarely on a
    small trail, every commit or two on a big one.
    """

    def __init__(
        self, path: Path, *, synchronous: str, threshold_frames: int, first_after: int = 4
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.threshold_frames = threshold_frames
        self.checkpoints = 0  # completed (for tests and benchmarks)
        self._commits = 0  # since the last checkpoint began
        self._due_after = first_after  # commits
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
        if self._commits >= self._due_after:
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
                commits, self._commits = self._commits, 0
                frames = self._checkpoint(conn)
                if frames is not None and commits > 0:
                    per_commit = max(1, frames // commits)
                    self._due_after = max(1, self.threshold_frames // per_commit)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> int | None:
        """Frames the WAL held, or None when the checkpoint failed."""
        try:
            _busy, frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the writer's own checkpoint is the backstop
            log.warning("background WAL checkpoint of %s failed: %s", self.path, exc)
            return None
        self.checkpoints += 1
        return int(frames)
