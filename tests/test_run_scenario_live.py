"""`docktrail run` live gives the alerts that offline ingest of scenario-a gives.

The steps of /work/shared/tools/capture-scenario.sh (scenario a) are replayed
through the real docker CLI against the session dockerd, by real logins seen
by a private auditd (`tests.test_audit_live`), while `docktrail run` (a real
process, auditd enabled) follows both. Then the alerts of severity medium and
above must be `tests.test_alerts_cli.EXPECTED` (what ingest of the captured
files gives), with the logins of the people who acted.

Differences from the capture, all forced by the test machine:

* the logins are `dt-alice` and `dt-bob` (the `people` fixture), mapped from
  `alice` and `bob`;
* the socket mounted into `sock-mounter` is the test daemon's own
  (`.../docker.sock`): the host has none, and a bind of a missing path would
  create a directory there. The rule matches on the basename;
* the private auditd watches a stand-in for /etc/docker (`PrivateAuditd.watched`),
  so the daemon file written is `<stand-in>/daemon.json` and the expected
  alert names that path instead of /etc/docker/daemon.json;
* the untrusted image is imported from a file in bob's home (`docker import
  FILE REF`), since `as_login` passes no standard input.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests import test_audit_live
from tests.dockerd import BUSYBOX_REF, Dockerd, busybox_rootfs_tar, wait_until
from tests.test_alerts_cli import EXPECTED, _subject
from tests.test_audit_live import Person, PrivateAuditd, as_login
from tests.test_run_live import Service

# test_audit_live's module-scoped fixtures, registered here under their names: the
# private auditd (pytest tears that module's down before this module's starts, so
# two never run at once, and each restores the audit rules it found), the people
# alice and bob, and the session dockerd with its socket opened to the docker group.
audit_daemon = test_audit_live.audit_daemon
engine = test_audit_live.engine
people = test_audit_live.people

HOST = "live-scenario"
LOGINS = {"alice": "dt-alice", "bob": "dt-bob"}
CAPTURED_DAEMON_FILE = "/etc/docker/daemon.json"
NGINX_REF = "registry.internal/web/nginx:1.25"
MINER_REF = "docker.io/randomuser/cryptominer:latest"
CHURN = 30
HOLD_SECS = 1.0  # auditd.hold_secs (default): longest an Engine event waits for auditd
POLL_SECS = 0.05
ENGINE_LOOKBACK_SECS = 2.1  # how far back test_audit_live's service reads the Engine
# Containers whose create must be attributed, and who made them.
CREATORS = {
    "web-1": "alice",
    "debug-priv": "alice",
    "sock-mounter": "bob",
    "hostnet": "bob",
    "miner": "bob",
    **{f"churn-{i}": "bob" for i in range(1, CHURN + 1)},
}
Json = dict[str, Any]


_Service = TypeVar("_Service", bound="ScenarioService")


def started(live: _Service) -> Iterator[_Service]:
    """A module's live service: started, stopped at the end, and it must exit 0."""
    live.start()
    try:
        yield live
    finally:
        code = live.stop()
        assert code == 0, live.log_text()


