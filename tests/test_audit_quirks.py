"""Records that ausearch reads are read here too (issue 18, items 14 and 15)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from listener.cli import main
from listener.sources.auditparse import AuditEvent, Malformed, read_audit_file
from tests.shared_data import missing_component

SERVICE_START = (
    "type=SERVICE_START msg=audit(1492625990.183:4083): pid=1 uid=0 auid=4294967295 "
    'ses=4294967295 msg=\'unit=rsyslog comm="systemd" exe="/lib/systemd/systemd" '
    "hostname=? addr=? terminal=? res=success"
)
DAEMON_CONFIG = (
    "type=DAEMON_CONFIG msg=audit(1490239800.477:34) config changed, auid=0 pid=1512 "
    "subj=system_u:system_r:unconfined_service_t:s0 res=success"
)


def read(tmp_path: Path, lines: list[str]) -> list[AuditEvent | Malformed]:
    path = tmp_path / "audit.log"
    path.write_text("\n".join(lines) + "\n")
    return list(read_audit_file(path))


def test_ausearch_reads_these_records(tmp_path: Path) -> None:
    ausearch = shutil.which("ausearch")
    if ausearch is None:
        missing_component("ausearch (auditd) is not installed")
        return
    path = tmp_path / "audit.log"
    path.write_text(f"{SERVICE_START}\n{DAEMON_CONFIG}\n")
    done = subprocess.run(
        [ausearch, "-if", str(path)], capture_output=True, text=True, check=False, timeout=30
    )
    assert done.stdout.count("----") == 2, done.stdout + done.stderr


def test_service_start_with_an_unclosed_msg_quote(tmp_path: Path) -> None:
    [event] = read(tmp_path, [SERVICE_START])
    assert isinstance(event, AuditEvent)
    assert event.id == "1492625990.183:4083"
    fields = event.records[0].fields
    assert fields["unit"] == "rsyslog" and fields["exe"] == "/lib/systemd/systemd"
    assert fields["res"] == "success" and event.auid is None


def test_daemon_config_without_the_colon(tmp_path: Path) -> None:
    [event] = read(tmp_path, [DAEMON_CONFIG])
    assert isinstance(event, AuditEvent)
    assert event.id == "1490239800.477:34" and event.types == ["DAEMON_CONFIG"]
    assert event.field("res") == "success" and event.pid == 1512 and event.auid == 0


def test_refused_lines_say_why(tmp_path: Path) -> None:
    items = read(
        tmp_path,
        [
            "type=SYSCALL msg=audit(1490239800.477:36",  # cut inside the stamp
            "type=SYSCALL msg=audit(1490239800.477:37)x",  # not the end of the stamp
            'type=PATH msg=audit(1490239800.477:38): item=1 name="/usr/lib/ld-linux',
        ],
    )
    reasons = [item.reason for item in items if isinstance(item, Malformed)]
    assert reasons == [
        "msg=audit(...) not closed (truncated line?)",
        "msg=audit(...) not closed (truncated line?)",
        "unterminated quote (truncated line?)",
    ]


def _docker_call_without_execve(argv: list[str], stamp: str) -> list[str]:
    title = "\0".join(argv).encode().hex().upper()
    return [
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 a0=1 "
        "a1=2 a2=3 a3=4 items=2 ppid=10 pid=4242 auid=1000 uid=1000 gid=1000 euid=1000 "
        'suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="docker" '
        'exe="/usr/bin/docker" key="docker-cli"',
        f'type=CWD msg=audit({stamp}): cwd="/home/alice"',
        f'type=PATH msg=audit({stamp}): item=0 name="/usr/bin/docker" inode=1 dev=08:01 '
        "mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 "
        "cap_fver=0 cap_frootid=0",
        f"type=PROCTITLE msg=audit({stamp}): proctitle={title}",
    ]


def cli(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", str(tmp_path / "t.db"), *args], catch_exceptions=False)


def test_docker_call_without_execve_takes_argv_from_proctitle(tmp_path: Path) -> None:
    argv = ["docker", "run", "-d", "--privileged", "--name", "box", "alpine"]
    lines = _docker_call_without_execve(argv, "1700000000.100:7")
    (tmp_path / "audit.log").write_text("\n".join(lines) + "\n")
    create: dict[str, Any] = {
        "Type": "container",
        "Action": "create",
        "Actor": {"ID": "cd" * 32, "Attributes": {"name": "box", "image": "alpine"}},
        "time": 1_700_000_000,
        "timeNano": 1_700_000_000_300_000_000,
    }
    (tmp_path / "events.jsonl").write_text(json.dumps(create) + "\n")
    result = cli(
        tmp_path, "ingest", "--host", "h1", "--audit-log", str(tmp_path / "audit.log"),
        "--docker-events", str(tmp_path / "events.jsonl"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    events = [
        json.loads(line) for line in cli(tmp_path, "query", "--format", "json").stdout.splitlines()
    ]
    by_type = {event["type"]: event for event in events}
    call = by_type["docker-cli"]
    assert call["action"] == "run" and call["attributes"]["argv"] == argv
    assert call["attributes"]["argv_source"] == "PROCTITLE"
    assert call["attributes"]["argv_may_be_cut"] is False
    assert call["config"]["privileged"] is True
    container = by_type["container"]
    assert container["who"]["method"] == "auditd-cli" and container["who"]["pid"] == 4242
