"""What input bounds and secret redaction cost, and what they save.

    .venv/bin/python bench/input_bounds.py [--events N] [--bomb-mib 1024]

1. Reading and normalizing Engine events (`read_events_file`): scenario-a's
   capture and N synthetic events (labels, long names, execs), events/s with
   bounds and redaction (as shipped) and, in the same run, with both replaced
   by a no-op (the code as it was before them), and the ratio.
2. `docktrail ingest` end to end (normalize, pipeline, SQLite trail, rules) of
   the same synthetic file into a fresh trail, with and without, and the ratio.
3. Peak RSS (VmHWM) of `docktrail ingest` of a gzip file whose one line
   expands to `--bomb-mib` MiB, against the peak RSS of ingesting a one-line
   file (the baseline), in separate processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from figures import figure, slug  # noqa: E402

from config.models import DocktrailConfig  # noqa: E402
from listener import redact  # noqa: E402
from listener.ingest import ingest_files  # noqa: E402
from listener.model.event import Event  # noqa: E402
from listener.sources import docker  # noqa: E402

SCENARIO = REPO / "tests" / "data" / "scenario-a" / "events.jsonl"
MiB = 1024 * 1024


def synthetic(path: Path, count: int) -> None:
    base = 1_700_000_000_000_000_000
    actions = ["create", "start", "exec_start: sh -c 'curl -s localhost'", "die", "destroy"]
    with open(path, "w") as out:
        for i in range(count):
            labels = {
                "com.docker.compose.project": "shop",
                "com.docker.compose.service": f"svc{i % 17}",
                "audit.why": "deploy of release 2026.11 " * 3,
                "org.opencontainers.image.source": "https://git.example/shop/app",
            }
            raw = {
                "Type": "container",
                "Action": actions[i % len(actions)],
                "Actor": {
                    "ID": f"{i // 5:064x}",
                    "Attributes": {
                        "name": f"shop-svc{i // 5}",
                        "image": "registry/shop:1",
                        **labels,
                    },
                },
                "scope": "local",
                "time": base // 10**9 + i,
                "timeNano": base + i * 1_000_000,
            }
            out.write(json.dumps(raw) + "\n")


@contextlib.contextmanager
def unbounded() -> Iterator[None]:
    """Bounds and redaction replaced by no-ops: the normalizer as it was."""
    saved_bound, saved_active = docker.bound_event, redact.active

    class _Nothing:
        def event(self, event: Event) -> Event:
            return event

    docker.bound_event = lambda event, *_args, **_kw: event  # type: ignore[assignment]
    redact.active = lambda: _Nothing()  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        docker.bound_event, redact.active = saved_bound, saved_active  # type: ignore[assignment]


def read_rate(path: Path, repeat: int) -> float:
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        count = sum(1 for item in docker.read_events_file(path, "h1") if isinstance(item, Event))
        best = max(best, count / (time.perf_counter() - started))
    return best


def ingest_rate(path: Path, tmp: Path, tag: str, repeat: int = 3) -> float:
    """Best of `repeat` ingests, each into a fresh trail (its key files made beforehand)."""
    best = 0.0
    for attempt in range(repeat):
        db = tmp / f"{tag}-{attempt}.db"
        config = DocktrailConfig.model_validate({"trail": {"path": str(db)}})
        redact.load_key(config.redaction_key_path())
        started = time.perf_counter()
        report = asyncio.run(ingest_files(config, docker_events=[path], host="h1"))
        best = max(best, report.stats.stored / (time.perf_counter() - started))
    return best


def compare(label: str, measure: Any) -> None:
    """Alternating, so that a busy moment of the machine hits both."""
    shipped = before = 0.0
    for round_ in range(2):
        shipped = max(shipped, measure(f"bounded{round_}"))
        with unbounded():
            before = max(before, measure(f"unbounded{round_}"))
    print(f"{label}: {shipped:,.0f} events/s bounded+redacted, {before:,.0f} without, "
          f"ratio {shipped / before:.2f}")  # fmt: skip
    name = "input_bounds." + slug(label.split("(")[0])
    figure(name, shipped, "events/s", baseline=before, ratio=shipped / before)


def bomb(path: Path, mib: int) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    first = json.dumps({"Type": "container", "Action": "start", "timeNano": 1}).encode() + b"\n"
    with open(path, "wb") as out:
        out.write(compressor.compress(first))
        block = b"A" * MiB
        for _ in range(mib):
            out.write(compressor.compress(block))
        out.write(compressor.compress(b"\n" + first) + compressor.flush())


PROBE = (
    "import sys\n"
    "from listener.cli import main\n"
    "try:\n    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]\n"
    "    print('RSS', peak[0].split()[1], file=sys.stderr)\n"
)


def peak_rss_kib(events: Path, db: Path) -> tuple[int, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "--db", str(db), "ingest", "--host", "h1",
         "--docker-events", str(events)],
        capture_output=True, text=True, check=False, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    rss = [line for line in done.stderr.splitlines() if line.startswith("RSS ")]
    if not rss:
        raise SystemExit(f"ingest failed: {done.stderr}")
    return int(rss[-1].split()[1]), elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--bomb-mib", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        big = tmp / "synthetic.jsonl"
        synthetic(big, args.events)
        compare("read scenario-a", lambda _tag: read_rate(SCENARIO, 10))
        compare(f"read synthetic ({args.events:,})", lambda _tag: read_rate(big, 2))
        compare("ingest scenario-a", lambda tag: ingest_rate(SCENARIO, tmp, "a-" + tag))
        compare(f"ingest synthetic ({args.events:,})", lambda tag: ingest_rate(big, tmp, tag))
        small = tmp / "one.jsonl"
        small.write_text(json.dumps({"Type": "container", "Action": "start", "timeNano": 1}) + "\n")
        gz = tmp / "bomb.jsonl.gz"
        bomb(gz, args.bomb_mib)
        base_rss, _ = peak_rss_kib(small, tmp / "rss-base.db")
        bomb_rss, seconds = peak_rss_kib(gz, tmp / "rss-bomb.db")
        print(f"gzip line of {args.bomb_mib} MiB ({gz.stat().st_size / MiB:.1f} MiB file): "
              f"peak RSS {bomb_rss / 1024:.0f} MiB vs {base_rss / 1024:.0f} MiB for a one-line "
              f"file (ratio {bomb_rss / base_rss:.2f}), skipped in {seconds:.1f} s")  # fmt: skip
        figure("input_bounds.bomb_peak_rss", bomb_rss / 1024, "MiB", baseline=base_rss / 1024,
               ratio=bomb_rss / base_rss)  # fmt: skip


if __name__ == "__main__":
    main()
