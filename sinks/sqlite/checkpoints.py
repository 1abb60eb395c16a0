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
import struct
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
    """Runs `PRAGMA wal_checkpoint(PASSIVE)` on its own thread when `threshold_frames` wait.

    The frames waiting are read from the WAL-index header in the `-shm` file
    (mxFrame - nBackfill, https://www.sqlite.org/walformat.html), the number
    SQLite's own automatic checkpoint looks at; the WAL file's size says
    nothing, as SQLite writes it from the top again after a checkpoint. When
    the header cannot be read, every `every_commits`-th commit checkpoints.
    """

    def __init__(
        self, path: Path, *, synchronous: str, threshold_frames: int, every_commits: int = 4
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.threshold_frames = threshold_frames
        self.every_commits = every_commits
        self.checkpoints = 0  # completed (for tests and benchmarks)
        self._commits = 0  # since the last checkpoint began
        self._shm = Path(f"{path}-shm")
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
                if self._due():
                    self._commits = 0
                    self._checkpoint(conn)
        finally:
            conn.close()

    def _due(self) -> bool:
        waiting = waiting_frames(self._shm)
        if waiting is None:
            return self._commits >= self.every_commits
        return waiting >= self.threshold_frames

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:  # the writer's own checkpoint is the backstop
            log.warning("background WAL checkpoint of %s failed: %s", self.path, exc)
        else:
            self.checkpoints += 1


# The WAL-index header (native byte order): iVersion at 0, mxFrame at 16; the
# checkpoint info that follows the header's two copies: nBackfill at 96.
_WAL_INDEX = struct.Struct("=I12xI76xI")
_WAL_INDEX_VERSION = 3007000


def waiting_frames(shm: Path) -> int | None:
    """Frames in the WAL not yet copied into the database, or None (not readable)."""
    try:
        with open(shm, "rb") as stream:
            head = stream.read(_WAL_INDEX.size)
    except OSError:
        return None
    if len(head) < _WAL_INDEX.size:
        return None
    version, max_frame, backfilled = (int(field) for field in _WAL_INDEX.unpack(head))
    if version != _WAL_INDEX_VERSION or backfilled > max_frame:
        return None  # not a header this code knows, or read while being rewritten
    return max_frame - backfilled
