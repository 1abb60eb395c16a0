"""Audit barriers with the real kernel audit queue and auditd: a docker CLI call is
attributed and its Engine event written long before `auditd.audit_lag_secs` would let
it, and the barrier lines stay docktrail's own (in the audit log, never in the trail).

Reuses tests/test_audit_live.py's private auditd, test users and Engine (they hold
the machine-wide "live-audit" lock).
"""

from __future__ import annotations

import asyncio

from config.models import AuditdConfig
from listener.sources.auditd.barrier import MARK
from tests.dockerd import Dockerd
from tests.test_audit_live import (  # noqa: F401  (fixtures)
    LiveService,
    Person,
    PrivateAuditd,
    TimedTrail,
    _await,
    as_login,
    audit_daemon,
    docker_events,
    engine,
    people,
)


async def test_cli_calls_attributed_and_written_long_before_the_lag(
    audit_daemon: PrivateAuditd,  # noqa: F811
    engine: Dockerd,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    # The wall-clock watermark alone would hold each Engine event 30 s.
    config = AuditdConfig(
        log_file=audit_daemon.log_file, start_at="end", audit_lag_secs=30.0, hold_secs=60.0
    )
    alice, bob = people["dt-alice"], people["dt-bob"]
    volumes = {"barrier-a": alice, "barrier-b": bob}
    async with LiveService(config, engine, TimedTrail()) as live:
        await asyncio.gather(
            asyncio.to_thread(as_login, alice, engine, "volume", "create", "barrier-a"),
            asyncio.to_thread(as_login, bob, engine, "volume", "create", "barrier-b", own_uid=True),
        )

        def created() -> bool:
            return all(docker_events(live.trail, name=n, action="create") for n in volumes)

        assert await _await(created, 10), [e.actor.name for e in live.trail.events()]
        for name, person in volumes.items():
            (event,) = docker_events(live.trail, name=name, action="create")
            assert (event.who.login, event.who.method) == (person.name, "auditd-cli"), event
        assert live.tail.barriers is not None and live.tail.barriers.unavailable is None
        nonce = live.tail.barriers.nonce
        await asyncio.to_thread(as_login, alice, engine, "volume", "rm", *volumes)
        assert await _await(lambda: len(docker_events(live.trail, action="destroy")) >= 2, 10)
    assert f"{MARK} nonce={nonce} n=" in audit_daemon.log_file.read_text(errors="replace")
    assert all(MARK not in e.model_dump_json() for e in live.trail.events())
