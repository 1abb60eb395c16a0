"""Docker CLI calls made from templates, on what a real auditd writes: two logins
(the sudo pattern and the docker group) run the same commands several times in
their sessions against the test dockerd; every call converted by one warm
converter equals its full conversion by a fresh one, and the repeats came from
templates."""

from __future__ import annotations

import subprocess
import time

from config.models import AuditdConfig
from listener.sources.auditd.convert import AuditConverter
from listener.sources.auditparse import AuditEvent, read_audit_file
from tests.dockerd import Dockerd
from tests.test_audit_cli_templates import shape
from tests.test_audit_live import (  # noqa: F401 (fixtures)
    Person,
    PrivateAuditd,
    _docker_gid,
    audit_daemon,
    engine,
    people,
)


def in_one_session(
    person: Person, dockerd: Dockerd, argv: list[str], times: int, *, own_uid: bool
) -> None:
    """`docker ARGV` `times` times in one login session of `person` (one loginuid write:
    the same audit session, as a shell's commands are)."""
    command = ["docker", *argv]
    if own_uid:
        command = [
            "setpriv",
            f"--reuid={person.uid}",
            f"--regid={person.gid}",
            f"--groups={_docker_gid()}",
            *command,
        ]
    script = (
        f"echo {person.uid} > /proc/self/loginuid && "
        f'for _ in $(seq {times}); do "$@" > /dev/null || exit 1; done'
    )
    env = dict(dockerd.env, DOCKER_CONFIG=str(person.home / ".docker"), HOME=str(person.home))
    subprocess.run(["sh", "-c", script, "_", *command], env=env, check=True, timeout=120)


def cli_events(log: AuditdConfig, wanted: int) -> list[AuditEvent]:
    """The docker CLI execve events in the log, once auditd has written `wanted` of them."""
    deadline = time.monotonic() + 20
    while True:
        found = [
            item
            for item in read_audit_file(log.log_file)
            if isinstance(item, AuditEvent)
            and "docker-cli" in item.all_keys()
            and item.first("EXECVE") is not None  # not the rule's own CONFIG_CHANGE
        ]
        if len(found) >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_real_repeated_calls_from_templates_equal_their_full_conversion(
    audit_daemon: PrivateAuditd,  # noqa: F811
    engine: Dockerd,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    alice, bob = people["dt-alice"], people["dt-bob"]
    in_one_session(alice, engine, ["ps", "-a"], 4, own_uid=False)
    in_one_session(alice, engine, ["volume", "ls"], 3, own_uid=False)
    in_one_session(bob, engine, ["ps", "-a"], 4, own_uid=True)
    config = AuditdConfig(log_file=audit_daemon.log_file, start_at="start")
    events = cli_events(config, 11)
    assert len(events) >= 11
    warm = AuditConverter(config, "h1")
    logins = set()
    for event in events:
        made = warm.convert_bounded(event)
        assert shape(made) == shape(AuditConverter(config, "h1").convert_bounded(event))
        assert made is not None and made.event is not None
        logins.add(made.event.who.login)
    assert {"dt-alice", "dt-bob"} <= logins
    # each session's calls after its second (which makes the template): 2 + 1 + 2
    assert warm.templates.hits >= 5
