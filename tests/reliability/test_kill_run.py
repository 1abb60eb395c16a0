"""kill -9 of `docktrail run` at random points while its audit log grows.

`run` follows an audit log that a writer thread keeps appending docker CLI
calls to (no Docker daemon: the Engine source just retries). After every kill
the events already stored must all still be there, none twice, and verify
must pass; a last run drains the log and stops on SIGTERM: every call written
is stored exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.reliability.harness import (
    KILLS,
    REPO,
    check_after_crash,
    docktrail,
    kill_at_random,
    recoveries,
    rng,
    stored_ids,
)

GROUP = (Path(__file__).parent / "cli_call.audit").read_text()  # one `docker import` execve
GROUP_KEY = "audit(1795346502.569:15428)"
CALLS_PER_TICK, TICK_SECS = 4, 0.01


class AuditWriter(threading.Thread):
    """Appends one docker CLI call after another to the audit log, like auditd."""

    def __init__(self, log: Path) -> None:
        super().__init__(daemon=True)
        self.log = log
        self.written = 0
        self.halt = threading.Event()

    def run(self) -> None:
        with self.log.open("a") as out:
            while not self.halt.is_set():
                for _ in range(CALLS_PER_TICK):
                    out.write(self._call(self.written))
                    self.written += 1
                out.flush()
                time.sleep(TICK_SECS)

    @staticmethod
    def _call(n: int) -> str:
        stamp = f"audit({1795346502 + n // 1000}.{n % 1000:03d}:{20_000 + n})"
        return GROUP.replace(GROUP_KEY, stamp).replace(
            'a3="registry.internal/base/busybox:1.36"', f'a3="registry.internal/base/app:{n}"'
        )


def test_kill_9_run_at_random_points(tmp_path: Path) -> None:
    chance = rng("run")
    db, key, log = tmp_path / "trail.db", tmp_path / "trail.key", tmp_path / "audit.log"
    witness, config = tmp_path / "witness.jsonl", tmp_path / "docktrail.yaml"
    config.write_text(
        f"trail:\n  path: {db}\n  witness_path: {witness}\n  checkpoint_interval_secs: 0.3\n"
        f"docker:\n  host: unix://{tmp_path / 'no-docker.sock'}\n"
        f"auditd:\n  log_file: {log}\n  start_at: start\n  event_timeout_secs: 0.2\n"
    )
    log.touch()
    writer = AuditWriter(log)
    writer.start()
    killed, rounds, acknowledged = 0, 0, set[str]()
    try:
        while killed < KILLS:
            killed += kill_at_random(docktrail(config, "run"), chance, 0.5, 1.4)
            rounds += 1
            acknowledged = check_after_crash(db, key, witness, acknowledged, "auditd")
    finally:
        writer.halt.set()
        writer.join()
    drain(config, db, writer.written)
    final = stored_ids(db, "auditd")
    assert len(final) == len(set(final)) == writer.written  # 0 lost, 0 duplicated
    verify = subprocess.run(
        docktrail(config, "verify", "--witness", str(witness)),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert verify.returncode == 0, verify.stderr
    print(
        f"run: {killed} kill -9 survived in {rounds} rounds; {writer.written} events checked; "
        f"{recoveries(db)} unsealed tails sealed (trail-recovered); verify intact after every kill"
    )


def drain(config: Path, db: Path, expected: int) -> None:
    """One last run until every written call is stored, then SIGTERM: exit 0."""
    child = subprocess.Popen(
        docktrail(config, "run"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 60
        while len(stored_ids(db, "auditd")) < expected and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=30)
    assert child.returncode == 0, err.decode()
