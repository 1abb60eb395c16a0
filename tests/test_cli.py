"""The CLI end to end on real SQLite files: ingest, query, verify, validate."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from listener.cli import main
from tests.shared_data import DATA

EVENTS = DATA / "scenario-a" / "events.jsonl"
EVENT_LINES = sum(1 for line in EVENTS.read_text().splitlines() if line.strip())


def cli(tmp_path: Path, *args: str) -> Result:
    runner = CliRunner()
    return runner.invoke(main, ["--db", str(tmp_path / "t.db"), *args], catch_exceptions=False)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def ingested(tmp_path: Path) -> Path:
    result = cli(tmp_path, "ingest", "--docker-events", str(EVENTS), "--host", "h1")
    assert result.exit_code == 0, result.output
    return tmp_path


def test_ingest_stores_every_line_once(ingested: Path) -> None:
    result = cli(ingested, "query", "--format", "json")
    events = json_lines(result.stdout)
    assert len(events) == EVENT_LINES
    assert [e["seq"] for e in events] == list(range(1, EVENT_LINES + 1))
    again = cli(ingested, "ingest", "--docker-events", str(EVENTS), "--host", "h1")
    assert again.exit_code == 0
    assert f"read {EVENT_LINES}, stored 0, duplicates {EVENT_LINES}, malformed 0" in again.stdout


def test_query_container_shows_its_lifecycle(ingested: Path) -> None:
    result = cli(ingested, "query", "-f", "container=web-1", "--format", "json")
    events = json_lines(result.stdout)
    actions = [e["action"] for e in events]
    assert actions[0] == "create"
    assert {"create", "start", "exec_create", "exec_start", "kill", "stop", "destroy"} <= set(
        actions
    )
    containers = [e for e in events if e["type"] == "container"]
    assert all(e["actor"]["name"] == "web-1" for e in containers)  # type: ignore[index]
    first = events[0]
    # network events carry only the id: the name resolves to it
    attached = {e["attributes"]["container"] for e in events if e["type"] == "network"}  # type: ignore[index]
    assert attached <= {first["actor"]["id"]}  # type: ignore[index]
    assert first["why"]["ticket"] == "OPS-1234"  # type: ignore[index]
    assert first["time"].endswith("Z") and first["host"] == "h1"  # type: ignore[union-attr]
    by_prefix = cli(ingested, "query", "-f", f"container={first['actor']['id'][:12]}")  # type: ignore[index]
    assert by_prefix.stdout.count("web-1") == len(containers)


def test_query_filters_combine(ingested: Path) -> None:
    out = cli(ingested, "query", "-f", "type=image", "-f", "action=import", "--format", "json")
    images = json_lines(out.stdout)
    assert len(images) == 2
    assert all(e["type"] == "image" and e["action"] == "import" for e in images)
    labelled = cli(ingested, "query", "-f", "label=audit.ticket=OPS-1234", "--format", "json")
    assert {e["actor"]["name"] for e in json_lines(labelled.stdout)} == {"web-1"}  # type: ignore[index]
    none = cli(ingested, "query", "--until", "1000", "--format", "json")
    assert none.stdout == ""
    limited = cli(ingested, "query", "--since", "1795346502", "--limit", "3", "--format", "json")
    assert len(json_lines(limited.stdout)) == 3


def test_query_table_and_csv(ingested: Path) -> None:
    table = cli(ingested, "query", "-f", "container=web-1", "-f", "action=create")
    header, row = table.stdout.splitlines()
    assert header.split()[:3] == ["SEQ", "TIME", "SOURCE"]
    assert "web-1" in row and "create" in row
    csv_out = cli(ingested, "query", "-f", "container=web-1", "--format", "csv")
    lines = csv_out.stdout.splitlines()
    assert lines[0].startswith("seq,id,time,time_ns,source")
    assert len(lines) > 5


def test_bad_filter_and_time_are_usage_errors(ingested: Path) -> None:
    bad = CliRunner().invoke(main, ["--db", str(ingested / "t.db"), "query", "-f", "colour=red"])
    assert bad.exit_code == 2 and "KEY one of type" in bad.output
    when = CliRunner().invoke(main, ["--db", str(ingested / "t.db"), "query", "--since", "soon"])
    assert when.exit_code == 2 and "cannot read time 'soon'" in when.output


def test_verify_intact_then_tampered(ingested: Path) -> None:
    ok = cli(ingested, "verify")
    assert ok.exit_code == 0 and f"intact: {EVENT_LINES} events" in ok.stdout
    db = sqlite3.connect(ingested / "t.db")
    triggers = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")]
    for name in triggers:
        db.execute(f'DROP TRIGGER "{name}"')
    table = "events"
    db.execute(f"DELETE FROM {table} WHERE seq = 100")
    db.commit()
    db.close()
    bad = CliRunner().invoke(main, ["--db", str(ingested / "t.db"), "verify"])
    assert bad.exit_code == 1
    assert "TAMPERED" in bad.output and "101" in bad.output


def test_verify_of_missing_trail_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "none.db"), "verify"])
    assert result.exit_code == 2 and "no trail here" in result.output


def test_malformed_lines_are_reported_and_the_rest_stored(tmp_path: Path) -> None:
    lines = EVENTS.read_text().splitlines()
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], "{not json", lines[1], "[1, 2]", *lines[2:10]]) + "\n")
    result = CliRunner().invoke(
        main, ["--db", str(tmp_path / "t.db"), "ingest", "--docker-events", str(broken)]
    )
    assert result.exit_code == 0
    assert f"{broken}:2:" in result.output and f"{broken}:4:" in result.output
    assert "read 12, stored 10, duplicates 0, malformed 2" in result.output


def test_validate_reports_location_and_exit_2(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("trail:\n  durability: normal\n")
    assert CliRunner().invoke(main, ["validate", str(good)]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("trail:\n  durability: sometimes\n")
    result = CliRunner().invoke(main, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2: trail.durability: Input should be 'full' or 'normal'" in result.output


def test_key_export_prints_the_public_key(ingested: Path) -> None:
    result = cli(ingested, "key", "export")
    assert result.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    pem = ingested / "auditor.pem"
    pem.write_text(result.stdout)
    assert cli(ingested, "verify", "--public-key", str(pem)).exit_code == 0


def test_readme_documents_every_command() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    names: list[str] = []
    for name, command in main.commands.items():
        sub = getattr(command, "commands", None)
        names += [f"{name} {s}" for s in sub] if sub else [name]
    missing = [n for n in names if f"### docktrail {n}\n" not in readme]
    assert not missing, f"README lacks a section for: {missing}"


def _write_big_capture(path: Path, count: int) -> None:
    template = json.loads(EVENTS.read_text().splitlines()[3])
    with path.open("w") as out:
        for n in range(count):
            template["timeNano"] = 1_795_000_000_000_000_000 + n
            template["time"] = template["timeNano"] // 10**9
            out.write(json.dumps(template) + "\n")


def test_kill_9_mid_ingest_then_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    capture = tmp_path / "big.jsonl"
    total = 80_000
    _write_big_capture(capture, total)
    db = tmp_path / "t.db"
    command = [sys.executable, "-m", "listener", "--db", str(db), "ingest", "--no-progress",
               "--docker-events", str(capture)]  # fmt: skip
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline and child.poll() is None:
        stored = _count(db)
        if stored >= 5_000:
            break
        time.sleep(0.02)
    assert child.poll() is None, "ingest finished before it could be killed; raise `total`"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    partial = _count(db)
    assert 0 < partial < total
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"stored {total - partial}, duplicates {partial}" in resumed.stdout
    assert _count(db) == total
    conn = sqlite3.connect(db)
    ids = conn.execute("SELECT count(DISTINCT id) FROM events").fetchone()[0]
    sql = "SELECT count(*) FROM events WHERE action = 'trail-recovered'"
    recovered = conn.execute(sql).fetchone()[0]  # sealed the crashed tail (none if it had none)
    assert ids == total + recovered and recovered <= 1
    verify = subprocess.run([*command[:5], "verify"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            sql = "SELECT count(*) FROM events WHERE source = 'docker'"
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_a_file_of_garbage_is_counted_whole_and_kept_in_part(tmp_path: Path) -> None:
    import asyncio

    from config.models import DocktrailConfig
    from listener.bounds import MALFORMED_KEPT
    from listener.ingest import ingest_files

    lines = EVENTS.read_text().splitlines()
    garbage = 3 * MALFORMED_KEPT
    broken = tmp_path / "garbage.jsonl"
    broken.write_text("\n".join([*(f"{{garbage {n}" for n in range(garbage)), *lines[:5]]) + "\n")
    config = DocktrailConfig.model_validate({"trail": {"path": str(tmp_path / "t.db")}})
    report = asyncio.run(ingest_files(config, docker_events=[broken], host="h1"))
    assert len(report.malformed) == garbage and len(list(report.malformed)) == MALFORMED_KEPT
    assert report.read == garbage + 5 and report.stats.stored == 5
    assert f"{broken}:{garbage}:" not in str(list(report.malformed))  # only the first are kept

    result = CliRunner().invoke(
        main, ["--db", str(tmp_path / "u.db"), "ingest", "--docker-events", str(broken)]
    )
    assert f"{broken}:1:" in result.output and f"… and {garbage - 20} more" in result.output
    assert f"read {garbage + 5}, stored 5, duplicates 0, malformed {garbage}" in result.output
