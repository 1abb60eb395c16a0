"""Exec sessions from audit records (issue #22): following, bounds, secrets, ingest.

Records go through the real parser and converter (`AuditLogFiles`); a captured
log of a real `docker exec` (tests/data/exec_sessions/capture.log) and logs
written as auditd writes them (tests/exec_audit_log.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config.exec_sessions import ExecSessionsConfig
from config.models import DocktrailConfig
from listener import redact
from listener.model.event import Actor, Event, Who, canonical_json
from listener.sessions import SessionInfo
from listener.sessions.service import ExecSessions
from listener.sources.auditd import AuditConverter, AuditLogFiles
from tests.exec_audit_log import AuditLog

CAPTURE = Path(__file__).parent / "data" / "exec_sessions" / "capture.log"
CONTAINER = "c0ffee" + "0" * 58
EXEC_A, EXEC_B = "a" * 64, "b" * 64
SHIM = 300


def processes(path: Path) -> list:  # type: ignore[type-arg]
    config = DocktrailConfig()
    converter = AuditConverter(config.auditd, "h", limits=config.input)
    files = AuditLogFiles([path], converter, window_secs=2, max_line=1 << 20)
    return [item.process for item in files if item.process is not None]


def run(
    path: Path,
    opened: list[SessionInfo] = (),  # type: ignore[assignment]
    config: ExecSessionsConfig | None = None,
    *,
    open_first: bool = True,
) -> list[Event]:
    sessions = ExecSessions(config or ExecSessionsConfig(), "h", redact.Redactor(b"k" * 32))
    if open_first:
        for info in opened:
            sessions.tracker.open(info)
    for record in processes(path):
        sessions.add(record)
    if not open_first:
        for info in opened:
            sessions.tracker.open(info)
    return sessions.flush()


def info(
    exec_id: str, login: str, *, root_pid: int | None = None, tty: bool = False
) -> SessionInfo:
    return SessionInfo(
        exec_id=exec_id,
        container=Actor(id=CONTAINER, name="web"),
        host="h",
        owner=Who(login=login, auid=1000, method="auditd-cli"),
        root_pid=root_pid,
        tty=tty,
    )


def commands(events: list[Event]) -> list[tuple[str, str]]:
    found = [e for e in events if e.action == "exec-command"]
    found.sort(key=lambda e: (e.attributes["session"], e.attributes["index"]))
    return [(e.attributes["session"][:1], " ".join(e.attributes["argv"])) for e in found]


# ---------------------------------------------------------------------------- a real capture


def test_captured_exec_gives_each_command_in_its_session() -> None:
    """`docker exec c sh -c 'echo hi | cat; (sleep 1; ls /) ; id'` and `sh -c 'sleep 3'`."""
    events = run(CAPTURE)
    by_session: dict[str, list[Event]] = {}
    for event in sorted(events, key=lambda e: e.attributes["index"]):
        by_session.setdefault(event.attributes["session"][:8], []).append(event)
    assert {k: [" ".join(e.attributes["argv"]) for e in v] for k, v in by_session.items()} == {
        "b279b9f9": ["sh -c echo hi | cat; (sleep 1; ls /) ; id", "cat", "sleep 1", "ls", "id"],
        "7c8470bf": ["sh -c sleep 3", "sleep 3"],
    }
    first = by_session["b279b9f9"]
    assert {e.actor.id[:8] for e in events} == {"9fb1eca3"}  # runc's argv names the container
    assert [e.attributes.get("inferred") for e in first] == [None, None, None, "comm", "comm"]
    assert first[2].attributes["ppid"] == 472  # a subshell that only forked is followed
    chain = by_session["7c8470bf"]
    assert chain[0].attributes["ended"] == "exec"  # sh replaced itself by sleep
    assert chain[1].attributes["exit"] is None  # sleep 3 ran past the 2 s exit wait
    assert all(e.who.method == "unknown" for e in events)  # no Engine event: owner unknown


def test_same_records_same_events() -> None:
    """Ids derive from the exec and the audit record: reading a log twice dedupes."""
    assert [e.id for e in run(CAPTURE)] == [e.id for e in run(CAPTURE)]
    assert all(e.source == "auditd" and e.type == "container" for e in run(CAPTURE))


# ---------------------------------------------------------------------------- following


def two_sessions(log: AuditLog) -> None:
    """Two execs into one container at once; runc exits before B's shell runs."""
    log.runc_exec(0.00, 400, SHIM, EXEC_A, CONTAINER)
    log.runc_init(0.01, 401, 400)
    log.runc_exec(0.02, 410, SHIM, EXEC_B, CONTAINER)
    log.runc_init(0.03, 411, 410)
    log.execve(0.04, 403, 400, ["sh"])  # A's shell: runc is its parent
    log.execve(0.05, 413, SHIM, ["sh", "-i"])  # B's: runc gone, the shim adopted it
    log.execve(1.00, 420, 403, ["cat", "/a"])  # A's pipeline: cat /a | wc -l
    log.execve(1.00, 421, 403, ["wc", "-l"])
    log.exit(1.01, 420, 403)
    log.exit(1.01, 421, 403)
    log.execve(1.10, 430, 413, ["cat", "/b"])
    log.exit(1.11, 430, 413, code=1)
    log.fork(1.20, 431, 413)  # B: (sleep 5; cat /late) & — a subshell
    log.execve(1.21, 432, 431, ["sleep", "5"])
    log.exit(2.00, 413, SHIM)  # B's shell ends; its background job runs on
    log.exit(2.00, 403, 400)
    log.exit(6.21, 432, 431)
    log.execve(6.22, 433, 431, ["cat", "/late"])
    log.execve(6.30, 500, 1, ["/usr/sbin/logrotate"], exe="/usr/sbin/logrotate")  # the host's


