"""Hostile input: one bad line is one malformed line, never the file (issue 11.1, 19.11).

Each test ingests a real file into a real SQLite trail through the CLI and
checks what was stored and what was reported, with its file and line.
"""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from listener.cli import main
from listener.model.event import Event

BASE_NS = 1_700_000_000_000_000_000
MiB = 1024 * 1024


def engine_event(index: int, **attributes: str) -> dict[str, Any]:
    return {
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": f"{index:064x}", "Attributes": {"name": f"c{index}", **attributes}},
        "scope": "local",
        "time": BASE_NS // 1_000_000_000 + index,
        "timeNano": BASE_NS + index * 1_000_000_000,
    }


def good_lines(count: int, start: int = 0) -> list[str]:
    return [json.dumps(engine_event(i)) for i in range(start, start + count)]


def ingest(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    runner = CliRunner(env=env)
    return runner.invoke(
        main,
        ["--db", str(tmp_path / "t.db"), "ingest", "--host", "h1", *args],
        catch_exceptions=False,
    )


def stored_events(tmp_path: Path) -> list[dict[str, Any]]:
    # Through the model: stored bodies leave null fields out (listener.model.event.compact).
    with sqlite3.connect(tmp_path / "t.db") as db:
        rows = db.execute("SELECT body FROM events ORDER BY seq")
        return [Event.model_validate_json(body).model_dump() for (body,) in rows]


def malformed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("malformed:")]


