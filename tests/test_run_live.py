"""`docktrail run` as a real process against a real dockerd: the acceptance tests of the
live Docker source (issue 3).

A raw `/events` reader in the test process (`Dockerd.record_events`) is the
ground truth; the trail must hold each of its events exactly once, or name
the window where it may have been missed with a `gap` event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from listener.model.event import Event
from listener.sources.docker import normalize_engine_event
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.dockerd import BUSYBOX_REF, Dockerd, EventsRecorder, unavailable_reason, wait_until
from tests.shared_data import missing_component

HOST = "live-test"
Log = dict[str, Any]


class Service:
    """`python -m listener -c CFG run` in a subprocess; its JSON log lines are collected."""

    def __init__(self, tmp_path: Path, daemon: Dockerd, **docker: object) -> None:
        self.trail_path = tmp_path / "trail.db"
        self.config = tmp_path / "docktrail.yaml"
        settings = {"host": daemon.host, "reconnect_min_secs": 0.2, "reconnect_max_secs": 1}
        settings.update(docker)
        docker_yaml = "".join(f"  {key}: {value}\n" for key, value in settings.items())
        self.config.write_text(
            f"host: {HOST}\ntrail:\n  path: {self.trail_path}\n  flush_interval_secs: 0.02\n"
            "  checkpoint_interval_secs: 1\n"
            f"docker:\n{docker_yaml}auditd:\n  enabled: false\n"
        )
        self.cwd = tmp_path
        self.logs: list[Log] = []
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> Service:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.cwd)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "listener", "-c", str(self.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.cwd,
        )
        self._reader = threading.Thread(target=self._read_logs, daemon=True)
        self._reader.start()
        self.wait_for_log(lambda r: r["message"] == "connected to the Docker Engine")
        return self

    def _read_logs(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"message": line.rstrip(), "level": "raw"})

    def wait_for_log(self, predicate: Callable[[Log], bool], timeout: float = 20) -> Log:
        found: list[Log] = []

        def seen() -> bool:
            found[:] = [r for r in list(self.logs) if predicate(r)]
            return bool(found)

        assert wait_until(seen, timeout), f"no such log line; logs:\n{self.log_text()}"
        return found[0]

    def count_logs(self, message: str) -> int:
        return sum(1 for r in list(self.logs) if r["message"] == message)

    def log_text(self) -> str:
        return "\n".join(json.dumps(r) for r in self.logs[-40:])

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> int:
        """SIGTERM; the exit code (0 expected)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if self._reader is not None:
            self._reader.join(5)
        return code

    def events(self, f: EventFilter | None = None) -> list[Event]:
        with SQLiteTrail(self.trail_path) as trail:
            return list(trail.query(f or EventFilter()))


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    services: list[Service] = []

    def make(daemon: Dockerd, **docker: object) -> Service:
        service = Service(tmp_path, daemon, **docker)
        services.append(service)
        return service.start()

    yield make
    for service in services:
        code = service.stop()
        if os.environ.get("DEBUG_LOGS"):
            print(service.log_text())
        assert code == 0, service.log_text()


# ---------------------------------------------------------------------- comparisons