def test_two_sessions_each_command_in_its_own(tmp_path: Path) -> None:
    log = AuditLog()
    two_sessions(log)
    events = run(log.write(tmp_path / "audit.log"), [info(EXEC_A, "alice"), info(EXEC_B, "bob")])
    assert commands(events) == [
        ("a", "sh"), ("a", "cat /a"), ("a", "wc -l"),
        ("b", "sh -i"), ("b", "cat /b"), ("b", "sleep 5"), ("b", "cat /late"),
    ]  # fmt: skip
    owners = {(e.attributes["session"][:1], e.who.login) for e in events}
    assert owners == {("a", "alice"), ("b", "bob")}
    wc = next(e for e in events if e.attributes["argv"] == ["wc", "-l"])
    assert wc.attributes["pipeline"] == ["cat"] and wc.attributes["exit"] == 0
    assert next(e for e in events if e.attributes["argv"] == ["cat", "/b"]).attributes["exit"] == 1


def test_engine_pid_links_records_read_before_the_exec_event(tmp_path: Path) -> None:
    """No runc record (another runtime path): the exec's `Pid` from inspect, even late."""
    log = AuditLog()
    log.execve(0.10, 403, 999, ["sh", "-c", "id; cat /x"])
    log.execve(0.20, 404, 403, ["cat", "/x"])
    log.exit(0.30, 404, 403)
    events = run(log.write(tmp_path / "a.log"), [info(EXEC_A, "alice", root_pid=403)],
                 open_first=False)  # fmt: skip
    assert commands(events) == [("a", "sh -c id; cat /x"), ("a", "cat /x")]


def test_a_reused_pid_is_not_taken_for_the_old_member(tmp_path: Path) -> None:
    """A member's exit was lost; its pid comes back as a host process while its parent lives."""
    log = AuditLog()
    log.runc_exec(0.00, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, ["sh"])
    log.execve(0.10, 404, 403, ["sleep", "100"])  # its exit record is lost
    log.execve(0.50, 404, 77, ["/usr/bin/backup"], exe="/usr/bin/backup")  # pid 404 reused
    log.execve(0.60, 405, 404, ["tar", "cf", "/backup.tar"], exe="/usr/bin/tar")
    events = run(log.write(tmp_path / "a.log"), [info(EXEC_A, "alice")])
    assert commands(events) == [("a", "sh"), ("a", "sleep 100")]


