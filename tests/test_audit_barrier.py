"""Audit barriers on a log file: what the tail takes for one of ours, what it ignores,
and what happens when barriers cannot be sent or are never seen.

The kernel's side (the USER record auditd writes for a barrier) is played by
`KernelStandIn`, which appends that record to the log file as auditd would;
tests/test_audit_barrier_live.py has the real kernel and auditd.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from config.loader import load_config
from config.models import AuditdConfig
from listener.correlate import Correlator
from listener.model.event import Event
from listener.sources.auditd import AuditLogTail
from listener.sources.auditd.barrier import MARK, AuditBarriers
from tests.shared_data import missing_component
from tests.test_auditd import append, cli_lines

REPO = Path(__file__).resolve().parents[1]
LAG_SECS = 30.0  # the wall-clock watermark alone would hold an event this long
GS = "\x1d"


def stamp(time_ns: int, serial: int) -> str:
    return f"{time_ns // 1_000_000_000}.{time_ns // 1_000_000 % 1000:03d}:{serial}"


def user_line(text: str, *, pid: int, serial: int = 900) -> str:
    """The USER record auditd writes for a message sent over NETLINK_AUDIT."""
    return (
        f"type=USER msg=audit({stamp(time.time_ns(), serial)}): pid={pid} uid=0 "
        f'auid=4294967295 ses=4294967295 msg=\'{text}\'{GS}UID="root" AUID="unset"'
    )


class KernelStandIn:
    """Plays the kernel and auditd for barriers: appends their USER record to the log."""

    def __init__(self, log: Path, *, writes: bool = True) -> None:
        self.log = log
        self.writes = writes
        self.sent: list[str] = []

    def __call__(self) -> KernelStandIn:  # the channel factory AuditBarriers takes
        return self

    def send(self, text: str) -> None:
        self.sent.append(text)
        if self.writes:
            append(self.log, [user_line(text, pid=os.getpid(), serial=900 + len(self.sent))])

    def close(self) -> None:
        return None


def config_for(log: Path, **settings: Any) -> AuditdConfig:
    defaults: dict[str, Any] = {
        "log_file": log,
        "start_at": "start",
        "passwd_file": None,
        "audit_lag_secs": LAG_SECS,
        "hold_secs": 60.0,
    }
    return AuditdConfig(**(defaults | settings))


class Tail:
    def __init__(self, tail: AuditLogTail, correlator: Correlator) -> None:
        self.tail, self.correlator = tail, correlator
        self.handed: list[Event] = []

    async def drain(self) -> None:
        async for event in self.tail:
            self.handed.append(event)


@contextlib.asynccontextmanager
async def running(
    log: Path, barriers: AuditBarriers | None, **settings: Any
) -> AsyncIterator[Tail]:
    correlator = Correlator()
    tail = AuditLogTail(config_for(log, **settings), "h1", correlator=correlator, barriers=barriers)
    live = Tail(tail, correlator)
    async with tail:
        reader = asyncio.create_task(live.drain())
        yield live
    await reader


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.log"
    path.touch()
    return path


async def test_a_barrier_read_back_releases_the_event_with_its_call(log: Path) -> None:
    kernel = KernelStandIn(log)
    barriers = AuditBarriers(kernel)
    async with running(log, barriers) as live:
        call = stamp(time.time_ns(), 100)
        argv = ["docker", "volume", "create", "v1"]
        append(log, [*cli_lines(call, argv), f"type=EOE msg=audit({call}): "])
        engine_event_ns = time.time_ns()
        # Only the barrier can move the watermark past the event (the lag is 30 s).
        assert await live.correlator.wait_for(engine_event_ns, 10.0)
        assert live.correlator.stats.calls == 1  # the call before the barrier is in
        assert len(kernel.sent) == 1 and kernel.sent[0].startswith(f"{MARK} nonce=")
        assert not barriers.outstanding
    assert [e.type for e in live.handed] == ["docker-cli"]  # the barrier line is no event
    assert all(MARK not in e.model_dump_json() for e in live.handed)
    assert MARK in log.read_text()


async def test_a_stream_of_barriers_does_not_keep_an_open_event_open(log: Path) -> None:
    """Barrier lines are ours, not activity: with one sent every few ms (a busy Engine),
    a record of someone else without EOE still counts as complete after a quiet poll."""
    kernel = KernelStandIn(log)
    async with running(log, AuditBarriers(kernel), poll_interval_secs=0.05) as live:
        pam = stamp(time.time_ns(), 50)
        append(
            log,
            [
                f"type=USER_ACCT msg=audit({pam}): pid=77 uid=0 auid=1001 ses=5 "
                'msg=\'op=PAM:accounting acct="alice" exe="/usr/bin/sudo" res=success\''
            ],
        )
        engine_event_ns = time.time_ns()

        async def busy_engine() -> None:
            while True:
                await live.correlator.wait_for(time.time_ns(), 0.005)
                await asyncio.sleep(0.003)

        busy = asyncio.create_task(busy_engine())
        try:
            assert await live.correlator.wait_for(engine_event_ns, 10.0)
        finally:
            busy.cancel()
        assert len(kernel.sent) > 3  # the stream went on meanwhile


async def test_forged_barrier_lines_do_not_move_the_watermark(log: Path) -> None:
    kernel = KernelStandIn(log, writes=False)  # sent, never written: only forgeries come
    barriers = AuditBarriers(kernel)
    async with running(log, barriers) as live:
        engine_event_ns = time.time_ns()
        assert not await live.correlator.wait_for(engine_event_ns, 0.3)
        assert kernel.sent == [f"{MARK} nonce={barriers.nonce} n=1"]
        ours, other = os.getpid(), os.getpid() + 1
        forged = [
            user_line(f"{MARK} nonce=0123456789abcdef n=1", pid=ours, serial=1),  # other nonce
            user_line(f"{MARK} nonce={barriers.nonce} n=1", pid=other, serial=2),  # other sender
            user_line(f"{MARK} nonce={barriers.nonce} n=7", pid=ours, serial=3),  # never sent
            user_line(f"x {MARK} nonce={barriers.nonce} n=1", pid=ours, serial=4),  # other text
        ]
        append(log, forged)
        assert not await live.correlator.wait_for(engine_event_ns, 0.5)
        assert barriers.outstanding
        append(log, [user_line(f"{MARK} nonce={barriers.nonce} n=1", pid=ours, serial=5)])
        assert await live.correlator.wait_for(engine_event_ns, 10.0)  # the real one does
    assert live.handed == []


async def test_barriers_never_seen_fall_back_to_the_lag_and_say_so_once(
    log: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kernel = KernelStandIn(log, writes=False)  # e.g. a `-a never,user` rule
    barriers = AuditBarriers(kernel, seen_within_secs=0.2, retry_after_secs=0.3)
    caplog.set_level(logging.WARNING)
    async with running(log, barriers, audit_lag_secs=0.3) as live:
        started = time.monotonic()
        for _ in range(3):
            assert await live.correlator.wait_for(time.time_ns(), 10.0)  # by the lag
            await asyncio.sleep(0.3)
        elapsed = time.monotonic() - started
    unseen = [r for r in caplog.records if "barriers are not seen" in r.getMessage()]
    assert len(unseen) == 1
    # One barrier per seen_within + retry_after at most: never a barrier per read.
    assert 2 <= len(kernel.sent) <= 2 + elapsed / 0.5


async def test_barrier_off_sends_nothing_and_waits_the_lag(log: Path) -> None:
    kernel = KernelStandIn(log)
    async with running(log, AuditBarriers(kernel), barrier=False) as live:
        assert live.tail.barriers is None and live.correlator.on_wait is None
        assert not await live.correlator.wait_for(time.time_ns(), 0.5)
    assert kernel.sent == []


def test_barrier_setting_from_the_environment(tmp_path: Path) -> None:
    config = load_config(None, environ={"DOCKTRAIL_AUDITD__BARRIER": "false"})
    assert config.auditd.barrier is False
    assert load_config(None, environ={}).auditd.barrier is True


_WITHOUT_CAP = """
import asyncio, logging, sys, time
from pathlib import Path
from config.models import AuditdConfig
from listener.correlate import Correlator
from listener.sources.auditd import AuditLogTail

logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
async def main() -> None:
    log = Path(sys.argv[1])
    config = AuditdConfig(log_file=log, passwd_file=None, audit_lag_secs=30, hold_secs=60)
    correlator = Correlator()
    async with AuditLogTail(config, "h1", correlator=correlator) as tail:
        print("released", await correlator.wait_for(time.time_ns(), 1.0))
        await correlator.wait_for(time.time_ns(), 0.2)
        print("unavailable", tail.barriers.unavailable)
asyncio.run(main())
"""


def test_without_cap_audit_write_the_lag_holds_as_before(log: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        missing_component("dropping CAP_AUDIT_WRITE needs root and setpriv (util-linux)")
    drop = ["setpriv", "--bounding-set=-audit_write", "--inh-caps=-audit_write"]
    result = subprocess.run(
        [*drop, sys.executable, "-c", _WITHOUT_CAP, str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "released False" in lines  # held as without barriers (the lag is 30 s)
    assert "unavailable [Errno 1] Operation not permitted" in lines
    assert sum("cannot send audit barriers" in line for line in lines) == 1
