"""`ingest` end to end against a bare sqlite-utils `insert_all` of the same rows.

    .venv/bin/python bench/ingest_rate.py [--events 100000] [--repeat 3] [--dir DIR]
                                          [--before CHECKOUT]

Builds a Docker events file of `--events` events from the scenario-a capture
(bench/docker_events_file.py: fresh ids and times per copy), then, round after
round (alternating, so a busy moment of the machine hits every variant):

- `ingest_files` (parse, normalise, intents, rules, hash-chained trail,
  alerts) into a fresh trail;
- `sqlite_utils` `insert_all` of the rows the trail stored (same columns,
  journal mode and synchronous level, no indexes) into a fresh file;
- with `--before CHECKOUT` (e.g. `git worktree add /tmp/before <commit>`), the
  same ingest by that checkout's code, in a process of its own (timed inside
  it, start-up excluded).

Prints min/median/max events/s of each and the ratio ingest / insert_all
(target >= 0.3), and with `--before` checks that both stored the same chain
(seq, id, hash of every event). Each variant's events per CPU second (the
process, every thread) are printed too: on a machine shared with other work
they move less than the wall-clock figures.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlite_utils import Database

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from docker_events_file import write_events  # noqa: E402
from figures import figure  # noqa: E402
from trail_append import stored_rows  # noqa: E402

from config.models import DocktrailConfig  # noqa: E402
from listener import redact  # noqa: E402
from listener.app import tuned_runtime  # noqa: E402
from listener.ingest import ingest_files  # noqa: E402

Secs = tuple[float, float]
"""Wall-clock and CPU (the process's, every thread) seconds of one run."""


def ingest_secs(events: Path, db: Path) -> Secs:
    config = DocktrailConfig.model_validate({"trail": {"path": str(db)}})
    redact.load_key(config.redaction_key_path())  # made before the clock starts
    with tuned_runtime():  # as `docktrail ingest` runs it
        started, cpu = time.perf_counter(), time.process_time()
        asyncio.run(ingest_files(config, docker_events=[events], host="h1"))
        return time.perf_counter() - started, time.process_time() - cpu


# Run by the `--before` checkout's Python path: argv = checkout, events file, trail.
# Under that checkout's `tuned_runtime` (or older `tuned_gc`) when it has one, as its
# `docktrail ingest` runs.
_BEFORE = """
import asyncio, contextlib, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from config.models import DocktrailConfig
from listener import redact
from listener.ingest import ingest_files
try:
    from listener.app import tuned_runtime
except ImportError:
    try:
        from listener.app import tuned_gc as tuned_runtime
    except ImportError:
        tuned_runtime = contextlib.nullcontext
config = DocktrailConfig.model_validate({"trail": {"path": sys.argv[3]}})
redact.load_key(config.redaction_key_path())
with tuned_runtime():
    started, cpu = time.perf_counter(), time.process_time()
    asyncio.run(ingest_files(config, docker_events=[Path(sys.argv[2])], host="h1"))
    print(time.perf_counter() - started, time.process_time() - cpu)
"""


def before_secs(checkout: Path, events: Path, db: Path) -> Secs:
    done = subprocess.run(
        [sys.executable, "-c", _BEFORE, str(checkout), str(events), str(db)],
        cwd=checkout,
        check=True,
        capture_output=True,
        text=True,
    )
    wall, cpu = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu)


def chain(db: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT seq, id, hash FROM events ORDER BY seq").fetchall()
    finally:
        conn.close()


def insert_all_secs(db: Path, rows: list[dict[str, Any]], durability: str, batch: int) -> Secs:
    database = Database(db)
    database.execute("PRAGMA journal_mode = WAL")
    database.execute(f"PRAGMA synchronous = {durability.upper()}")
    started, cpu = time.perf_counter(), time.process_time()
    database.table("events").insert_all(rows, batch_size=batch)
    spent = time.perf_counter() - started, time.process_time() - cpu
    database.close()
    return spent


def spread(rates: list[float]) -> str:
    return f"{min(rates):,.0f} / {statistics.median(rates):,.0f} / {max(rates):,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (temp dir)")
    parser.add_argument("--before", type=Path, default=None, help="an earlier checkout")
    args = parser.parse_args(argv)
    defaults = DocktrailConfig().trail
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="docktrail-ingest-") as tmp:
        root = Path(tmp)
        events = root / "events.jsonl"
        write_events(events, args.events)
        rates: dict[str, list[float]] = {"ingest": [], "insert_all": []}
        if args.before is not None:
            rates["before"] = []
        cpu_rates: dict[str, list[float]] = {variant: [] for variant in rates}
        chains: dict[str, list[tuple[int, str, str]]] = {}
        for round_ in range(args.repeat):
            db = root / f"ingest-{round_}.db"
            secs = ingest_secs(events, db)
            stored = len(chains.setdefault("ingest", chain(db)))
            _add(rates, cpu_rates, "ingest", stored, secs)
            rows = stored_rows(db)
            secs = insert_all_secs(
                root / f"raw-{round_}.db", rows, defaults.durability, defaults.batch_size
            )
            _add(rates, cpu_rates, "insert_all", len(rows), secs)
            if args.before is not None:
                db = root / f"before-{round_}.db"
                secs = before_secs(args.before.resolve(), events, db)
                chains["before"] = chain(db)
                _add(rates, cpu_rates, "before", len(chains["before"]), secs)
            for path in root.glob(f"*-{round_}.db*"):
                path.unlink()
        same = all(found == chains["ingest"] for found in chains.values())
        print(
            f"{args.events} events, durability {defaults.durability}, batch {defaults.batch_size}"
        )
        for variant, found in rates.items():
            print(f"{variant:<11} {spread(found)} events/s (min / median / max)")
        for variant, found in cpu_rates.items():
            print(f"{variant:<11} {spread(found)} events per CPU second")
        if args.before is not None:
            cpu = [i / b for i, b in zip(cpu_rates["ingest"], cpu_rates["before"], strict=True)]
            print(f"CPU ratio ingest/before: {spread_ratio(cpu)} (min / median / max)")
        print(f"same chain ({', '.join(chains)}): {same}")
        best = {variant: statistics.median(found) for variant, found in rates.items()}
        ratios = [i / r for i, r in zip(rates["ingest"], rates["insert_all"], strict=True)]
        print(f"ratio ingest/insert_all: {spread_ratio(ratios)} (min / median / max)")
        figure("ingest.rate", best["ingest"], "events/s", baseline=best["insert_all"],
               ratio=statistics.median(ratios), target="ratio>=0.3")  # fmt: skip
        if args.before is not None:
            earlier = [b / r for b, r in zip(rates["before"], rates["insert_all"], strict=True)]
            print(f"ratio before/insert_all: {spread_ratio(earlier)}")
            figure("ingest.rate_before", best["before"], "events/s", baseline=best["insert_all"],
                   ratio=statistics.median(earlier))  # fmt: skip
        return 0 if same else 1


def _add(
    rates: dict[str, list[float]],
    cpu_rates: dict[str, list[float]],
    variant: str,
    events: int,
    secs: Secs,
) -> None:
    rates[variant].append(events / secs[0])
    cpu_rates[variant].append(events / secs[1])


def spread_ratio(ratios: list[float]) -> str:
    return f"{min(ratios):.3f} / {statistics.median(ratios):.3f} / {max(ratios):.3f}"


if __name__ == "__main__":
    sys.exit(main())