def test_host_processes_tie_to_nothing_and_wait_bounded(tmp_path: Path) -> None:
    log = AuditLog()
    for n in range(300):
        log.execve(n * 0.01, 1000 + n, 1, ["/usr/bin/env", "true"], exe="/usr/bin/env")
    config = ExecSessionsConfig(max_pending_records=100)
    sessions = ExecSessions(config, "h")
    for record in processes(log.write(tmp_path / "a.log")):
        sessions.add(record)
    assert sessions.flush() == []
    assert len(sessions.tracker._unlinked) == 100
    assert sessions.tracker.stats.unlinked_expired == 200


# ---------------------------------------------------------------------------- bounds


def test_a_loop_cannot_flood_the_trail_the_rest_is_counted(tmp_path: Path) -> None:
    log = AuditLog()
    log.runc_exec(0.0, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, ["sh", "-c", "while :; do true; done"])
    for n in range(50):
        log.execve(0.1 + n * 0.01, 500 + n, 403, ["/bin/true"])
        log.exit(0.1 + n * 0.01, 500 + n, 403)
    config = ExecSessionsConfig(max_commands_per_session=10)
    events = run(log.write(tmp_path / "a.log"), [info(EXEC_A, "alice")], config)
    assert len([e for e in events if e.action == "exec-command"]) == 10
    (overflow,) = [e for e in events if e.action == "exec-overflow"]
    assert overflow.attributes["dropped"] == 41 and overflow.attributes["kept"] == 10
    assert overflow.who.login == "alice"


def test_argv_is_cut_to_max_argv_bytes(tmp_path: Path) -> None:
    log = AuditLog()
    log.runc_exec(0.0, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, ["echo", "x" * 5000])
    events = run(log.write(tmp_path / "a.log"), [info(EXEC_A, "alice")],
                 ExecSessionsConfig(max_argv_bytes=100))  # fmt: skip
    argv = events[0].attributes["argv"]
    assert sum(len(a.encode()) for a in argv) <= 100 + len("…".encode())
    assert events[0].attributes["argv_truncated"] == 5004 - 100


# ---------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("argv", "secret"),
    [
        (["mysql", "-uroot", "-pHunter2!", "shop"], "Hunter2!"),
        (["curl", "-u", "bob:s3cr3tpw", "https://x"], "s3cr3tpw"),
        (["curl", "--user", "bob:s3cr3tpw", "https://x"], "s3cr3tpw"),
        (["redis-cli", "-a", "r3dispass", "ping"], "r3dispass"),
        (["env", "API_TOKEN=tok-12345", "app"], "tok-12345"),
        (["curl", "-H", "Authorization: Bearer eyJabc.def", "https://x"], "eyJabc.def"),
        (["git", "clone", "https://bob:gitpw99@example.com/r.git"], "gitpw99"),
        (["sh", "-c", "mysql -u root -pSh3llPw db < dump.sql"], "Sh3llPw"),
        (["sh", "-c", "curl -u ci:c1t0ken https://x | sh"], "c1t0ken"),
        (["sh", "-c", "DB_PASSWORD=pw-in-env ./migrate"], "pw-in-env"),
    ],
)
def test_secrets_in_container_argv_never_reach_the_trail(
    tmp_path: Path, argv: list[str], secret: str
) -> None:
    log = AuditLog()
    log.runc_exec(0.0, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, argv)
    (event,) = run(log.write(tmp_path / "a.log"), [info(EXEC_A, "alice")])
    stored = json.dumps(event.to_json_object())
    assert secret not in stored
    assert redact.MARKER in stored
    assert len(event.attributes["argv"]) == len(argv)  # positions keep their meaning


def test_an_exec_over_before_its_records_are_read_keeps_its_owner(tmp_path: Path) -> None:
    """Live, `docker exec c true` can start and die before auditd's records are read."""
    log = AuditLog()
    log.runc_exec(0.00, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, ["cat", "/etc/hostname"])
    log.exit(0.02, 403, 400)
    sessions = ExecSessions(ExecSessionsConfig(), "h")
    opened = info(EXEC_A, "alice")
    opened.time_ns = round(log.start * 1e9)
    sessions.tracker.open(opened)
    sessions.tracker.ended(EXEC_A)
    assert sessions.due(opened.time_ns + 5 * 10**9) == []  # nothing read yet
    for record in processes(log.write(tmp_path / "a.log")):
        sessions.add(record)
    (command,) = sessions.due(opened.time_ns + 6 * 10**9)
    assert command.who.login == "alice" and command.actor.name == "web"