class ScenarioService(Service):
    """`docktrail run` of `tests.test_run_live`, with auditd and the scenario's trust policy."""

    def __init__(self, tmp_path: Path, daemon: Dockerd, audit_log: Path) -> None:
        super().__init__(tmp_path, daemon)
        self.config.write_text(
            f"host: {HOST}\n"
            f"trail:\n  path: {self.trail_path}\n  flush_interval_secs: 0.02\n"
            "  checkpoint_interval_secs: 1\n"
            f"docker:\n  host: {daemon.host}\n  reconnect_min_secs: 0.2\n"
            "  reconnect_max_secs: 1\n"
            f"auditd:\n  enabled: true\n  log_file: {audit_log}\n"
            # The private auditd's log holds only this module's records: read all
            # of them, so no CLI call can slip in before the tail reached the end.
            "  start_at: start\n"
            f"  hold_secs: {HOLD_SECS}\n"
            "posture:\n  enabled: false\n"  # the host's posture is not the scenario's
            'rules:\n  untrusted-image:\n    trusted: ["registry.internal/*"]\n'
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `docktrail` CLI on this service's configuration (and trail)."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.cwd)}
        return subprocess.run(
            [sys.executable, "-m", "listener", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=self.cwd,
            timeout=60,
        )

    def json_lines(self, *args: str) -> list[Json]:
        result = self.cli(*args, "--format", "json")
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]


class StoredClock:
    """Polls the trail in a thread: when (wall clock) each event became visible."""

    def __init__(self, trail_path: Path) -> None:
        self.trail_path = trail_path
        self.seen_ns: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stored-clock", daemon=True)

    def __enter__(self) -> StoredClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        last = 0
        with SQLiteTrail(self.trail_path) as trail:
            while not self._stop.wait(POLL_SECS):
                for event in trail.query(EventFilter(after_seq=last)):
                    self.seen_ns.setdefault(event.id, time.time_ns())
                    last = max(last, event.seq or 0)


def attempt_as_login(person: Person, daemon: Dockerd, *argv: str) -> None:
    """`as_login` for a step that may fail (the capture's `|| true`)."""
    with contextlib.suppress(AssertionError):
        as_login(person, daemon, *argv)


def write_as_login(person: Person, script: str) -> None:
    """A shell command with the person's login uid (the sudo pattern)."""
    subprocess.run(["sh", "-c", f"echo {person.uid} > /proc/self/loginuid && {script}"], check=True)


def play_scenario(
    alice: Person, bob: Person, daemon: Dockerd, daemon_file: Path, rootfs: Path
) -> None:
    """The steps of capture-scenario.sh, scenario a, in its order."""
    as_login(alice, daemon, "tag", BUSYBOX_REF, NGINX_REF)
    as_login(alice, daemon, "run", "-d", "--name", "web-1", "--stop-timeout", "1",
             "--memory", "256m", "--read-only", "--label", "audit.why=release 2024.11 hotfix",
             "--label", "audit.ticket=OPS-1234", NGINX_REF, "sleep", "300")  # fmt: skip
    # The start may fail (a kernel without what --privileged needs): the create counts.
    attempt_as_login(alice, daemon, "run", "-d", "--name", "debug-priv", "--privileged",
                     BUSYBOX_REF, "sleep", "300")  # fmt: skip
    as_login(bob, daemon, "run", "-d", "--name", "sock-mounter",
             "-v", f"{daemon.socket_path}:/var/run/docker.sock", BUSYBOX_REF, "sleep", "300",
             own_uid=True)  # fmt: skip
    as_login(bob, daemon, "run", "-d", "--name", "hostnet", "--network", "host",
             "--cap-add", "NET_ADMIN", BUSYBOX_REF, "sleep", "300", own_uid=True)  # fmt: skip
    as_login(bob, daemon, "import", str(rootfs), MINER_REF, own_uid=True)
    as_login(bob, daemon, "run", "-d", "--name", "miner", MINER_REF, "sleep", "300",
             own_uid=True)  # fmt: skip
    as_login(alice, daemon, "exec", "web-1", "sh", "-c", "id")
    for i in range(1, CHURN + 1):
        as_login(bob, daemon, "run", "--rm", "--name", f"churn-{i}", BUSYBOX_REF, "true",
                 own_uid=True)  # fmt: skip
    assert not daemon_file.exists()
    write_as_login(alice, f"""echo '{{"icc": false}}' > {daemon_file}""")
    write_as_login(alice, f"rm -f {daemon_file}")  # restored: there was none
    as_login(alice, daemon, "stop", "-t", "1", "web-1")
    as_login(alice, daemon, "rm", "web-1")


def expected_alerts(daemon_file: Path) -> set[tuple[str, str, str]]:
    def subject(text: str) -> str:
        return str(daemon_file) if text == CAPTURED_DAEMON_FILE else text

    return {(rule, subject(name), LOGINS[login]) for rule, name, login in EXPECTED}


def caught_up(service: ScenarioService) -> bool:
    """The last step's Engine event and audit record are stored, and evaluated."""
    with SQLiteTrail(service.trail_path) as trail:
        destroyed = [
            e
            for e in trail.query(EventFilter(source="docker", type="container", action="destroy"))
            if e.actor.name == "web-1"
        ]
        removals = [
            e
            for e in trail.query(EventFilter(source="auditd", type="docker-cli", action="rm"))
            if e.actor.name == "web-1"
        ]
        if not (destroyed and removals):
            return False
        last = max(e.seq or 0 for e in (*destroyed, *removals))
        return trail.evaluated_through() >= last


@dataclass(slots=True)
class Played:
    service: ScenarioService
    daemon_file: Path
    before: set[str]  # containers that existed before (another test's)
    seen_ns: dict[str, int]  # event id -> when the trail first showed it
    alerts: list[Json]  # `docktrail alerts --min-severity medium`


@pytest.fixture(scope="module")
def played(
    tmp_path_factory: pytest.TempPathFactory,
    audit_daemon: PrivateAuditd,
    engine: Dockerd,
    people: dict[str, Person],
) -> Iterator[Played]:
    """The scenario, played once under `docktrail run`, which is then stopped (SIGTERM)."""
    alice, bob = people["dt-alice"], people["dt-bob"]
    daemon_file = audit_daemon.watched / "daemon.json"
    rootfs = bob.home / "rootfs.tar"  # bob imports it: his file
    rootfs.write_bytes(busybox_rootfs_tar())
    os.chown(rootfs, bob.uid, bob.gid)
    # A container left by another test would be reported at start (`observed`): not ours.
    before = set(engine.docker("ps", "--all", "--format", "{{.Names}}").split())
    service = ScenarioService(tmp_path_factory.mktemp("scenario-live"), engine,
                              audit_daemon.log_file)  # fmt: skip
    cleaned_at = 0.0
    try:
        assert not before & set(CREATORS), f"left over: {before & set(CREATORS)}"
        service.start()
        with StoredClock(service.trail_path) as clock:
            play_scenario(alice, bob, engine, daemon_file, rootfs)
            assert wait_until(lambda: caught_up(service), 15), service.log_text()
        code = service.stop()
        assert code == 0, service.log_text()
        cleaned_at = remove_what_we_made(engine)  # now: the checks below outlast its events
        alerts = service.json_lines("alerts", "--min-severity", "medium")
        yield Played(service, daemon_file, before, clock.seen_ns, alerts)
    finally:
        if service.process is not None:
            service.stop()  # a no-op once stopped
        cleaned_at = max(cleaned_at, remove_what_we_made(engine))  # no-op when gone
        rootfs.unlink(missing_ok=True)
        daemon_file.unlink(missing_ok=True)
        # test_audit_live's service reads the Engine from `since=int(time.time()) - 1`,
        # up to 2 s back, and counts every destroy: let ours be older than that.
        time.sleep(max(0.0, ENGINE_LOOKBACK_SECS - (time.monotonic() - cleaned_at)))


def remove_what_we_made(engine: Dockerd) -> float:
    """Our containers and images go; returns when (monotonic) their last event was."""
    existing = set(engine.docker("ps", "--all", "--format", "{{.Names}}").split())
    images = set(engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}").split())
    ours = sorted(existing & set(CREATORS))
    if ours:
        engine.docker("rm", "--force", *ours, check=False)
    tags = sorted(images & {NGINX_REF, MINER_REF.removeprefix("docker.io/")})
    if tags:
        engine.docker("rmi", *tags, check=False)
    return time.monotonic() if ours or tags else 0.0


def our_alerts(played: Played) -> list[Json]:
    return [a for a in played.alerts if a["container"] not in played.before]


def found_alerts(played: Played) -> set[tuple[str, str, str]]:
    return {(a["rule"], _subject(a), a["who"]["login"]) for a in our_alerts(played)}


def test_alerts_are_those_of_the_offline_ingest(played: Played) -> None:
    # The Engine adds label=disable to --privileged containers; inspect shows it, the
    # argv does not. The rule must not tell live and offline apart on that.
    assert found_alerts(played) == expected_alerts(played.daemon_file)
    assert len(our_alerts(played)) == len(EXPECTED)


def test_every_create_is_attributed_to_its_login(played: Played) -> None:
    creates = creates_of(played)
    assert set(CREATORS) <= set(creates)
    for name, login in CREATORS.items():
        who = creates[name]["who"]
        assert (who["login"], who["method"]) == (LOGINS[login], "auditd-cli"), (name, who)
        user = "root" if login == "alice" else LOGINS[login]  # sudo pattern / docker group
        assert who["user"] == user, (name, who)


def test_creates_are_stored_attributed_within_the_hold(played: Played) -> None:
    """Attribution waits for the audit log at most HOLD_SECS; the rest is writing and polling."""
    creates = creates_of(played)
    latency = {name: played.seen_ns[creates[name]["id"]] - creates[name]["time_ns"]
               for name in CREATORS}  # fmt: skip
    slowest = max(latency, key=latency.__getitem__)
    print(f"slowest create: {slowest}, stored {latency[slowest] / 1e9:.3f}s after the Engine's")
    assert latency[slowest] < (HOLD_SECS + 0.5) * 1e9, f"{slowest}: {latency[slowest] / 1e9}s"


def test_the_trail_verifies(played: Played) -> None:
    result = played.service.cli("verify")
    assert result.returncode == 0, result.stdout + result.stderr


def creates_of(played: Played) -> dict[str, Json]:
    events = played.service.json_lines("query", "-f", "type=container", "-f", "action=create")
    return {e["actor"]["name"]: e for e in events}
