"""`make demo`: docktrail on a private Docker daemon, start to finish, in about a minute.

It starts a private dockerd (temporary socket and data root: your own Docker is
not touched), a local webhook that prints every alert it receives, and
`docktrail run` recording into a temporary trail. A short scenario follows: a
hardened deploy, a privileged run, an untrusted image, an exec, a burst of
short-lived containers. Then the trail is shown (alerts, a timeline, verify)
and everything is torn down, also on Ctrl-C.

Needs root (dockerd), docker.io and busybox-static. `--no-wait` skips the
pause before tear-down (used by the test).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dockerd import BUSYBOX_REF, Dockerd, unavailable_reason  # noqa: E402
from tests.notify_servers import WebhookServer  # noqa: E402

UNTRUSTED_REF = "docker.io/cryptominer/xmrig:latest"
BURST = 12


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def config_text(work: Path, daemon: Dockerd, hook: WebhookServer) -> str:
    return f"""\
host: demo-host
trail:
  path: {work}/docktrail.db
  flush_interval_secs: 0.02
  checkpoint_interval_secs: 5
docker:
  host: {daemon.host}
auditd:
  enabled: false          # the demo has no auditd: alerts say who is unknown
rules:
  untrusted-image:
    trusted: ["registry.internal/base/*"]
  container-churn:
    threshold: {BURST - 2}
    window_secs: 60
    baseline: fixed
notifications:
  group_window_secs: 0
  destinations:
    - name: demo-webhook
      url: {hook.json_url()}
      min_severity: low
metrics:
  enabled: true
  port: 0
"""


class AlertPrinter:
    """Prints each message the webhook receives, as it arrives."""

    def __init__(self, hook: WebhookServer) -> None:
        self._hook = hook
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.printed = 0

    def __enter__(self) -> AlertPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for message in self._hook.received[self.printed :]:
                body = message.json if isinstance(message.json, dict) else {}
                title = body.get("title") or message.body[:120].decode(errors="replace")
                print(f"   \033[33m[webhook]\033[0m {title}", flush=True)
                self.printed += 1


def wait_for_quiet(printer: AlertPrinter, quiet_secs: float = 2.0, most_secs: float = 30) -> None:
    """Until no new message arrived for `quiet_secs` (the churn alert comes last)."""
    deadline = time.monotonic() + most_secs
    seen, since = printer.printed, time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if printer.printed != seen:
            seen, since = printer.printed, time.monotonic()
        elif seen and time.monotonic() - since >= quiet_secs:
            return


def docktrail(config: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "listener", "-c", str(config), *args],
        capture_output=True,
        text=True,
        cwd=config.parent,
    )
    return result.stdout + result.stderr


@contextlib.contextmanager
def service(config: Path) -> Iterator[dict[str, object]]:
    """`docktrail run` until the block ends; yields its start-up facts (metrics port)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "listener", "-c", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=config.parent,
    )
    facts: dict[str, object] = {}
    try:
        assert process.stderr is not None
        for line in process.stderr:
            record = json.loads(line) if line.startswith("{") else {"message": line}
            if record.get("message") == "serving /metrics and /healthz":
                facts["metrics"] = f"http://127.0.0.1:{record['port']}/metrics"
            if record.get("message") == "connected to the Docker Engine":
                break
        threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]
        yield facts
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def scenario(daemon: Dockerd) -> None:
    def docker(*args: str) -> None:
        print(f"   $ docker {' '.join(args)}", flush=True)
        daemon.docker(*args)
        time.sleep(0.3)  # the webhook lines appear beside the command that caused them

    say("1. a hardened deploy: read-only, non-root, limits, no capabilities (no alert)")
    docker("run", "--detach", "--name", "web", "--read-only", "--user", "1000",
           "--memory", "64m", "--pids-limit", "64", "--cap-drop", "ALL",
           "--label", "audit.why=demo web server", BUSYBOX_REF, "sleep", "300")  # fmt: skip
    say("2. a privileged container (created, not started: some hosts refuse to start one)")
    docker("create", "--name", "debug", "--privileged", BUSYBOX_REF, "true")
    docker("rm", "debug")
    say("3. an image from outside the trusted registry")
    docker("tag", BUSYBOX_REF, UNTRUSTED_REF)
    docker("run", "--rm", "--name", "miner", "--user", "1000", "--read-only", "--memory", "32m",
           "--pids-limit", "16", UNTRUSTED_REF, "true")  # fmt: skip
    say("4. an exec into the running container")
    docker("exec", "web", "id")
    say(f"5. a burst: {BURST} short-lived containers in a few seconds")
    for i in range(BURST):
        daemon.docker("run", "--rm", "--name", f"job{i}", "--user", "1000", "--read-only",
                      "--memory", "32m", "--pids-limit", "16", BUSYBOX_REF, "true")  # fmt: skip
    print(f"   $ docker run --rm ... (x{BURST})", flush=True)


def explorer_hook(config: Path, wait: bool) -> None:
    """The web explorer (`docktrail serve`) on the demo's trail, until Enter or Ctrl-C."""
    say("explorer: http://127.0.0.1:8001/-/timeline (docktrail serve; Enter or Ctrl-C stops it)")
    process = subprocess.Popen([sys.executable, "-m", "listener", "-c", str(config), "serve"],
                               cwd=config.parent)  # fmt: skip
    try:
        if wait:
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input()
    finally:
        process.terminate()
        process.wait(10)


def show_trail(config: Path) -> None:
    say("the trail: docktrail alerts")
    print(docktrail(config, "alerts"))
    say("one container's life: docktrail timeline web")
    print(docktrail(config, "timeline", "web"))
    say("tamper evidence: docktrail verify")
    print(docktrail(config, "verify"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wait", action="store_true", help="no pause before tear-down")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason is not None:
        print(f"make demo: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="docktrail-demo-"))
    os.chmod(work, 0o700)
    daemon = Dockerd()
    hook = WebhookServer()
    try:
        say(f"starting a private dockerd ({daemon.host}) and a local webhook")
        daemon.start()
        daemon.import_busybox(BUSYBOX_REF)
        hook.start()
        config = work / "docktrail.yaml"
        config.write_text(config_text(work, daemon, hook))
        with AlertPrinter(hook) as printer, service(config) as facts:
            say(f"docktrail run is recording (metrics: {facts.get('metrics', 'off')})")
            scenario(daemon)
            wait_for_quiet(printer)
        show_trail(config)
        explorer_hook(config, wait=not args.no_wait)
        if not args.no_wait and sys.stdin.isatty():
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input("\nPress Enter to tear everything down. ")
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        say("tearing down: docktrail, webhook, dockerd, temporary files")
        hook.stop()
        daemon.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
