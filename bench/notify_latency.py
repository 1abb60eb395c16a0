"""Benchmark: Docker event to webhook received, through the whole service.

Usage: python bench/notify_latency.py [--containers N] [--interval-ms MS]

Starts a private dockerd (tests/dockerd.py: needs root, dockerd, containerd and
a static busybox) and a local HTTP server that notes when each request
arrives. In-process it wires what `docktrail run` wires: the live Docker
source, the pipeline into the SQLite trail (durability full), the rules with
the outbox routing, and the delivery worker with the real apprise `json://`
channel. Dedup and grouping are off, so every alert is its own message.

It then creates `--containers` privileged busybox containers, one every
`--interval-ms`, each of which fires `privileged-container` (critical) on its
create event. For each alert it measures:

* baseline: the Engine event's `timeNano` to the commit of the event in the
  trail (what storing alone costs, measured in the same run);
* notified: the same `timeNano` to the webhook server receiving the message.

It prints p50/p99/max of both and their ratio. Target: notified p99 < 250 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from config.models import DockerConfig, NotificationsConfig, RulesConfig  # noqa: E402
from listener.model.event import Event  # noqa: E402
from listener.pipeline import Pipeline  # noqa: E402
from listener.rules.engine import RuleEngine, RulesStage  # noqa: E402
from listener.sources.docker_live import DockerSource  # noqa: E402
from notifiers.routing import Routing  # noqa: E402
from notifiers.worker import DeliveryWorker  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402
from tests.dockerd import BUSYBOX_REF, Dockerd, bench_on_private_dockerd  # noqa: E402

MS = 1_000_000


class Arrivals(ThreadingHTTPServer):
    """Notes the arrival time of every alert id posted to it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.arrived_ns: dict[str, int] = {}
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Arrivals

    def do_POST(self) -> None:
        now = time.time_ns()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()
        with self.server.lock:
            for alert in json.loads(body)["alerts"]:
                self.server.arrived_ns.setdefault(alert["id"], now)

    def log_message(self, format: str, *args: object) -> None:
        pass


class CommitClock:
    """Pipeline stage: when each container create was committed to the trail."""

    def __init__(self) -> None:
        self.committed_ns: dict[int, tuple[int, int]] = {}  # seq -> (event time, commit time)

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        now = time.time_ns()
        for event in stored:
            if event.type == "container" and event.action == "create" and event.seq:
                self.committed_ns[event.seq] = (event.time_ns, now)


def percentile(values: list[int], pct: float) -> float:
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


def figures(name: str, delays: list[int]) -> str:
    delays = sorted(delays)
    return (
        f"{name:9} n={len(delays):4}  p50 {percentile(delays, 50) / MS:7.1f} ms  "
        f"p99 {percentile(delays, 99) / MS:7.1f} ms  max {delays[-1] / MS:7.1f} ms"
    )


def create_privileged(daemon: Dockerd, count: int, interval_s: float) -> None:
    with daemon.session() as api:
        for i in range(count):
            body = {"Image": BUSYBOX_REF, "Cmd": ["true"], "HostConfig": {"Privileged": True}}
            status, text = api.request("POST", f"/containers/create?name=lat-{i}", body)
            if status != 201:
                raise RuntimeError(f"create lat-{i}: {status} {text[:200]!r}")
            time.sleep(interval_s)


async def bench(daemon: Dockerd, args: argparse.Namespace, trail_path: Path) -> None:
    server = Arrivals()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    notifications = NotificationsConfig.model_validate(
        {
            "destinations": [
                {
                    "name": "webhook",
                    "url": f"json://127.0.0.1:{port}/alerts",
                    "min_severity": "critical",
                    "rate_limit_per_min": 100_000,
                }
            ],
            "dedup_window_secs": 0,
            "group_window_secs": 0,
        }
    )
    clock = CommitClock()
    async with SQLiteTrail(trail_path) as trail:
        worker = DeliveryWorker(trail, notifications, host="bench")
        rules = RulesStage(
            trail,
            RuleEngine(RulesConfig()),
            routing=Routing(notifications),
            on_queued=worker.wake,
        )
        await rules.start()
        pipeline = Pipeline(trail, stages=[clock, rules])
        source = DockerSource(DockerConfig(host=daemon.host), "bench", pipeline.put)
        task = asyncio.create_task(source.run())
        await worker.start()
        while not source.connected.is_set():
            await asyncio.sleep(0.01)
        await asyncio.to_thread(create_privileged, daemon, args.containers, args.interval_ms / 1000)
        deadline = time.monotonic() + 30
        while len(server.arrived_ns) < args.containers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        source.stop()
        await task
        await pipeline.aclose()
        await worker.aclose()
        alerts = await trail.call(lambda t: t.alerts_by_seq(range(1, t.count_alerts() + 1)))
    server.shutdown()
    report(clock, server, alerts, args.containers)


def report(clock: CommitClock, server: Arrivals, alerts: dict[int, object], wanted: int) -> None:
    baseline = [commit - t for t, commit in clock.committed_ns.values()]
    notified = [
        server.arrived_ns[a.id] - a.time_ns  # type: ignore[attr-defined]
        for a in alerts.values()
        if a.rule == "privileged-container" and a.id in server.arrived_ns  # type: ignore[attr-defined]
    ]
    print(f"containers created: {wanted}, alerts received by the webhook: {len(notified)}")
    print(figures("stored", baseline))
    print(figures("notified", notified))
    ratio = percentile(sorted(notified), 99) / percentile(sorted(baseline), 99)
    print(f"notified/stored p99 ratio: {ratio:.2f}x  (target: notified p99 < 250 ms)")
    figure("notify_latency.notified_p99", percentile(sorted(notified), 99) / 1e6, "ms",
           baseline=percentile(sorted(baseline), 99) / 1e6, ratio=ratio, target="<250")  # fmt: skip
    if len(notified) != wanted:
        raise SystemExit(f"{wanted - len(notified)} alerts never reached the webhook")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200, help="privileged creates")
    parser.add_argument("--interval-ms", type=float, default=50, help="pause between creates")
    args = parser.parse_args()
    bench_on_private_dockerd(lambda daemon, trail_path: bench(daemon, args, trail_path))


if __name__ == "__main__":
    main()
