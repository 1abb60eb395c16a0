"""A trail on read-only storage (an investigator's evidence copy on a read-only mount)
is verified and queried as it is; what cannot be read that way is refused with what
to do. The read-only view is a real read-only bind mount of a directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner, Result

from listener.cli import main
from listener.model.event import Actor, Event, natural_id
from tests.shared_data import DATA, missing_component
from tests.test_label_index import trail_before_the_label_index
from tests.test_serve import CONFIG, Server, get_json
from tests.test_session_index import trail_before_the_index

EVENTS = DATA / "scenario-a" / "events.jsonl"
OLD_TRAIL = DATA / "trail-v1"


class Storage(NamedTuple):
    writable: Path  # where the trail is put
    read_only: Path  # the same directory, mounted read-only


def cli(db: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", str(db), *args], catch_exceptions=False)


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing_component("a read-only bind mount needs root and mount(8)")
    writable, read_only = tmp_path / "evidence", tmp_path / "mounted"
    writable.mkdir()
    read_only.mkdir()
    bound = _mount("--bind", str(writable), str(read_only))
    if bound.returncode != 0:
        missing_component(f"mount --bind failed: {bound.stderr.strip()}")
    try:
        remounted = _mount("-o", "remount,bind,ro", str(read_only))
        if remounted.returncode != 0:
            missing_component(f"remounting read-only failed: {remounted.stderr.strip()}")
        yield Storage(writable, read_only)
    finally:
        subprocess.run(["umount", str(read_only)], check=False)


def test_verify_and_the_reading_commands_work_on_read_only_storage(storage: Storage) -> None:
    ingested = cli(storage.writable / "t.db", "ingest", "--docker-events", str(EVENTS))
    assert ingested.exit_code == 0, ingested.output
    files = sorted(p.name for p in storage.writable.iterdir())
    copy = storage.read_only / "t.db"
    verified = cli(copy, "verify")
    assert verified.exit_code == 0, verified.output
    assert "intact: 239 events, 40 alerts" in verified.output
    events = cli(copy, "query", "--format", "json")
    assert events.exit_code == 0, events.output
    assert len(events.stdout.splitlines()) == 239
    web = [json.loads(line) for line in cli(copy, "query", "-f", "container=web-1",
                                              "--format", "json").stdout.splitlines()]  # fmt: skip
    assert web and web[0]["action"] == "create"
    alerts = cli(copy, "alerts", "--format", "json")
    assert alerts.exit_code == 0 and len(alerts.stdout.splitlines()) == 40
    assert "created" in cli(copy, "timeline", "web-1").stdout
    exported = cli(copy, "export", "--format", "ocsf")
    assert exported.exit_code == 0 and len(exported.stdout.splitlines()) == 239 + 40
    assert sorted(p.name for p in storage.writable.iterdir()) == files  # nothing written


def test_a_log_an_immutable_read_would_miss_is_refused(storage: Storage) -> None:
    ingested = cli(storage.writable / "t.db", "ingest", "--docker-events", str(EVENTS))
    assert ingested.exit_code == 0, ingested.output
    (storage.writable / "t.db-wal").write_bytes(b"\0" * 4096)  # left by a crash, say
    for command in ("verify", "query"):
        result = cli(storage.read_only / "t.db", command)
        assert result.exit_code != 0
        assert "write-ahead log (t.db-wal)" in result.output
        assert "copy the trail with its t.db-wal to writable storage" in result.output


def test_an_older_trail_on_read_only_storage_says_what_to_do(storage: Storage) -> None:
    for name in ("trail.db", "trail.key"):
        shutil.copy(OLD_TRAIL / name, storage.writable / name)
    result = cli(storage.read_only / "trail.db", "query")
    assert result.exit_code != 0
    assert "written by an older docktrail and on read-only storage" in result.output
    assert "Copy the trail to writable storage" in result.output
    verified = cli(storage.read_only / "trail.db", "verify")
    assert verified.exit_code == 0, verified.output


def test_a_trail_without_only_the_newest_index_is_read_as_it_is(storage: Storage) -> None:
    """A copy made before the exec-id index (migration 0010) lacks an index, nothing
    else: every read is right without it, so it is read rather than refused."""
    trail_before_the_index(storage.writable / "t.db")
    assert _found_in_the_read_only_view(storage, "session=3c1f2a9e7b10") == [2, 3, 5]


def _found_in_the_read_only_view(storage: Storage, query_filter: str) -> list[int]:
    """The seqs `query -f query_filter` finds in the read-only view of `t.db`, which
    must also verify, with nothing written to the storage."""
    files = sorted(p.name for p in storage.writable.iterdir())
    copy = storage.read_only / "t.db"
    found = cli(copy, "query", "-f", query_filter, "--format", "json")
    assert found.exit_code == 0, found.output
    assert cli(copy, "verify").exit_code == 0
    assert sorted(p.name for p in storage.writable.iterdir()) == files  # nothing written
    return [json.loads(line)["seq"] for line in found.stdout.splitlines()]


def test_a_trail_without_the_label_index_is_read_as_it_is(storage: Storage) -> None:
    """A copy made before the label index (migration 0011): `-f label=` reads the
    bodies' labels instead, and verify has no index to check."""
    events = [
        Event(
            id=natural_id("read-only-labels", n),
            time_ns=1_767_000_000_000_000_000 + n,
            source="docker",
            host="h1",
            type="container",
            action="start",
            actor=Actor(id=f"{n % 3:x}" * 64, name=f"c{n % 3}"),
            attributes={"labels": {"team": "shop" if n % 3 else "lab"}},
        )
        for n in range(1, 10)
    ]
    trail_before_the_label_index(storage.writable / "t.db", events)
    assert _found_in_the_read_only_view(storage, "label=team=lab") == [3, 6, 9]


def test_serve_reads_a_trail_on_read_only_storage(storage: Storage) -> None:
    ingested = cli(storage.writable / "t.db", "ingest", "--docker-events", str(EVENTS))
    assert ingested.exit_code == 0, ingested.output
    (storage.writable / "docktrail.yaml").write_text(CONFIG)
    running = Server(storage.read_only)  # no --immutable: implied by the storage
    try:
        running.wait()
        assert get_json(running, "/trail/events.json?_size=0")["filtered_table_rows_count"] == 239
    finally:
        running.stop()
