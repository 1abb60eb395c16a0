"""A reader that opens the snapshots file between its creation and its set-up.

The writer makes the file first (so that it is 0600 from its first byte) and
creates the table after: `top` or `posture` reading in that moment see a file
with no table. That is "no snapshots yet", not an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from listener.posture.metering import MeteringStore


def test_a_file_made_but_not_set_up_reads_as_no_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "trail.metering.db"
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # as the writer makes it
    store = MeteringStore(path, readonly=True)
    try:
        assert store.latest() == [] and store.count() == 0
    finally:
        store.close()
    MeteringStore(path).close()  # the writer sets it up afterwards, unhindered
    reader = MeteringStore(path, readonly=True)
    try:
        assert reader.count() == 0
    finally:
        reader.close()
