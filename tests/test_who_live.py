"""Who, on the paths people really take (issue 24), live: `docktrail run` (a real
process, auditd enabled, rules on) follows the session dockerd while real logins,
seen by the private auditd of `tests.test_audit_live`, act:

* a docker-compose v1 project (Debian's Python script) brought up and down;
* a run the Engine refuses (no command) by one login, then the one that works by
  another, with the same `--name`;
* a container started through the raw Engine API (curl on the socket);
* `docker import FILE REF`: the CLI event is named by the reference.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests import test_audit_live
from tests.dockerd import BUSYBOX_REF, Dockerd, busybox_rootfs_tar, wait_until
from tests.shared_data import missing_component
from tests.test_audit_live import Person, PrivateAuditd, as_login
from tests.test_run_scenario_live import ScenarioService, started

# test_audit_live's module-scoped fixtures under their names (see test_run_scenario_live).
audit_daemon = test_audit_live.audit_daemon
engine = test_audit_live.engine
people = test_audit_live.people

NO_COMMAND_IMAGE = "registry.internal/base/nocmd:1"  # an image with no CMD: `run` needs one
PROJECT = "dtshop"
COMPOSE_FILE = f"""\
version: "2.4"
services:
  web:
    image: {BUSYBOX_REF}
    command: sleep 300
  worker:
    image: {BUSYBOX_REF}
    command: sleep 300
