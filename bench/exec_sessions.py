"""Benchmark: exec sessions — commands/s docktrail follows, and what the exec audit rules cost.

Usage: python bench/exec_sessions.py [--commands N] [--repeat N] [--no-live]

1. Following (no root needed): an audit log written as auditd writes it, with
   sessions of `--commands` commands in all (execve + exit_group each, a fork
   every fifth) among as many records of host processes that tie to nothing.
   Baseline: reading it as `docktrail` does without exec sessions (parse,
   assemble, convert); measured: the same plus the session tracker turning the
   records into `exec-command` events. Both in the same run, alternately.
2. The rules' cost (root, dockerd, auditd; the test suite's private daemons): a
   container runs a shell loop (`cat /dev/null` N times: fork + execve each)
   with only docktrail.rules' CLI rule loaded (baseline), then with
   docktrail-exec.rules added; alternately, `--repeat` times each. Reported:
   the loop's commands/s, auditd's CPU per 1000 commands, audit records per
   command, and that every command of the loop was followed.

Every figure is printed as `FIGURE name value unit baseline=… ratio=…`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config.models import DocktrailConfig  # noqa: E402
from listener.sessions import SessionInfo  # noqa: E402
from listener.sessions.service import ExecSessions  # noqa: E402
from listener.sources.auditd import AuditConverter, AuditLogFiles  # noqa: E402
from tests.exec_audit_log import AuditLog  # noqa: E402

SHIM = 300


def figure(name: str, value: float, unit: str, baseline: float) -> None:
    ratio = value / baseline
    print(f"FIGURE {name} {value:.4g} {unit} baseline={baseline:.4g} ratio={ratio:.3f}")


# ---------------------------------------------------------------------------- following


def synthetic_log(path: Path, commands: int, per_session: int = 50) -> list[tuple[str, int]]:
    """The log, and each exec's id and start time (what its Engine event says)."""
    log = AuditLog()
    exec_ids = []
    pid, at = 10_000, 0.0
    for session in range(commands // per_session):
        exec_id = f"{session:064x}"
        exec_ids.append((exec_id, round((log.start + at) * 1e9)))
        runc, shell = pid, pid + 2
        log.runc_exec(at, runc, SHIM, exec_id, "c" * 64)
        log.runc_init(at, runc + 1, runc)
        log.execve(at, shell, runc, ["sh"])
        pid += 3
        for n in range(per_session - 1):
            at += 0.001
            if n % 5 == 0:
                log.fork(at, pid, shell)
            log.execve(at, pid, shell, ["cat", f"/etc/file-{n}"])
            log.exit(at, pid, shell)
            log.execve(at, 900_000 + pid, 1, ["/usr/bin/env", "true"], exe="/usr/bin/env")
            pid += 1
        log.exit(at, shell, SHIM)
    log.write(path)
    return exec_ids


def read(path: Path, track: bool, exec_ids: list[tuple[str, int]]) -> tuple[float, int]:
    config = DocktrailConfig()
    converter = AuditConverter(config.auditd, "bench", limits=config.input)
    sessions = ExecSessions(config.exec_sessions, "bench") if track else None
    started = time.perf_counter()
    if sessions is not None:
        for exec_id, time_ns in exec_ids:  # the Engine's word on each exec, before its records
            sessions.tracker.open(
                SessionInfo(exec_id=exec_id, container=_actor(), host="bench", time_ns=time_ns)
            )
    events = records = 0
    for item in AuditLogFiles([path], converter, window_secs=2, max_line=1 << 20):
        if item.process is not None:
            records += 1
            if sessions is not None:
                sessions.add(item.process)
                if records % 500 == 0:  # as ingest does at each Engine event
                    events += len(sessions.due(item.process.time_ns))
    if sessions is not None:
        events += len(sessions.flush())
    elapsed = time.perf_counter() - started
    return elapsed, events if track else records


def _actor():  # type: ignore[no-untyped-def]
    from listener.model.event import Actor

    return Actor(id="c" * 64, name="bench")


def bench_following(commands: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.log"
        exec_ids = synthetic_log(path, commands)
        plain, tracked = [], []
        followed = 0
        for _ in range(repeat):
            plain.append(read(path, False, exec_ids)[0])
            elapsed, followed = read(path, True, exec_ids)
            tracked.append(elapsed)
        base, ours = statistics.median(plain), statistics.median(tracked)
        print(f"# {followed} commands followed of {commands}; log {path.stat().st_size >> 10} KiB")
        figure("exec_sessions.follow_rate", followed / ours, "commands/s", followed / base)


# ---------------------------------------------------------------------------- the rules


def bench_rules(loop: int, repeat: int) -> None:
    from tests.dockerd import BUSYBOX_REF, Dockerd, unavailable_reason
    from tests.shared_data import machine_lock
    from tests.test_audit_live import PrivateAuditd, _auditd_unavailable

    with machine_lock("live-audit"):  # the kernel's one audit daemon: take turns
        reason = _auditd_unavailable() or unavailable_reason()
        if reason is not None:
            print(f"# the rules' cost not measured: {reason}")
            return
        audit = PrivateAuditd()
        audit.start()
        try:
            with Dockerd() as dockerd:
                dockerd.import_busybox()
                dockerd.docker("run", "-d", "--name", "loop", BUSYBOX_REF, "sleep", "3600")
                runs: dict[bool, list[tuple[float, float, int, int]]] = {False: [], True: []}
                for _ in range(repeat):
                    for with_rules in (False, True):
                        runs[with_rules].append(_loop_once(dockerd, audit, loop, with_rules))
        finally:
            audit.stop()
    _report_rules(runs, loop)


def _loop_once(dockerd, audit, loop: int, with_rules: bool):  # type: ignore[no-untyped-def]
    from tests.test_exec_sessions_live import exec_rule_lines

    loaded = []
    if with_rules:
        for words in exec_rule_lines():
            subprocess.run(["auditctl", *words], check=True, capture_output=True)
            loaded.append(words)
    try:
        offset = audit.log_file.stat().st_size
        cpu_before = _cpu_secs(audit.process.pid)
        script = f"i=0; while [ $i -lt {loop} ]; do cat /dev/null; i=$((i+1)); done"
        started = time.perf_counter()
        dockerd.docker("exec", "loop", "sh", "-c", script)
        elapsed = time.perf_counter() - started
        time.sleep(1.0)  # auditd writes what is queued
        cpu = _cpu_secs(audit.process.pid) - cpu_before
    finally:
        for words in reversed(loaded):
            subprocess.run(["auditctl", "-d", *words[1:]], capture_output=True)
    with audit.log_file.open("rb") as handle:
        handle.seek(offset)
        tail = handle.read()
    records = tail.count(b'key="docker-exec"')
    followed = _followed(tail) if with_rules else 0
    return elapsed, cpu, records, followed


def _followed(text: bytes) -> int:
    with tempfile.NamedTemporaryFile(suffix=".log") as handle:
        handle.write(text)
        handle.flush()
        config = DocktrailConfig()
        converter = AuditConverter(config.auditd, "bench", limits=config.input)
        sessions = ExecSessions(config.exec_sessions.model_copy(
            update={"max_commands_per_session": 1_000_000}), "bench")  # fmt: skip
        for item in AuditLogFiles([Path(handle.name)], converter, window_secs=2):
            if item.process is not None:
                sessions.add(item.process)
        events = sessions.flush()
    return sum(1 for e in events if e.attributes.get("argv") == ["cat", "/dev/null"])


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _report_rules(runs, loop: int) -> None:  # type: ignore[no-untyped-def]
    def median(with_rules: bool, index: int) -> float:
        return statistics.median(run[index] for run in runs[with_rules])

    base_rate, rate = loop / median(False, 0), loop / median(True, 0)
    figure("exec_rules.loop_rate", rate, "commands/s", base_rate)
    base_cpu, cpu = median(False, 1) * 1e6 / loop, median(True, 1) * 1e6 / loop
    print(f"# auditd CPU: {cpu:.0f} ms per 1000 commands with the rules, {base_cpu:.0f} without")
    # The loop's wall time (one CPU-bound shell) plus auditd's CPU: the host's cost.
    base_total = (median(False, 0) + median(False, 1)) * 1e6 / loop
    total = (median(True, 0) + median(True, 1)) * 1e6 / loop
    figure("exec_rules.cost_per_1000_commands", total, "ms", base_total)
    print(f"# audit records per command of the loop: {median(True, 2) / loop:.2f}")
    figure("exec_rules.followed_share", median(True, 3) / loop, "of-loop", 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=20_000)
    parser.add_argument("--loop", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args()
    bench_following(args.commands, args.repeat)
    if not args.no_live:
        bench_rules(args.loop, args.repeat)


if __name__ == "__main__":
    main()