def truth_ids(truth: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {normalize_engine_event(raw, HOST).id: raw for raw in truth}


def docker_events(service: Service) -> list[Event]:
    return service.events(EventFilter(source="docker"))


def wait_for_truth(service: Service, recorder: EventsRecorder, timeout: float = 30) -> None:
    """Until the trail accounts for every event the recorder has seen (or `timeout`):
    each is stored, or inside a recorded gap."""
    wait_until(lambda: unaccounted(service, recorder.events) == [], timeout)


def unaccounted(service: Service, truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events of `truth` neither stored nor inside a recorded gap."""
    windows = gaps(service)
    return [raw for raw in missing(service, truth) if not in_a_gap(raw, windows)]


def assert_no_duplicates(events: list[Event]) -> None:
    keys = Counter(
        (e.time_ns, e.type, e.action, e.actor.id, e.attributes.get("action_detail")) for e in events
    )
    assert [key for key, n in keys.items() if n > 1] == []


def assert_nothing_invented(events: list[Event], truth: list[dict[str, Any]]) -> None:
    """Every Engine event of the trail in the recorded window is one the Engine sent."""
    ids = truth_ids(truth)
    start = min(int(raw["timeNano"]) for raw in truth)
    invented = [e for e in events if e.time_ns >= start and e.id not in ids]
    assert invented == []


def missing(service: Service, truth: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stored = {event.id for event in docker_events(service)}
    return [raw for event_id, raw in truth_ids(truth).items() if event_id not in stored]


def gaps(service: Service) -> list[Event]:
    return service.events(EventFilter(source="docktrail", type="daemon", action="gap"))


def in_a_gap(raw: dict[str, Any], windows: list[Event]) -> bool:
    time_ns = int(raw["timeNano"])
    return any(g.attributes["from_ns"] <= time_ns <= g.attributes["until_ns"] for g in windows)


# ---------------------------------------------------------------------- scenario

SECURITY_CONTAINERS: dict[str, tuple[str, ...]] = {
    "sec-privileged": ("--privileged",),
    "sec-cap": ("--cap-add", "SYS_ADMIN"),
    "sec-socket": ("-v", "/var/run/docker.sock:/var/run/docker.sock"),
    "sec-pid": ("--pid", "host"),
    "sec-seccomp": ("--security-opt", "seccomp=unconfined"),
    "sec-readonly": ("--read-only",),
    "sec-memory": ("--memory", "64m"),
    "sec-user": ("--user", "1000"),
}


def run_scenario(daemon: Dockerd) -> int:
    """≥ 50 operations of every kind; returns how many."""
    ops: list[tuple[str, ...]] = [
        ("network", "create", "scn-net"),
        ("volume", "create", "scn-vol"),
        ("image", "tag", BUSYBOX_REF, "scn/tagged:1"),
        ("image", "tag", BUSYBOX_REF, "scn/tagged:2"),
    ]
    for name, options in SECURITY_CONTAINERS.items():
        ops.append(("create", "--name", name, *options, BUSYBOX_REF, "true"))
    web = ("--name", "scn-web", "--stop-timeout", "1", "--network", "scn-net")
    ops += [
        ("run", "--detach", *web, "-v", "scn-vol:/data", "--label", "audit.ticket=OPS-9",
         BUSYBOX_REF, "sleep", "300"),
        ("exec", "scn-web", "id"),
        ("exec", "scn-web", "sh", "-c", "echo hi > /data/x"),
        ("pause", "scn-web"),
        ("unpause", "scn-web"),
        ("rename", "scn-web", "scn-web2"),
        ("network", "disconnect", "scn-net", "scn-web2"),
        ("network", "connect", "scn-net", "scn-web2"),
        ("kill", "scn-web2"),
        ("start", "scn-web2"),
        ("stop", "--time", "0", "scn-web2"),
        ("rm", "scn-web2"),
    ]  # fmt: skip
    for i in range(3):
        ops.append(("run", "--rm", "--name", f"scn-job{i}", BUSYBOX_REF, "true"))
    for i in range(4):
        ops += [("volume", "create", f"scn-v{i}"), ("volume", "rm", f"scn-v{i}")]
    ops += [
        ("create", "--name", "scn-c", BUSYBOX_REF, "true"),
        ("start", "--attach", "scn-c"),
        ("commit", "scn-c", "scn/committed:1"),
        ("rm", "scn-c"),
        ("image", "rm", "scn/committed:1"),
        ("image", "rm", "scn/tagged:1"),
        ("image", "rm", "scn/tagged:2"),
        ("volume", "rm", "scn-vol"),
        ("network", "rm", "scn-net"),
    ]
    ops += [("rm", "--force", name) for name in SECURITY_CONTAINERS]
    for op in ops:
        daemon.docker(*op)
    return len(ops)


def test_scenario_is_recorded_completely_once(
    dockerd: Dockerd, service_factory: Callable[..., Service]
) -> None:
    service = service_factory(dockerd)
    with dockerd.record_events() as recorder:
        assert run_scenario(dockerd) >= 50
        recorder.catch_up()
        wait_for_truth(service, recorder)
    truth = recorder.events
    assert len(truth) >= 80
    assert missing(service, truth) == []
    stored = docker_events(service)
    assert_no_duplicates(stored)
    assert_nothing_invented(stored, truth)
    assert gaps(service) == []
    kinds = {(e.type, e.action) for e in stored}
    for kind in [("container", "exec_start"), ("image", "untag"), ("network", "connect"),
                 ("volume", "destroy"), ("container", "rename"), ("image", "tag")]:  # fmt: skip
        assert kind in kinds
    check_security_configs(stored)
    check_image_events(stored)
    assert service.stop() == 0  # SIGTERM: flushed, sealed
    with SQLiteTrail(service.trail_path) as trail:
        report = trail.verify()
    assert report.ok and report.unsealed == 0
    assert report.checkpoints >= 2  # signed while running, and at the end


def check_security_configs(stored: list[Event]) -> None:
    creates = {
        e.actor.name: e.config for e in stored if e.type == "container" and e.action == "create"
    }
    config = {name: creates[name] for name in SECURITY_CONTAINERS}
    assert all(c["origin"] == "inspect" for c in config.values())
    assert config["sec-privileged"]["privileged"] is True
    assert config["sec-cap"]["privileged"] is False
    assert config["sec-cap"]["cap_add"] == ["SYS_ADMIN"]
    (mount,) = config["sec-socket"]["mounts"]
    assert mount["source"] == mount["destination"] == "/var/run/docker.sock"
    assert mount["type"] == "bind" and mount["read_only"] is False
    assert config["sec-pid"]["pid_mode"] == "host"
    assert config["sec-seccomp"]["seccomp"] == "unconfined"
    assert config["sec-seccomp"]["security_opt"] == ["seccomp=unconfined"]
    assert config["sec-readonly"]["read_only_rootfs"] is True
    assert config["sec-memory"]["memory_bytes"] == 64 * 1024 * 1024
    assert config["sec-user"]["user"] == "1000"
    plain = config["sec-user"]
    assert plain["read_only_rootfs"] is False and plain["memory_bytes"] is None
    assert plain["pid_mode"] is None and plain["seccomp"] is None and plain["cap_add"] == []
    assert plain["image"] == BUSYBOX_REF and plain["image_digest"].startswith("sha256:")


def check_image_events(stored: list[Event]) -> None:
    tags = [e for e in stored if e.type == "image" and e.action == "tag"]
    assert tags and all(e.attributes["image_id"].startswith("sha256:") for e in tags)
    assert any("scn/tagged:1" in e.attributes["repo_tags"] for e in tags)
    labelled = next(e for e in stored if e.actor.name == "scn-web" and e.action == "create")
    assert labelled.why.ticket == "OPS-9"


# ---------------------------------------------------------------------- crash


@pytest.fixture
def private_dockerd() -> Iterator[Dockerd]:
    """A daemon of this test's own: it gets killed."""
    reason = unavailable_reason()
    if reason is not None:
        missing_component(reason)
    daemon = Dockerd()
    try:
        daemon.start()
        daemon.import_busybox()
        yield daemon
    finally:
        daemon.stop()


def test_dockerd_killed_and_restarted(
    private_dockerd: Dockerd, service_factory: Callable[..., Service]
) -> None:
    daemon = private_dockerd
    service = service_factory(daemon)
    with daemon.record_events() as recorder:
        daemon.docker(
            "run", "-d", "--name", "r1", "--stop-timeout", "1", BUSYBOX_REF, "sleep", "300"
        )
        daemon.docker("run", "-d", "--name", "r2", "--restart", "always", "--stop-timeout", "1",
                      BUSYBOX_REF, "sleep", "300")  # fmt: skip
        daemon.docker("create", "--name", "c1", BUSYBOX_REF, "true")
        recorder.catch_up()
        wait_for_truth(service, recorder)
        before_kill = missing(service, recorder.events)
        killed_ns = time.time_ns()
        daemon.kill()
        service.wait_for_log(lambda r: r["message"].startswith("lost the Docker Engine"))
        # While docktrail cannot come back: the restart (dockerd stops r1 and r2 and
        # restarts r2), changes, and 300 events that push the restart's own events
        # out of the Engine's 256-event buffer.
        service.signal(signal.SIGSTOP)
        try:
            daemon.restart()
            daemon.docker("create", "--name", "born", BUSYBOX_REF, "true")
            daemon.docker("rm", "c1")
            churn_volumes(daemon, 150)
        finally:
            service.signal(signal.SIGCONT)
        wait_until(lambda: service.count_logs("connected to the Docker Engine") == 2, 15)
        daemon.docker("run", "--rm", "--name", "after", BUSYBOX_REF, "true")
        daemon.docker("volume", "create", "after-vol")
        recorder.catch_up()
        wait_for_truth(service, recorder)
    truth = recorder.events
    assert before_kill == []
    (gap,) = gaps(service)
    assert gap.attributes["reason"] == "reconnect"
    assert gap.attributes["from_ns"] < killed_ns < gap.attributes["until_ns"]
    assert missing(service, truth), "300 events should have pushed some out of the buffer"
    assert unaccounted(service, truth) == []
    after = [raw for raw in truth if int(raw["timeNano"]) > gap.attributes["until_ns"]]
    assert any(raw["Actor"]["Attributes"].get("name") == "after" for raw in after)
    assert missing(service, after) == []
    stored = docker_events(service)
    assert_no_duplicates(stored)
    assert_nothing_invented(stored, truth)
    observed = {
        (e.actor.name, e.attributes["change"])
        for e in service.events(EventFilter(source="docktrail", action="observed"))
        if e.attributes["reason"] == "reconnect"
    }
    assert observed == {("r1", "stopped"), ("r2", "restarted"), ("born", "appeared"),
                        ("c1", "disappeared")}  # fmt: skip
    connected = service.events(EventFilter(source="docktrail", action="connected"))
    assert len(connected) == 2
    assert connected[0].actor.id == connected[1].actor.id  # the same daemon, twice


def churn_volumes(daemon: Dockerd, count: int, prefix: str = "churn") -> None:
    with daemon.session() as api:
        for i in range(count):
            status, body = api.request("POST", "/volumes/create", {"Name": f"{prefix}-{i}"})
            assert status == 201, body
            status, body = api.request("DELETE", f"/volumes/{prefix}-{i}")
            assert status == 204, body


# ---------------------------------------------------------------------- stalls


def test_sigstop_during_a_burst_loses_nothing_silently(
    dockerd: Dockerd, service_factory: Callable[..., Service]
) -> None:
    service = service_factory(dockerd)
    with dockerd.record_events() as recorder:
        burst = threading.Thread(target=churn_volumes_fast, args=(dockerd, 1000))
        burst.start()
        wait_until(lambda: len(recorder.events) >= 200, 10)
        service.signal(signal.SIGSTOP)
        time.sleep(2)
        service.signal(signal.SIGCONT)
        burst.join(120)
        recorder.catch_up()
        service.wait_for_log(lambda r: r["message"].startswith("docktrail did not run for"))
        wait_for_truth(service, recorder)
    truth = recorder.events
    assert len(truth) >= 2000
    assert unaccounted(service, truth) == []
    stored = docker_events(service)
    assert_no_duplicates(stored)
    assert_nothing_invented(stored, truth)
    assert all(g.attributes["reason"] == "stall" for g in gaps(service))


def churn_volumes_fast(daemon: Dockerd, count: int, workers: int = 8) -> None:
    """`count` volume creates and removes (2 x count events) from `workers` threads."""
    threads = [
        threading.Thread(target=churn_volumes, args=(daemon, count // workers, f"burst{w}"))
        for w in range(workers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rest = count - workers * (count // workers)
    churn_volumes(daemon, rest, "burst-rest")


def test_rm_job_gone_before_inspect_is_recorded_as_gone(
    dockerd: Dockerd, service_factory: Callable[..., Service]
) -> None:
    service = service_factory(dockerd)
    service.signal(signal.SIGSTOP)  # docktrail sees the job's events only after it is gone
    try:
        dockerd.docker("run", "--rm", "--name", "gone-job", BUSYBOX_REF, "true")
    finally:
        service.signal(signal.SIGCONT)

    def job_events() -> list[Event]:
        return [e for e in docker_events(service) if e.actor.name == "gone-job"]

    assert wait_until(lambda: "destroy" in {e.action for e in job_events()}, 15)
    create = next(e for e in job_events() if e.action == "create")
    assert create.attributes["inspect"] == "gone"
    assert create.config == {}
    assert gaps(service) == []  # a short stall: the Engine's buffer had everything