"""
Json = dict[str, Any]


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, audit_daemon: PrivateAuditd, engine: Dockerd
) -> Iterator[ScenarioService]:
    yield from started(
        ScenarioService(tmp_path_factory.mktemp("who-live"), engine, audit_daemon.log_file)
    )


@pytest.fixture(scope="module")
def no_command_image(engine: Dockerd) -> Iterator[str]:
    engine.docker("import", "-", NO_COMMAND_IMAGE, input=busybox_rootfs_tar())
    yield NO_COMMAND_IMAGE
    engine.docker("rmi", NO_COMMAND_IMAGE, check=False)


def docker_events(service: ScenarioService, **where: str) -> list[Any]:
    with SQLiteTrail(service.trail_path) as trail:
        return list(trail.query(EventFilter(**where)))  # type: ignore[arg-type]


def as_login_in(person: Person, daemon: Dockerd, cwd: Path, *argv: str) -> None:
    """A program (not the docker CLI) with the person's login uid, in `cwd` (sudo pattern)."""
    env = dict(daemon.env, HOME=str(person.home))
    script = f'echo {person.uid} > /proc/self/loginuid && cd "$0" && exec "$@"'
    result = subprocess.run(
        ["sh", "-c", script, str(cwd), *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def alerts(service: ScenarioService, rule: str) -> list[Json]:
    return service.json_lines("alerts", "-f", f"rule={rule}")


# ------------------------------------------------------------------------- compose v1


def _ours(event: Any) -> bool:
    labels = event.attributes.get("labels")
    project = labels.get("com.docker.compose.project") if isinstance(labels, dict) else None
    name = event.actor.name or ""
    return project == PROJECT or name.startswith(f"{PROJECT}_")


def test_compose_v1_up_and_down_by_one_login_is_attributed_to_it(
    service: ScenarioService, engine: Dockerd, people: dict[str, Person]
) -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        missing_component("docker-compose is not installed (Debian: docker-compose)")
    alice = people["dt-alice"]
    project = alice.home / PROJECT
    project.mkdir(exist_ok=True)
    (project / "docker-compose.yml").write_text(COMPOSE_FILE)
    as_login_in(alice, engine, project, "docker-compose", "up", "-d")
    as_login_in(alice, engine, project, "docker-compose", "down", "-t", "1")

    def ours() -> list[Any]:
        return [e for e in docker_events(service, source="docker") if _ours(e)]

    def settled() -> bool:
        kinds = {(e.type, e.action) for e in ours()}
        return {("container", "destroy"), ("network", "destroy")} <= kinds

    assert wait_until(settled, 20), service.log_text()
    time.sleep(1.5)  # the last events' attribution and rules
    events = ours()
    actions = {(e.type, e.action) for e in events}
    assert {("container", "create"), ("container", "start"), ("network", "create"),
            ("container", "stop")} <= actions  # fmt: skip
    assert len(events) >= 15
    for event in events:
        who = event.who
        assert (who.login, who.method) == (alice.name, "auditd-cli"), event
        assert who.confidence in ("high", "medium") and who.matched_by, event
    assert "docker-compose" in (events[0].who.command or "")
    flagged = [a for a in alerts(service, "unattributed-change") if a["container"] in
               {e.actor.name for e in events}]  # fmt: skip
    assert flagged == []


# ------------------------------------------------------------------------------ races


@pytest.mark.usefixtures("no_command_image")
def test_a_refused_run_does_not_take_the_container_from_the_run_that_worked(
    service: ScenarioService, engine: Dockerd, people: dict[str, Person]
) -> None:
    alice, bob = people["dt-alice"], people["dt-bob"]
    refused = subprocess.run(
        ["sh", "-c", f'echo {bob.uid} > /proc/self/loginuid && exec "$@"', "_",
         "docker", "run", "-d", "--name", "x1", NO_COMMAND_IMAGE],
        env=engine.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0 and "no command" in refused.stderr.lower(), refused.stderr
    time.sleep(3)
    as_login(alice, engine, "run", "-d", "--name", "x1", NO_COMMAND_IMAGE, "sleep", "300")

    def of_x1(action: str) -> list[Any]:
        return [e for e in docker_events(service, source="docker", action=action)
                if e.actor.name == "x1"]  # fmt: skip

    try:
        assert wait_until(lambda: bool(of_x1("create") and of_x1("start")), 10)
        for event in (*of_x1("create"), *of_x1("start")):
            assert (event.who.login, event.who.method) == (alice.name, "auditd-cli"), event
            assert event.who.candidates is None
        (create,) = of_x1("create")
        assert create.who.confidence == "high"
    finally:
        engine.docker("rm", "-f", "x1", check=False)


@pytest.mark.usefixtures("no_command_image")
def test_a_refused_create_of_the_same_login_is_not_the_evidence(
    service: ScenarioService, engine: Dockerd, people: dict[str, Person]
) -> None:
    """The issue's refused `container create` 14 s before the one that worked: any gap
    inside the long window shows it (the first call was taken, being the first)."""
    alice = people["dt-alice"]
    script = f'echo {alice.uid} > /proc/self/loginuid && exec "$@"'
    refused = subprocess.run(
        ["sh", "-c", script, "_", "docker", "container", "create", "--name", "late1",
         "--memory", "64m", NO_COMMAND_IMAGE],
        env=engine.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0, refused.stderr
    time.sleep(4)
    as_login(alice, engine, "container", "create", "--name", "late1", "--memory", "64m",
             NO_COMMAND_IMAGE, "echo", "hi")  # fmt: skip

    def found() -> tuple[list[Any], list[Any]]:
        creates = [e for e in docker_events(service, source="docker", action="create")
                   if e.actor.name == "late1"]  # fmt: skip
        calls = [e for e in docker_events(service, source="auditd", type="docker-cli")
                 if e.actor.name == "late1" and e.who.login == alice.name]  # fmt: skip
        return creates, calls

    try:
        assert wait_until(lambda: len(found()[0]) == 1 and len(found()[1]) == 2, 10)
        (create,), calls = found()
        worked = max(calls, key=lambda e: e.time_ns)
        assert create.who.audit_id == worked.who.audit_id, (create.who, worked.who)
        assert create.who.confidence == "high"
    finally:
        engine.docker("rm", "-f", "late1", check=False)


def test_two_unnamed_runs_at_once_with_different_commands(
    service: ScenarioService, engine: Dockerd, people: dict[str, Person]
) -> None:
    alice, bob = people["dt-alice"], people["dt-bob"]
    cidfiles = {person.name: person.home / "pair.cid" for person in (alice, bob)}

    def run(person: Person, word: str) -> None:
        as_login(person, engine, "run", "--rm", "--cidfile", str(cidfiles[person.name]),
                 BUSYBOX_REF, "echo", word, own_uid=person is bob)  # fmt: skip

    threads = [threading.Thread(target=run, args=(alice, "one")),
               threading.Thread(target=run, args=(bob, "two"))]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    owners = {path.read_text().strip(): login for login, path in cidfiles.items()}
    for path in cidfiles.values():
        path.unlink()

    def ours(action: str) -> list[Any]:
        found = docker_events(service, source="docker", type="container", action=action)
        return [e for e in found if e.actor.id in owners]

    assert wait_until(lambda: len(ours("create")) == 2 and len(ours("destroy")) == 2, 10)
    for action in ("create", "start", "destroy"):
        for event in ours(action):
            assert (event.who.login, action) == (owners[event.actor.id], action), event.who


# ------------------------------------------------------------------------ raw API


def test_a_raw_api_start_is_flagged(
    service: ScenarioService, engine: Dockerd, people: dict[str, Person]
) -> None:
    alice, bob = people["dt-alice"], people["dt-bob"]
    as_login(alice, engine, "create", "--name", "raw1", BUSYBOX_REF, "sleep", "300")
    curl = [
        "setpriv", f"--reuid={bob.uid}", f"--regid={bob.gid}",
        f"--groups={os.stat(engine.socket_path).st_gid}",
        "curl", "-sf", "--unix-socket", str(engine.socket_path), "-X", "POST",
        "http://localhost/containers/raw1/start",
    ]  # fmt: skip
    script = f'echo {bob.uid} > /proc/self/loginuid && exec "$@"'
    subprocess.run(["sh", "-c", script, "_", *curl], check=True, timeout=30)

    def flagged() -> list[Json]:
        return [a for a in alerts(service, "unattributed-change") if a["container"] == "raw1"]

    try:
        assert wait_until(lambda: bool(flagged()), 10), [
            (e.action, e.actor.name, e.who.method, e.who.login, e.who.matched_by)
            for e in docker_events(service, source="docker")
            if e.actor.name == "raw1"
        ] + alerts(service, "unattributed-change")
        (alert,) = flagged()
        assert alert["details"]["action"] == "start"
        (start,) = [e for e in docker_events(service, source="docker", action="start")
                    if e.actor.name == "raw1"]  # fmt: skip
        assert start.who.method == "unknown"
        (create,) = [e for e in docker_events(service, source="docker", action="create")
                     if e.actor.name == "raw1"]  # fmt: skip
        assert create.who.login == alice.name  # the CLI part stays attributed
    finally:
        engine.docker("rm", "-f", "raw1", check=False)


# ------------------------------------------------------------------------- import


def test_the_import_cli_event_is_named_by_its_reference(
    service: ScenarioService, engine: Dockerd, people: dict[str, Person]
) -> None:
    bob = people["dt-bob"]
    rootfs = bob.home / "import.tar"
    rootfs.write_bytes(busybox_rootfs_tar())
    os.chown(rootfs, bob.uid, bob.gid)
    reference = "registry.internal/who/imported:7"
    as_login(bob, engine, "import", str(rootfs), reference, own_uid=True)

    def imports() -> list[Any]:  # other imports on this host are audited too
        calls = docker_events(service, source="auditd", type="docker-cli", action="import")
        return [e for e in calls if e.who.login == bob.name]

    try:
        assert wait_until(lambda: bool(imports()), 10)
        (event,) = imports()
        assert (event.actor.name, event.who.login) == (reference, bob.name)
    finally:
        engine.docker("rmi", reference, check=False)
