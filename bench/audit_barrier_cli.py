"""Benchmark: docker CLI call → its Engine event attributed and committed, with and
without audit barriers.

Usage: python bench/audit_barrier_cli.py [--calls N] [--rounds N]   (as root)

Starts a private dockerd and a private auditd with the docker CLI rule (as
tests/test_audit_live.py does, under its machine-wide "live-audit" lock) and a
test login, and wires what `docktrail run` wires for attribution (audit tail,
correlator, Attribution stage, pipeline). Each round runs `--calls` sequential
`docker volume create` calls by the login (the sudo pattern) with
``auditd.barrier: false`` (the baseline: the wait of ``audit_lag_secs`` plus a
poll), then as many with barriers; each volume create must be attributed to
the login. Prints p50/p99/max of the delay from the Engine event's time to its
commit, per mode, and the ratio barrier / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from config.models import AuditdConfig  # noqa: E402
from listener.model.event import Event  # noqa: E402
from tests.dockerd import Dockerd, unavailable_reason  # noqa: E402
from tests.shared_data import machine_lock  # noqa: E402
from tests.test_audit_live import (  # noqa: E402
    LiveService,
    Person,
    PrivateAuditd,
    TimedTrail,
    _auditd_unavailable,
    _await,
    _people,
    as_login,
    docker_events,
)

MS = 1e6


async def delays(
    log: Path, dockerd: Dockerd, person: Person, barrier: bool, calls: int
) -> list[float]:
    config = AuditdConfig(log_file=log, start_at="end", barrier=barrier)
    found: list[float] = []
    async with LiveService(config, dockerd, TimedTrail()) as live:
        for index in range(calls):
            found.append(await one_call(live, person, f"bench-barrier-{barrier}-{index}"))
    return found


async def one_call(live: LiveService, person: Person, name: str) -> float:
    """The delay of the volume create `name` made by `person`; it must be attributed."""
    dockerd = live.dockerd
    await asyncio.to_thread(as_login, person, dockerd, "volume", "create", name)

    def made() -> list[Event]:
        return docker_events(live.trail, name=name, action="create")

    if not await _await(lambda: bool(made()), 10):
        raise SystemExit(f"{name}: its Engine event was not stored")
    (event,) = made()
    if event.who.login != person.name:
        raise SystemExit(f"{name}: attributed to {event.who.login!r}")
    await asyncio.to_thread(as_login, person, dockerd, "volume", "rm", name)
    await asyncio.sleep(0.1)  # the removal's events are out of the way
    return (live.trail.stored_at[event.id] - event.time_ns) / MS


def report(mode: str, values: list[float], baseline: float | None) -> float:
    values = sorted(values)
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
    p50 = statistics.median(values)
    print(f"{mode:9} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {values[-1]:6.1f} ms", end="")
    print(f"  ({len(values)} calls)")
    ratio = None if baseline is None else p99 / baseline
    figure(
        f"audit_barrier_cli.{mode}.p99", p99, "ms", baseline=baseline, ratio=ratio, target="<100"
    )
    figure(f"audit_barrier_cli.{mode}.p50", p50, "ms")
    return p99


async def bench(log: Path, dockerd: Dockerd, person: Person, args: argparse.Namespace) -> None:
    measured: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for barrier in (False, True):
            measured[barrier] += await delays(log, dockerd, person, barrier, args.calls)
    baseline = report("lag", measured[False], None)
    report("barrier", measured[True], baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=15, help="CLI calls per mode and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds (modes alternate)")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot start a private dockerd: {reason}")
    with machine_lock("live-audit"), Dockerd() as dockerd:
        reason = _auditd_unavailable()  # under the lock: another run's auditd is gone
        if reason is not None:
            sys.exit(f"cannot start a private auditd: {reason}")
        dockerd.import_busybox()
        daemon = PrivateAuditd()
        daemon.start()
        try:
            for people in _people():
                asyncio.run(bench(daemon.log_file, dockerd, people["dt-alice"], args))
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