def test_bytes_that_are_not_utf8_are_stored_escaped(tmp_path: Path) -> None:
    log = AuditLog()
    log.runc_exec(0.0, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, ["cat", "/tmp/caf\udcff"])
    (event,) = run(log.write(tmp_path / "a.log"), [info(EXEC_A, "alice")])
    assert event.attributes["argv"][1] == "/tmp/caf\\xff"
    assert canonical_json(event.content()).encode()  # what the trail hashes: UTF-8


def test_execs_without_exec_rules_loaded_leave_nothing_behind() -> None:
    """Without docktrail-exec.rules no record ever comes: what each exec opened goes."""
    tracker = ExecSessions(ExecSessionsConfig(max_sessions=10), "h").tracker
    for n in range(100):
        opened = info(f"{n:064x}", "alice", root_pid=5000 + n)
        opened.time_ns = n * 10**9
        tracker.open(opened)
    assert len(tracker._roots) == 10
    assert tracker.due(200 * 10**9) == []
    assert tracker._sessions == {}


def test_the_execs_own_command_line_is_redacted_in_its_commands(tmp_path: Path) -> None:
    log = AuditLog()
    log.runc_exec(0.0, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, ["mysql", "-pS3cretPw", "shop"])
    opened = info(EXEC_A, "alice")
    opened.command_text = "mysql -pS3cretPw shop"
    (event,) = run(log.write(tmp_path / "a.log"), [opened])
    assert "S3cretPw" not in json.dumps(event.to_json_object())
    assert event.attributes["session_command"].startswith("mysql -predacted:hmac:")


def test_ingest_hands_commands_on_while_the_audit_log_runs_past_the_engine_events(
    tmp_path: Path,
) -> None:
    """After the last Engine event no owner is still to come: the rest of a long audit
    log must not be held in memory until its end (listener.ingest._AuditMerge)."""
    import asyncio

    from listener.correlate.correlator import Correlator
    from listener.ingest import _DUE_EVERY_PROCESSES, _AuditMerge

    log = AuditLog()
    log.runc_exec(0.0, 400, SHIM, EXEC_A, CONTAINER)
    log.execve(0.01, 403, 400, ["sh"])
    commands_run = 3 * _DUE_EVERY_PROCESSES // 2  # each an execve and an exit record
    for n in range(commands_run):
        log.execve(0.1 + n * 0.01, 1000 + n, 403, ["/bin/true", str(n)])
        log.exit(0.1 + n * 0.01, 1000 + n, 403)
    config = DocktrailConfig()
    files = AuditLogFiles(
        [log.write(tmp_path / "a.log")],
        AuditConverter(config.auditd, "h", limits=config.input),
        window_secs=2,
        max_line=1 << 20,
    )
    sessions = ExecSessions(
        ExecSessionsConfig(max_commands_per_session=10 * commands_run),
        "h",
        redact.Redactor(b"k" * 32),
    )
    sessions.tracker.open(info(EXEC_A, "alice"))
    stored: list[Event] = []
    most_held = 0

    class Pipeline:
        async def put(self, event: Event) -> None:
            nonlocal most_held
            stored.append(event)
            most_held = max(most_held, sessions.tracker.held)

    merge = _AuditMerge(files, Correlator.from_config(config.auditd), Pipeline(), sessions)  # type: ignore[arg-type]
    asyncio.run(merge.read_past(None))
    handed_before_the_end = len([e for e in stored if e.action == "exec-command"])
    asyncio.run(merge.finish())

    assert handed_before_the_end > 0  # not all held until the end
    assert most_held <= _DUE_EVERY_PROCESSES
    found = [e for e in stored if e.action == "exec-command"]
    assert len(found) == commands_run + 1  # sh, then every /bin/true: none lost
    assert all(e.who.login == "alice" for e in found)
