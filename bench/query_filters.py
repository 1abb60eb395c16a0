"""Cost of resolving container names through the trail, against the name-only query.

    .venv/bin/python bench/query_filters.py [--events N] [--queries Q]

Builds a trail of N synthetic events (bench/trail_append.py's stream:
lifecycles, execs, network connects, pulls) and times Q `query -f
container=NAME` lookups of random names, three ways, in the same run:

- baseline: the previous SQL (the container's name or id prefix, or a network
  event whose `container` attribute starts with the value);
- resolved: `build_query` today (also every id that bore the name, renames
  included, and the network events carrying those ids);
- two names: `-f container=A -f container=B` (OR).

It prints queries/s and the ratio to the baseline, and the rows found (the
resolved query finds the network connects the baseline misses).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from bench.trail_append import synthetic_events  # noqa: E402
from sinks.base import EventFilter  # noqa: E402
from sinks.sqlite import SQLiteTrail, build_query  # noqa: E402
from sinks.sqlite.queries import prefix_sql  # noqa: E402


def baseline_sql(name: str) -> tuple[str, list[Any]]:
    by_id, id_params = prefix_sql("actor_id", name)
    attached, attached_params = prefix_sql("container", name)
    where = (
        f"((+type = 'container' AND actor_name = ?) OR (+type = 'container' AND {by_id}) "
        f"OR ({attached}))"
    )
    sql = f"SELECT seq, body, prev_hash, hash FROM events WHERE {where} ORDER BY seq"
    return sql, [name, *id_params, *attached_params]


def timed(run: Callable[[], int], queries: int) -> tuple[float, int]:
    started = time.perf_counter()
    rows = sum(run() for _ in range(queries))
    return queries / (time.perf_counter() - started), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trail = SQLiteTrail(Path(tmp) / "t.db", durability="normal")
        with trail:
            batch: list[Any] = []
            for event in synthetic_events(args.events):
                batch.append(event)
                if len(batch) == 1_000:
                    trail.append(batch)
                    batch = []
            trail.append(batch)
            names = sorted({e.actor.name for e in trail.query(EventFilter(type="container"))
                            if e.actor.name})  # fmt: skip
            conn = trail._connection()
            plan = trail.query_plan(EventFilter(container=names[0]))
            rng = random.Random(7)
            picks = [rng.choice(names) for _ in range(args.queries)]
            pairs = [(rng.choice(names), rng.choice(names)) for _ in range(args.queries)]
            cursor = iter(range(10**9))

            def run_sql(sql_params: tuple[str, list[Any]]) -> int:
                return len(conn.execute(*sql_params).fetchall())

            results = {
                "baseline": timed(lambda: run_sql(baseline_sql(picks[next(cursor) % len(picks)])),
                                  args.queries),
                "resolved": timed(lambda: run_sql(build_query(
                    EventFilter(container=picks[next(cursor) % len(picks)]))), args.queries),
                "two names": timed(lambda: run_sql(build_query(
                    EventFilter(container=pairs[next(cursor) % len(pairs)]))), args.queries),
            }  # fmt: skip
    base = results["baseline"][0]
    print(f"{args.events} events, {len(names)} container names, {args.queries} queries each")
    for label, (rate, rows) in results.items():
        print(f"{label:10} {rate:9.0f} queries/s  {rate / base:5.2f}x baseline  rows {rows}")
        name = label.replace(" ", "_")
        figure(f"query.container.{name}", rate, "queries/s", baseline=base, ratio=rate / base)
    print("plan resolved: " + " | ".join(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
