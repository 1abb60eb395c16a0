"""Exec sessions around the trail: `query -f session=`, attribution of concurrent execs,
and a docker CLI run without a login that lands under the exec rules' key."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.models import DocktrailConfig
from listener.model.event import Actor, Event, Who
from listener.sources.auditd import AuditConverter, AuditLogFiles
from sinks.base import EventFilter
from sinks.memory import MemoryTrail
from sinks.sqlite import SQLiteTrail
from tests.exec_audit_log import AuditLog
from tests.test_correlate import CID, attribute, call, container, correlator

EXEC_A, EXEC_B = "a1" + "0" * 62, "b2" + "0" * 62


def event(n: int, action: str, exec_id: str | None) -> Event:
    attributes = {"execID": exec_id} if exec_id else {}
    return Event(
        id=f"e{n}", time_ns=1_796_500_000_000_000_000 + n, source="auditd", host="h",
        type="container", action=action, actor=Actor(id=CID, name="web"), attributes=attributes,
    )  # fmt: skip


EVENTS = [
    event(1, "exec_start", EXEC_A),
    event(2, "exec-command", EXEC_A),
    event(3, "exec-command", EXEC_B),
    event(4, "start", None),
    event(5, "exec_die", EXEC_A),
]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_query_by_session_id_or_prefix(tmp_path: Path, kind: str) -> None:
    trail = SQLiteTrail(tmp_path / "t.db") if kind == "sqlite" else MemoryTrail()
    with trail:
        trail.append([e.model_copy(deep=True) for e in EVENTS])
        for wanted in (EXEC_A, EXEC_A[:12]):
            found = [e.id for e in trail.query(EventFilter(session=wanted))]
            assert found == ["e1", "e2", "e5"]
        both = EventFilter(session=(EXEC_A[:4], EXEC_B[:4]), action="exec-command")
        assert [e.id for e in trail.query(both)] == ["e2", "e3"]
        assert list(trail.query(EventFilter(session="ffff"))) == []


def test_concurrent_execs_by_two_logins_go_by_their_command() -> None:
    """Same container, same instant: the exec's command tells the two calls apart."""
    found = correlator(call(0, "exec -it web sh", "alice"), call(0.01, "exec -it web sh -i", "bob"))
    events = attribute(
        found,
        container(0.05, "exec_create: sh -i", CID, "web", execID="e2"),
        container(0.06, "exec_create: sh", CID, "web", execID="e1"),
        container(0.07, "exec_start: sh", CID, "web", execID="e1"),
        container(0.08, "exec_start: sh -i", CID, "web", execID="e2"),
    )
    assert [e.who.login for e in events] == ["bob", "alice", "alice", "bob"]


def test_the_same_exec_by_two_logins_at_once_is_not_guessed() -> None:
    found = correlator(call(0, "exec -it web sh", "alice"), call(0.01, "exec -it web sh", "bob"))
    (created,) = attribute(found, container(0.05, "exec_create: sh", CID, "web", execID="e1"))
    assert created.who.login is None and created.who.candidates == ["alice", "bob"]


def test_a_docker_cli_run_without_a_login_under_the_exec_key_is_still_a_cli_call(
    tmp_path: Path,
) -> None:
    """The exec rules load first: a service's `docker ps` lands under their key."""
    log = AuditLog()
    log.execve(0.0, 700, 1, ["docker", "ps"], exe="/usr/bin/docker")
    log.execve(0.1, 701, 1, ["/usr/bin/env", "true"], exe="/usr/bin/env")
    config = DocktrailConfig()
    converter = AuditConverter(config.auditd, "h", limits=config.input)
    items = list(AuditLogFiles([log.write(tmp_path / "a.log")], converter, window_secs=2))
    assert [item.call.call.command for item in items if item.call is not None] == ["ps"]
    assert [item.process.argv for item in items if item.process is not None] == [
        ("/usr/bin/env", "true")
    ]


def test_install_rules_with_exec_writes_both_files_not_world_readable(tmp_path: Path) -> None:
    import stat
    import subprocess

    script = Path(__file__).resolve().parent.parent / "deploy" / "audit" / "install-rules.sh"
    dest = tmp_path / "rules.d" / "docktrail.rules"
    done = subprocess.run(
        ["sh", str(script), "--dest", str(dest), "--exec", "--no-load"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    exec_rules = dest.parent / "docktrail-exec.rules"
    assert f"wrote {exec_rules}" in done.stdout
    for path in (dest, exec_rules):
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    rules = [line for line in exec_rules.read_text().splitlines() if line.startswith("-a")]
    assert all("docker-exec" in r or r.startswith("-a never,exit") for r in rules)
    assert sorted(p.name for p in dest.parent.iterdir()) == [  # the exec rules load first
        "docktrail-exec.rules", "docktrail.rules"
    ]  # fmt: skip


def _command(n: int, exec_id: str, argv: list[str], index: int) -> Event:
    found = event(n, "exec-command", exec_id)
    found.who = Who(login="alice", method="auditd-cli")
    found.attributes.update(
        session=exec_id, index=index, argv=argv, uid=0, cwd="/", exit=0, ended="exit"
    )
    return found


def test_session_and_timeline_show_transcripts_escaped(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from listener.cli import main

    start = event(1, "exec_start", EXEC_A)
    start.who = Who(login="alice", method="auditd-cli")
    start.attributes["action_detail"] = "sh"
    start.config = {"tty": True, "user": None}
    stored = [
        start,
        _command(2, EXEC_A, ["sh"], 0),
        _command(3, EXEC_A, ["printf", "\x1b]0;pwned\x07"], 1),
        _command(4, EXEC_B, ["cat", "/etc/hostname"], 0),  # its exec_start was not seen
    ]
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append(stored)
    db = str(tmp_path / "t.db")
    shown = CliRunner().invoke(main, ["--db", db, "session", EXEC_A[:8]])
    assert shown.exit_code == 0, shown.output
    assert "owner alice" in shown.output and "$ sh  -> exit 0" in shown.output
    assert "\x1b" not in shown.output and "\\x1b]0;pwned" in shown.output
    assert "/etc/hostname" not in shown.output
    timeline = CliRunner().invoke(main, ["--db", db, "timeline", "web"])
    assert timeline.exit_code == 0, timeline.output
    assert "$ printf" in timeline.output and "$ cat /etc/hostname" in timeline.output
    missing = CliRunner().invoke(main, ["--db", db, "session", "ffff"])
    assert missing.exit_code == 2 and "no exec session" in missing.output