def test_one_out_of_range_time_among_500_good_lines(tmp_path: Path) -> None:
    lines = good_lines(250)
    bad = engine_event(999)
    bad["timeNano"] = 999999999999999999999999
    lines.append(json.dumps(bad))
    lines += good_lines(250, start=250)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    # A subprocess: the bug was a traceback that killed the whole ingest.
    done = subprocess.run(
        [sys.executable, "-m", "listener", "--db", str(tmp_path / "t.db"), "ingest",
         "--host", "h1", "--docker-events", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert len(stored_events(tmp_path)) == 500
    assert "stored 500" in done.stdout and "malformed 1" in done.stdout
    [report] = malformed_lines(done.stderr)
    assert f"{path}:251: " in report and "outside 1970..2200" in report


def test_float_and_negative_and_infinite_times_are_malformed(tmp_path: Path) -> None:
    lines = good_lines(3)
    for time_value in ("1e400", "-1", "1e300", "99999999999999999999"):
        lines.append('{"Type":"container","Action":"start","time":' + time_value + "}")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = ingest(tmp_path, "--docker-events", str(path))
    assert result.exit_code == 0
    assert len(stored_events(tmp_path)) == 3
    assert [r.split(": ")[1].rsplit(":", 1)[1] for r in malformed_lines(result.stderr)] == [
        "4", "5", "6", "7",
    ]  # fmt: skip


def test_deep_nesting_and_lone_surrogates_are_one_line_each(tmp_path: Path) -> None:
    lines = good_lines(2)
    lines.append("[" * 100_000)
    lines.append(json.dumps(engine_event(50, note="\ud800")))  # json escapes it: "\\ud800"
    lines.append(
        '{"Type":"container","Action":"start","timeNano":1,"x":' + "[" * 500 + "]" * 500 + "}"
    )
    lines += good_lines(2, start=2)
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = ingest(tmp_path, "--docker-events", str(path))
    assert result.exit_code == 0
    assert len(stored_events(tmp_path)) == 5  # the third nested line is valid, its x unread
    reports = malformed_lines(result.stderr)
    assert len(reports) == 2
    assert f"{path}:3: invalid JSON: nested too deeply" in reports[0]
    assert f"{path}:4: " in reports[1] and "lone surrogate" in reports[1]


def test_a_huge_label_is_capped_and_the_cap_recorded(tmp_path: Path) -> None:
    label = "x" * (8 * MiB)
    lines = [json.dumps(engine_event(i, big=label)) for i in range(6)]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = ingest(tmp_path, "--docker-events", str(path))
    assert result.exit_code == 0, result.output
    events = stored_events(tmp_path)
    assert len(events) == 6
    for event in events:
        assert len(event["attributes"]["labels"]["big"]) == 64 * 1024
        assert event["attributes"]["truncated"] == {
            "attributes.labels.big": {"size": 8 * MiB, "cap": 64 * 1024}
        }
    assert (tmp_path / "t.db").stat().st_size < 4 * MiB  # was 59 MB for six events


def test_field_cap_and_line_cap_are_configurable(tmp_path: Path) -> None:
    lines = [
        json.dumps(engine_event(0, note="é" * 100)),
        json.dumps(engine_event(1, big="y" * 5000)),
    ]
    lines.append(json.dumps(engine_event(2)))
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = {"DOCKTRAIL_INPUT__MAX_FIELD_BYTES": "101", "DOCKTRAIL_INPUT__MAX_LINE_BYTES": "4096"}
    result = ingest(tmp_path, "--docker-events", str(path), env=env)
    assert result.exit_code == 0, result.output
    first, third = stored_events(tmp_path)
    # Cut at a character boundary: 50 two-byte characters fit in 101 bytes.
    assert first["attributes"]["labels"]["note"] == "é" * 50
    assert first["attributes"]["truncated"]["attributes.labels.note"] == {"size": 200, "cap": 101}
    assert "truncated" not in third["attributes"]
    [report] = malformed_lines(result.stderr)
    assert f"{path}:2: line of " in report and "longer than the cap of 4096" in report


def _bomb(path: Path, expanded: int) -> None:
    """A gzip file whose second line expands to `expanded` bytes without a newline."""
    head = (json.dumps(engine_event(0)) + "\n").encode()
    tail = ("\n" + json.dumps(engine_event(1)) + "\n").encode()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        out.write(compressor.compress(head))
        block = b"A" * MiB
        for _ in range(expanded // MiB):
            out.write(compressor.compress(block))
        out.write(compressor.compress(tail))
        out.write(compressor.flush())


def _ingest_rss_kib(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    # VmHWM, not ru_maxrss: the latter survives execve, so it would be pytest's peak.
    probe = (
        "import sys\n"
        "from listener.cli import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
        "    print('RSS', peak[0].split()[1], file=sys.stderr)\n"
        "    raise\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, "--db", str(tmp_path / "t.db"), "ingest", "--host", "h1",
         *args],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "DOCKTRAIL_INPUT__MAX_LINE_BYTES": str(MiB)},
    )  # fmt: skip
    rss = [line for line in done.stderr.splitlines() if line.startswith("RSS ")]
    return done, int(rss[-1].split()[1])


def test_gzip_bomb_line_is_skipped_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    _bomb(path, 256 * MiB)
    assert path.stat().st_size < 2 * MiB
    done, rss_kib = _ingest_rss_kib(tmp_path, "--docker-events", str(path))
    assert done.returncode == 0, done.stderr
    assert len(stored_events(tmp_path)) == 2
    assert f"{path}:2: line of {256 * MiB} bytes is longer than the cap" in done.stderr
    assert rss_kib < 200 * 1024  # the line alone is 256 MiB


def audit_lines(serial: int, time_s: int = 1_700_000_000) -> list[str]:
    stamp = f"{time_s}.123:{serial}"
    return [
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 "
        f"a0=1 a1=2 a2=3 a3=4 items=1 ppid=10 pid={serial} auid=1000 uid=1000 gid=1000 "
        f"euid=1000 suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 "
        f'comm="docker" exe="/usr/bin/docker" key="docker-cli"',
        f'type=EXECVE msg=audit({stamp}): argc=3 a0="docker" a1="rm" a2="c{serial}"',
        f'type=CWD msg=audit({stamp}): cwd="/home/alice"',
        f"type=EOE msg=audit({stamp}): ",
    ]


def _write_audit(path: Path, lines: list[str], gz: bool = False) -> None:
    data = ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
    path.write_bytes(gzip.compress(data) if gz else data)


def audit_events(tmp_path: Path) -> Iterator[dict[str, Any]]:
    return (e for e in stored_events(tmp_path) if e["source"] == "auditd")


def test_audit_log_out_of_range_numbers_and_long_lines(tmp_path: Path) -> None:
    lines = audit_lines(1)
    lines += [
        line.replace("1700000000.123:2", "999999999999999999999999.123:2")
        for line in audit_lines(2)
    ]
    lines += [line.replace(":3)", ":99999999999999999999999)") for line in audit_lines(3)]
    fourth = audit_lines(4)
    lines += [fourth[0].replace("pid=4", "pid=" + "9" * 5000), *fourth[1:]]
    lines.append("type=USER_CMD msg=audit(1700000000.200:5): cmd=" + "41" * 20_000)
    lines += audit_lines(6)
    path = tmp_path / "audit.log"
    _write_audit(path, lines)
    env = {"DOCKTRAIL_INPUT__MAX_LINE_BYTES": "16384"}
    result = ingest(tmp_path, "--audit-log", str(path), env=env)
    assert result.exit_code == 0, result.output
    stored = sorted(e["who"]["pid"] or 0 for e in audit_events(tmp_path))
    assert stored == [0, 1, 6]  # the huge pid is no pid; events 2 and 3 are malformed
    reports = malformed_lines(result.stderr)
    assert sum("out of range" in r for r in reports) == 8
    assert any(f"{path}:17: line of" in r and "cap of 16384" in r for r in reports)


def test_audit_bytes_that_are_not_utf8_are_kept_escaped(tmp_path: Path) -> None:
    lines = audit_lines(1)
    # A container name with a byte that is not UTF-8: auditd writes such arguments as hex.
    lines[1] = 'type=EXECVE msg=audit(1700000000.123:1): argc=3 a0="docker" a1="rm" a2=6162FF63'
    path = tmp_path / "audit.log"
    _write_audit(path, lines)
    result = ingest(tmp_path, "--audit-log", str(path))
    assert result.exit_code == 0, result.output
    [event] = audit_events(tmp_path)
    assert event["attributes"]["argv"] == ["docker", "rm", "ab\\xffc"]


def test_audit_gzip_bomb_is_one_malformed_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log.gz"
    head = ("\n".join(audit_lines(1)) + "\n").encode()
    tail = ("\n" + "\n".join(audit_lines(2)) + "\n").encode()
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as out:
        out.write(compressor.compress(head + b"type=SYSCALL msg=audit(1700000000.1:9): a="))
        for _ in range(128):
            out.write(compressor.compress(b"B" * MiB))
        out.write(compressor.compress(tail) + compressor.flush())
    done, rss_kib = _ingest_rss_kib(tmp_path, "--audit-log", str(path))
    assert done.returncode == 0, done.stderr
    assert sorted(e["who"]["pid"] for e in audit_events(tmp_path)) == [1, 2]
    assert f"{path}:5: line of " in done.stderr
    assert rss_kib < 200 * 1024


def test_live_audit_tail_skips_a_huge_line_in_bounded_memory(tmp_path: Path) -> None:
    from config.models import AuditdConfig
    from listener.sources.auditd import AuditConverter
    from listener.sources.auditd.reader import LiveReader

    path = tmp_path / "audit.log"
    big = "type=USER_CMD msg=audit(1700000000.150:7): cmd=" + "41" * (3 * MiB)
    lines = [*audit_lines(1), big, *audit_lines(2)]
    _write_audit(path, lines)
    config = AuditdConfig(log_file=path, start_at="start")
    reader = LiveReader(config, AuditConverter(config, "h1"))
    reader.follower.chunk = 64 * 1024  # the big line spans many reads
    reader.follower.max_line = reader.assembler.max_line = MiB
    reader.follower.open(None, "start")
    pids, malformed = [], []
    for _ in range(200):
        cycle = reader.cycle()
        pids += [c.event.who.pid for c in cycle.converted if c.event is not None]
        malformed += cycle.malformed
        assert len(reader.follower._rest) <= MiB  # never the whole line in memory
        if cycle.idle and len(pids) == 2:
            break
    assert sorted(pids) == [1, 2]
    [report] = malformed
    assert report.path == str(path) and report.line == 5
    assert f"line of {len(big)} bytes is longer than the cap of {MiB}" in report.reason
    assert reader.follower.offset == path.stat().st_size
    assert reader.follower.line == len(lines)
    reader.close()
