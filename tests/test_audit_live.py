"""Live attribution with the real auditd and a real dockerd.

A private auditd (`auditd -n -c DIR`: its own configuration, log and rotation)
records the docker CLI's execve and a watch on a stand-in for /etc/docker.
People act through the real docker CLI with their own login uid, written to
/proc/self/loginuid by a child before it execs, as a login does:

* the sudo pattern: root, with the person's auid (as the capture script does);
* the docker-group pattern: the person's own uid with the docker group.

The service is wired from the same classes `docktrail run` uses: the audit
tail, the correlator and its Attribution stage, the pipeline with the
checkpointing trail wrapper; Engine events come from docker-py's stream.

The machine is left as found: the audit rules are saved and restored, the
audit "enabled" flag restored, our auditd stopped, users we created removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from config.models import AuditdConfig
from listener.correlate import Attribution, Correlator
from listener.model.event import Event
from listener.pipeline import Pipeline
from listener.sources.auditd import AuditLogTail, CheckpointedTrail
from listener.sources.docker import normalize_engine_event
from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.shared_data import machine_lock, missing_component
from tests.test_auditd import StateTrail

HOST = "live-host"
# docker-compose (v1: a Python script) has its own execve rule, as in deploy/audit.
COMPOSE_SCRIPTS = ("/usr/bin/docker-compose", "/usr/local/bin/docker-compose")
USERS = ("dt-alice", "dt-bob")


# ---------------------------------------------------------------------------- auditd


def _auditd_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "a private auditd needs root"
    for binary in ("auditd", "auditctl", "useradd", "userdel", "setpriv"):
        if shutil.which(binary) is None:
            return f"`{binary}` is not installed (Debian: auditd, passwd, util-linux)"
    status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True)
    if status.returncode != 0:
        return f"the kernel audit is not available here: {status.stderr.strip()}"
    if _status_value(status.stdout, "pid") not in ("0", None):
        return "an audit daemon already runs: a test cannot start its own"
    return None


def _status_value(text: str, key: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return value.strip()
    return None


_CONF = """\
local_events = yes
write_logs = yes
log_file = {log}
log_group = root
log_format = ENRICHED
flush = INCREMENTAL_ASYNC
freq = 50
max_log_file = 1024
num_logs = 9
priority_boost = 0
name_format = NONE
max_log_file_action = ROTATE
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = SYSLOG
plugin_dir = {plugins}
end_of_event_timeout = 2
"""


class PrivateAuditd:
    """auditd on a temporary configuration directory and log; rules saved and restored."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dt-audit-"))
        self.log_file = self.dir / "log" / "audit.log"
        self.watched = self.dir / "etc-docker"  # stands in for /etc/docker
        self.process: subprocess.Popen[bytes] | None = None
        self._saved_rules = ""
        self._was_enabled = "0"

    def start(self) -> None:
        status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout
        self._was_enabled = _status_value(status, "enabled") or "0"
        self._saved_rules = subprocess.run(
            ["auditctl", "-l"], capture_output=True, text=True
        ).stdout
        (self.dir / "plugins.d").mkdir()
        self.log_file.parent.mkdir(mode=0o700)
        self.watched.mkdir()
        conf = self.dir / "auditd.conf"
        conf.write_text(_CONF.format(log=self.log_file, plugins=self.dir / "plugins.d"))
        conf.chmod(0o640)
        self.process = subprocess.Popen(
            ["auditd", "-n", "-c", str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not _wait(lambda: self.log_file.exists() and self._registered(), 10):
            raise RuntimeError("the private auditd did not start")
        self._rules()

    def _registered(self) -> bool:
        status = subprocess.run(["auditctl", "-s"], capture_output=True, text=True).stdout
        return self.process is not None and _status_value(status, "pid") == str(self.process.pid)

    def _rules(self) -> None:
        subprocess.run(["auditctl", "-D"], capture_output=True, check=True)
        clis = {
            os.path.realpath(p)
            for p in ("/usr/bin/docker", "/usr/local/bin/docker", *COMPOSE_SCRIPTS)
            if os.path.exists(p)
        }
        for cli in sorted(clis):
            subprocess.run(
                [
                    "auditctl",
                    "-a",
                    "always,exit",
                    "-F",
                    "arch=b64",
                    "-S",
                    "execve",
                    "-F",
                    f"path={cli}",
                    "-k",
                    "docker-cli",
                ],
                check=True,
            )
        subprocess.run(
            ["auditctl", "-w", str(self.watched), "-p", "wa", "-k", "docker"], check=True
        )

    def rotate(self) -> None:
        """Rotate the log and wait until auditd has: it handles the signal in its own time."""
        assert self.process is not None
        before = self._log_inode()
        os.kill(self.process.pid, signal.SIGUSR1)
        if not _wait(lambda: self._log_inode() not in (None, before), 10):
            raise RuntimeError("auditd did not rotate its log within 10 s of SIGUSR1")

    def _log_inode(self) -> int | None:
        try:
            return self.log_file.stat().st_ino
        except FileNotFoundError:  # between the rename and the new file
            return None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(["auditctl", "-D"], capture_output=True)
            self._restore_rules()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        subprocess.run(["auditctl", "-e", self._was_enabled], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _restore_rules(self) -> None:
        rules = [r for r in self._saved_rules.splitlines() if r.startswith(("-a", "-w"))]
        if rules:
            saved = self.dir / "saved.rules"
            saved.write_text("\n".join(rules) + "\n")
            subprocess.run(["auditctl", "-R", str(saved)], capture_output=True)


@pytest.fixture(scope="module")
def audit_daemon() -> Iterator[PrivateAuditd]:
    with machine_lock("live-audit"):
        reason = _auditd_unavailable()
        if reason is not None:
            missing_component(reason)
        daemon = PrivateAuditd()
        try:
            daemon.start()
            yield daemon
        finally:
            daemon.stop()


# ---------------------------------------------------------------------------- people


class Person:
    def __init__(self, name: str, uid: int, gid: int, home: Path) -> None:
        self.name, self.uid, self.gid, self.home = name, uid, gid, home


@pytest.fixture(scope="module")
def people() -> Iterator[dict[str, Person]]:
    with machine_lock("live-audit"):
        yield from _people()


def _people() -> Iterator[dict[str, Person]]:
    created: list[str] = []
    found: dict[str, Person] = {}
    home = Path(tempfile.mkdtemp(prefix="dt-home-"))
    home.chmod(0o755)
    try:
        for name in USERS:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
                created.append(name)
                entry = pwd.getpwnam(name)
            user_home = home / name
            user_home.mkdir(mode=0o700)
            os.chown(user_home, entry.pw_uid, entry.pw_gid)
            found[name] = Person(name, entry.pw_uid, entry.pw_gid, user_home)
        yield found
    finally:
        for name in created:
            subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def _docker_gid() -> int:
    try:
        return grp.getgrnam("docker").gr_gid
    except KeyError:
        subprocess.run(["groupadd", "-f", "docker"], check=True)
        return grp.getgrnam("docker").gr_gid


def as_login(
    person: Person, dockerd: Dockerd, *argv: str, own_uid: bool = False, times: int = 1
) -> str:
    """Run the docker CLI with the person's login uid: as root (sudo) or as them (group);
    `times` times in one login session (one loginuid write), as a shell's commands are."""
    env = dict(dockerd.env, DOCKER_CONFIG=str(person.home / ".docker"), HOME=str(person.home))
    command = ["docker", *argv]
    if own_uid:
        command = [
            "setpriv",
            f"--reuid={person.uid}",
            f"--regid={person.gid}",
            f"--groups={_docker_gid()}",
            *command,
        ]
    script = f'echo {person.uid} > /proc/self/loginuid && exec "$@"'
    if times > 1:
        repeat = f'for _ in $(seq {times}); do "$@" || exit 1; done'
        script = f"echo {person.uid} > /proc/self/loginuid && {repeat}"
    result = subprocess.run(
        ["sh", "-c", script, "_", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def engine(dockerd: Dockerd) -> Iterator[Dockerd]:
    """The session dockerd, its socket reachable by the docker group (we restore that)."""
    mode = dockerd.root.stat().st_mode & 0o777
    socket = dockerd.socket_path.stat()
    dockerd.root.chmod(mode | 0o011)  # traverse only: the socket itself is root:docker 0660
    os.chown(dockerd.socket_path, 0, _docker_gid())
    try:
        yield dockerd
    finally:
        dockerd.root.chmod(mode)
        os.chown(dockerd.socket_path, socket.st_uid, socket.st_gid)


# ---------------------------------------------------------------------------- service


class TimedTrail(StateTrail):
    """Records when each event was stored (wall clock) to check attribution latency."""

    def __init__(self) -> None:
        super().__init__()
        self.stored_at: dict[str, int] = {}

    def append_state(self, batch: Any, source_state: Any) -> Any:
        result = super().append_state(batch, source_state)
        now = time.time_ns()
        for event in result.stored:
            self.stored_at[event.id] = now
        return result


class LiveService:
    """What `docktrail run` wires for attribution, minus rules and notifications."""

    def __init__(self, config: AuditdConfig, dockerd: Dockerd, trail: TimedTrail) -> None:
        self.config = config
        self.dockerd = dockerd
        self.trail = trail
        self.correlator = Correlator.from_config(config)
        self.tail = AuditLogTail(
            config, HOST, correlator=self.correlator, checkpoint=trail.load_state("auditd")
        )
        self.pipeline = Pipeline(
            CheckpointedTrail(trail, [self.tail]),
            stages=[Attribution(self.correlator, hold_secs=config.hold_secs)],
            flush_interval_secs=0.02,
        )
        self.handed: list[Event] = []  # every event the audit tail handed out
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: Any = None

    async def __aenter__(self) -> LiveService:
        import docker

        await self.tail.start()
        client = docker.APIClient(base_url=self.dockerd.host, version="auto")
        self._stream = client.events(decode=True, since=int(time.time()) - 1)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read() -> None:  # docker-py blocks: a thread reads and hands over
            with contextlib.suppress(Exception):
                for raw in self._stream:
                    loop.call_soon_threadsafe(queue.put_nowait, raw)

        threading.Thread(target=read, daemon=True).start()
        self._tasks = [asyncio.create_task(self._docker(queue)), asyncio.create_task(self._audit())]
        return self

    async def _docker(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            raw = await queue.get()
            await self.pipeline.put(normalize_engine_event(raw, HOST))

    async def _audit(self) -> None:
        async for event in self.tail:
            self.handed.append(event)
            await self.pipeline.put(event)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(Exception):
            self._stream.close()
        await self.pipeline.aclose()
        await self.tail.aclose()


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


async def _await(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@pytest.fixture
async def service(
    audit_daemon: PrivateAuditd, engine: Dockerd
) -> AsyncIterator[tuple[LiveService, PrivateAuditd]]:
    config = AuditdConfig(log_file=audit_daemon.log_file, start_at="end")
    async with LiveService(config, engine, TimedTrail()) as live:
        yield live, audit_daemon


def docker_events(trail: StateTrail, **where: str) -> list[Event]:
    return [
        e
        for e in trail.events()
        if e.source == "docker" and all(_field(e, k) == v for k, v in where.items())
    ]


def _field(event: Event, key: str) -> object:
    if key == "name":
        return event.actor.name
    return getattr(event, key)


# ---------------------------------------------------------------------------- tests


async def test_sudo_and_group_patterns_attributed_within_a_second(
    service: tuple[LiveService, PrivateAuditd], people: dict[str, Person]
) -> None:
    live, _daemon = service
    alice, bob = people["dt-alice"], people["dt-bob"]
    ran = await asyncio.gather(
        asyncio.to_thread(
            as_login,
            alice,
            live.dockerd,
            "run",
            "-d",
            "--name",
            "live-a",
            "--memory",
            "64m",
            "--cap-add",
            "NET_ADMIN",
            BUSYBOX_REF,
            "sleep",
            "30",
        ),
        asyncio.to_thread(
            as_login,
            bob,
            live.dockerd,
            "run",
            "-d",
            "--name",
            "live-b",
            BUSYBOX_REF,
            "sleep",
            "30",
            own_uid=True,
        ),
    )
    assert all(ran)

    def settled() -> bool:
        wanted = [
            ("live-a", "create"),
            ("live-a", "start"),
            ("live-b", "create"),
            ("live-b", "start"),
        ]
        return all(docker_events(live.trail, name=n, action=a) for n, a in wanted)

    assert await _await(settled, 5), [e.action for e in live.trail.events()]
    for name, person in (("live-a", alice), ("live-b", bob)):
        for event in docker_events(live.trail, name=name):
            assert (event.who.login, event.who.method) == (person.name, "auditd-cli"), event
            assert event.who.auid == person.uid
            latency = live.trail.stored_at[event.id] - event.time_ns
            assert latency < 1_000_000_000, f"{event.action} of {name} took {latency / 1e9:.2f}s"
    (create_a,) = docker_events(live.trail, name="live-a", action="create")
    assert create_a.who.user == "root" and create_a.who.uid == 0  # sudo pattern
    assert create_a.config["memory_bytes"] == 64 << 20 and create_a.config["cap_add"] == [
        "NET_ADMIN"
    ]
    (create_b,) = docker_events(live.trail, name="live-b", action="create")
    assert create_b.who.user == bob.name and create_b.who.uid == bob.uid  # docker group
    await asyncio.to_thread(as_login, alice, live.dockerd, "rm", "-f", "live-a", "live-b")

    # Only our containers: the trail may also hold other tests' removals from the replay window.
    def ours() -> list[Event]:
        destroyed = docker_events(live.trail, action="destroy")
        return [e for e in destroyed if e.actor.name in ("live-a", "live-b")]

    assert await _await(lambda: len(ours()) == 2, 5)
    for event in ours():
        assert event.who.login == alice.name


async def test_daemon_file_write_is_recorded_with_its_login(
    service: tuple[LiveService, PrivateAuditd], people: dict[str, Person]
) -> None:
    live, daemon = service
    alice = people["dt-alice"]
    target = daemon.watched / "daemon.json"
    script = f"echo {alice.uid} > /proc/self/loginuid && echo '{{}}' > {target}"
    subprocess.run(["sh", "-c", script], check=True)

    def written() -> list[Event]:
        return [e for e in live.trail.events() if e.type == "daemon-file"]

    assert await _await(lambda: bool(written()), 5)
    (event,) = written()
    assert (event.action, event.actor.name) == ("create", str(target))
    assert (event.who.login, event.who.method, event.source) == (alice.name, "auditd", "auditd")


async def test_rotation_during_a_burst_loses_and_repeats_nothing(
    service: tuple[LiveService, PrivateAuditd], people: dict[str, Person]
) -> None:
    live, daemon = service
    alice, bob = people["dt-alice"], people["dt-bob"]
    rotated = daemon.log_file.with_name("audit.log.1")

    def burst(person: Person, own: bool) -> list[str]:
        names = [f"{person.name}-v{i}" for i in range(12)]
        for name in names:
            as_login(person, live.dockerd, "volume", "create", name, own_uid=own)
        return names

    def rotations() -> None:
        for _ in range(3):
            time.sleep(0.25)
            daemon.rotate()

    made = await asyncio.gather(
        asyncio.to_thread(burst, alice, False),
        asyncio.to_thread(burst, bob, True),
        asyncio.to_thread(rotations),
    )
    assert rotated.exists(), "auditd did not rotate"
    volumes = {
        name: person for names, person in zip(made[:2], (alice, bob), strict=True) for name in names
    }

    def calls() -> list[Event]:  # other docker CLI calls on this machine are audited too
        return [
            e
            for e in live.trail.events()
            if e.type == "docker-cli" and e.action == "volume create" and e.actor.name in volumes
        ]

    def complete() -> bool:
        created = {e.actor.name for e in docker_events(live.trail, type="volume", action="create")}
        return set(volumes) <= created and len(calls()) >= len(volumes)

    assert await _await(complete, 10)
    await asyncio.sleep(0.3)  # anything repeated would arrive now
    assert sorted(e.actor.name or "" for e in calls()) == sorted(volumes)  # each once
    handed = [e.id for e in live.handed]
    assert len(handed) == len(set(handed)), "the tail handed out an event twice"
    for event in docker_events(live.trail, type="volume", action="create"):
        if event.actor.name in volumes:
            assert event.who.login == volumes[event.actor.name].name, event
    await asyncio.to_thread(as_login, alice, live.dockerd, "volume", "rm", *volumes)


async def test_restart_resumes_at_the_checkpoint(
    audit_daemon: PrivateAuditd, engine: Dockerd, people: dict[str, Person]
) -> None:
    """Calls made while docktrail is down are read after the restart, nothing twice."""
    alice = people["dt-alice"]
    config = AuditdConfig(log_file=audit_daemon.log_file, start_at="end")
    trail = TimedTrail()

    mine = {"before-stop", "while-down-1", "while-down-2", "while-down-3"}

    def calls() -> list[Event]:  # other docker CLI calls on this machine are audited too
        return [
            e
            for e in trail.events()
            if e.type == "docker-cli" and e.action == "volume create" and e.actor.name in mine
        ]

    async with LiveService(config, engine, trail) as live:
        await asyncio.to_thread(as_login, alice, engine, "volume", "create", "before-stop")
        assert await _await(lambda: len(calls()) == 1, 5)
        await asyncio.sleep(0.2)  # the checkpoint of the last write covers it
        assert live.trail.state["auditd"]["offset"] > 0
    for name in ("while-down-1", "while-down-2"):
        await asyncio.to_thread(as_login, alice, engine, "volume", "create", name)
    await asyncio.to_thread(audit_daemon.rotate)  # and the log rotates meanwhile
    await asyncio.to_thread(as_login, alice, engine, "volume", "create", "while-down-3")
    async with LiveService(config, engine, trail) as live:
        assert await _await(lambda: len(calls()) == 4, 5), [e.actor.name for e in calls()]
        await asyncio.sleep(0.3)
    names = sorted(e.actor.name or "" for e in calls())
    assert names == ["before-stop", "while-down-1", "while-down-2", "while-down-3"]
    assert all(e.who.login == alice.name for e in calls())
    await asyncio.to_thread(as_login, alice, engine, "volume", "rm", *names)
