"""`docktrail export`: every format on the real scenario-a capture, validated against its schema."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from py_ocsf_models.events.findings.detection_finding import DetectionFinding
from py_ocsf_models.objects.container import Container
from py_ocsf_models.objects.metadata import Metadata

from listener.cli import main
from tests import ocsf_schema
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a"
CONFIG = 'rules:\n  untrusted-image:\n    trusted: ["registry.internal/*"]\n'
ECS: dict[str, Any] = json.loads((DATA / "ecs" / "fields-8.11.json").read_text())


def run(tmp: Path, *args: str) -> Result:
    config = tmp / "docktrail.yaml"
    if not config.exists():
        config.write_text(CONFIG)
    command = ["-c", str(config), "--db", str(tmp / "t.db"), *args]
    return CliRunner().invoke(main, command, catch_exceptions=False)


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    result = run(
        tmp,
        "ingest",
        "--docker-events",
        str(SCENARIO / "events.jsonl"),
        "--audit-log",
        str(SCENARIO / "audit.log.gz"),
    )
    assert result.exit_code == 0, result.output
    return tmp


def export(trail: Path, *args: str) -> list[dict[str, Any]]:
    result = run(trail, "export", *args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_jsonl_holds_every_event_and_alert_with_alerts_after_their_event(trail: Path) -> None:
    records = export(trail, "--format", "jsonl")
    kinds = Counter(r["record"] for r in records)
    assert kinds == {"event": 282, "alert": 114}
    seen: set[int] = set()
    for record in records:
        if record["record"] == "event":
            seen.add(record["seq"])
        else:
            assert record["event_seq"] in seen, record["id"]
    assert records[0]["hash"] and records[0]["prev_hash"] == "0" * 64


def test_ocsf_records_conform_to_their_class(trail: Path) -> None:
    records = export(trail, "--format", "ocsf")
    classes = Counter(r["class_uid"] for r in records)
    assert set(classes) == {1007, 2004, 6002, 6003}, classes
    assert classes[2004] == 114
    for record in records:
        assert ocsf_schema.problems(record) == [], record
        Metadata.model_validate(record["metadata"])
        if "container" in record:
            assert record["metadata"]["profiles"] == ["container"]
            Container.model_validate(record["container"])
        if record["class_uid"] == 2004:
            DetectionFinding.model_validate(record)


def test_ocsf_maps_the_risky_steps_to_the_expected_classes(trail: Path) -> None:
    records = export(trail, "--format", "ocsf")
    findings = {
        (r["finding_info"]["analytic"]["name"], r.get("container", {}).get("name"))
        for r in records
        if r["class_uid"] == 2004
    }
    assert ("privileged-container", "debug-priv") in findings
    assert ("exec-in-container", "web-1") in findings
    priv = next(
        r for r in records if r.get("finding_info", {}).get("types") == ["privileged-container"]
    )
    assert re.fullmatch(r"[0-9a-f]{64}", priv["container"]["uid"])  # the id, not the name
    severities = {r["severity_id"] for r in records if r["class_uid"] == 2004}
    assert 5 in severities  # critical
    cli = [r for r in records if r["class_uid"] == 1007 and "docker run" in str(r["process"])]
    assert cli and cli[0]["actor"]["user"]["name"] in {"alice", "bob"}
    starts = [r for r in records if r["class_uid"] == 6002 and r["activity_id"] == 3]
    assert any(r["app"]["name"] == "web-1" for r in starts)
    creates = [r for r in records if r["class_uid"] == 6003 and r["activity_id"] == 1]
    assert any(r["api"]["operation"] == "container.create" for r in creates)


def _flatten(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in document.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name not in ECS["fields"]:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _ecs_problems(document: dict[str, Any]) -> list[str]:
    flat = _flatten(document)
    found = [f"{name}: missing" for name in ECS["required"] if name not in flat]
    for name, value in flat.items():
        if name.startswith("docktrail."):
            continue
        kind = ECS["fields"].get(name)
        if kind is None:
            found.append(f"{name}: not an ECS field")
        elif kind.endswith("[]"):
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                found.append(f"{name}: {value!r} is not a keyword array")
        elif kind == "long" and not (isinstance(value, int) and not isinstance(value, bool)):
            found.append(f"{name}: {value!r} is not long")
        elif kind == "object" and not isinstance(value, dict):
            found.append(f"{name}: {value!r} is not an object")
        elif kind in ("keyword", "wildcard", "match_only_text", "date") and not isinstance(
            value, str
        ):
            found.append(f"{name}: {value!r} is not {kind}")
        allowed = ECS["allowed"].get(name)
        values = value if isinstance(value, list) else [value]
        found += [f"{name}: {v!r} not allowed" for v in values if allowed and v not in allowed]
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", str(flat.get("@timestamp"))):
        found.append(f"@timestamp {flat.get('@timestamp')!r} is not ISO 8601 UTC")
    return found


def test_ecs_documents_use_ecs_fields_and_types(trail: Path) -> None:
    documents = export(trail, "--format", "ecs")
    assert len(documents) == 282 + 114
    for document in documents:
        assert _ecs_problems(document) == [], document
    alerts = [d for d in documents if d["event"]["kind"] == "alert"]
    assert len(alerts) == 114
    privileged = [d for d in alerts if d["rule"]["id"] == "privileged-container"]
    assert privileged[0]["container"]["name"] == "debug-priv"
    assert privileged[0]["user"]["name"] == "alice"
    assert privileged[0]["event"]["severity"] == 5
    assert re.fullmatch(r"[0-9a-f]{64}", privileged[0]["container"]["id"])
    images = {
        d["container"]["image"]["name"] for d in documents if "image" in d.get("container", {})
    }
    assert "registry.internal/web/nginx" in images


def test_csv_has_one_row_per_record_and_defuses_formulas(trail: Path) -> None:
    result = run(trail, "export", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert Counter(r["record"] for r in rows) == {"event": 282, "alert": 114}
    alert = next(r for r in rows if r["record"] == "alert")
    assert alert["rule"] and alert["severity"] and int(alert["event_seq"]) > 0
    assert not any(cell.startswith(("=", "+", "@")) for row in rows for cell in row.values())


def test_since_until_select_a_window_and_summary_goes_to_stderr(trail: Path) -> None:
    everything = export(trail, "--format", "jsonl")
    times = sorted({r["time_ns"] for r in everything if r["record"] == "event"})
    since, until = times[10], times[40]
    result = run(trail, "export", "--format", "jsonl", "--since", str(since / 1e9),
                 "--until", str(until / 1e9))  # fmt: skip
    assert result.exit_code == 0, result.output
    window = [json.loads(line) for line in result.stdout.splitlines()]
    assert window and all(since <= r["time_ns"] < until for r in window)
    events = sum(r["record"] == "event" for r in window)
    alerts = len(window) - events
    assert f"export: {events} events and {alerts} alerts as jsonl" in result.stderr


def test_output_file_is_private_and_progress_is_shown_when_asked(trail: Path) -> None:
    target = trail / "out.ocsf"
    result = run(trail, "export", "--format", "ocsf", "-o", str(target), "--progress")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert len(target.read_text().splitlines()) == 282 + 114
    assert result.stderr.splitlines()[0] == "export"  # the bar's label (no tty: no bar)
    assert "Detection Finding 114" in result.stderr


def test_no_progress_bar_when_stderr_is_not_a_terminal(trail: Path) -> None:
    result = run(trail, "export", "--format", "jsonl", "-o", str(trail / "out.jsonl"))
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("export: 282 events and 114 alerts as jsonl")


def test_missing_trail_is_a_clear_error(tmp_path: Path) -> None:
    result = run(tmp_path, "export", "--format", "jsonl")
    assert result.exit_code == 2
    assert "no trail here" in result.stderr


def test_progress_bar_is_drawn_when_stderr_is_a_terminal(trail: Path) -> None:
    leader, follower = pty.openpty()
    target = trail / "tty.ecs"
    config, db = str(trail / "docktrail.yaml"), str(trail / "t.db")
    command = [sys.executable, "-m", "listener", "-c", config, "--db", db,
               "export", "--format", "ecs", "-o", str(target)]  # fmt: skip
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=follower)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(60) == 0
    os.close(leader)
    text = seen.decode(errors="replace")
    assert "export" in text and "100%" in text, text
    assert "export: 282 events and 114 alerts as ecs" in text
    assert len(target.read_text().splitlines()) == 282 + 114
