"""Docker CLI calls made from templates, on what a real auditd writes: two logins
(the sudo pattern and the docker group) run the same commands several times in
their sessions against the test dockerd; every call converted by one warm
converter equals its full conversion by a fresh one, and the repeats came from
templates."""

from __future__ import annotations

import time

from config.models import AuditdConfig
from listener.sources.auditd.convert import AuditConverter
from listener.sources.auditparse import AuditEvent, read_audit_file
from tests.dockerd import Dockerd
from tests.test_audit_cli_templates import shape
from tests.test_audit_live import (  # noqa: F401 (fixtures)
    Person,
    PrivateAuditd,
    as_login,
    audit_daemon,
    engine,
    people,
)


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
    as_login(alice, engine, "ps", "-a", times=4)
    as_login(alice, engine, "volume", "ls", times=3)
    as_login(bob, engine, "ps", "-a", own_uid=True, times=4)
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
