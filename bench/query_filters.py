"""Cost of resolving container names through the trail, against the name-only query.

    .venv/bin/python bench/query_filters.py [--events N] [--queries Q]

Builds a trail of N synthetic events (bench/trail_append.py's stream:
lifecycles, execs, network connects, pulls) and times Q `query -f
container=NAME` lookups of random names, three ways, in the same run:

- baseline: the previous SQL (the container's name or id prefix, or a network
  event whose `container` attribute starts with the value), on a copy of the
  trail with the layout before the actor index (migration 0014: the per-id
  indexes that SQL was written for);
- resolved: `build_query` today (also every id that bore the name, renames
  included, and the network events carrying those ids), through the actor index;
  and (`resolved_per_id`) its SQL for the layout before it, on the copy;
- two names: `-f container=A -f container=B` (OR), through the actor index.

It prints queries/s and the ratio to the baseline, and the rows found (the
resolved query finds the network connects the baseline misses).

    .venv/bin/python bench/query_filters.py --trail PATH [--queries Q]

On an existing trail (e.g. bench/growth.py's cached 1M one; read only, never
written), each documented filter instead: by container name, by image, by
login, by time range (a minute), by rule (alerts), and the id look-up (the
ingest's dedupe and the central trail's `seqs_by_id`), each with random values
taken from the trail, a page of `--page` rows where the filter selects more
(the CLI's `--limit`). Prints its query plan and `FIGURE query_p95.<filter>
<ms> ms target=<50` (p50 and max beside).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sqlite3
import statistics
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
from sqlite_utils import Database  # noqa: E402

from bench.trail_append import synthetic_events  # noqa: E402
from sinks.base import AlertFilter, EventFilter  # noqa: E402
from sinks.sqlite import SQLiteTrail, actors, build_query  # noqa: E402
from sinks.sqlite.bucketed import actor_index  # noqa: E402
from sinks.sqlite.schema import ACTOR_TRIGGERS, MIGRATIONS, apply_migrations  # noqa: E402
from sinks.sqlite.sqlterms import prefix_sql  # noqa: E402


def baseline_sql(name: str) -> tuple[str, list[Any]]:
    by_id, id_params = prefix_sql("actor_id", name)
    attached, attached_params = prefix_sql("container", name)
    where = (
        f"((+type = 'container' AND actor_name = ?) OR (+type = 'container' AND {by_id}) "
        f"OR ({attached}))"
    )
    sql = f"SELECT seq, body, prev_hash, hash FROM events WHERE {where} ORDER BY seq"
    return sql, [name, *id_params, *attached_params]


def previous_layout(path: Path, copy: Path) -> sqlite3.Connection:
    """A read-only connection to a copy of the trail at `path` with the layout before
    the actor index (migration 0014): the per-id indexes, as migration 0002 made them."""
    shutil.copy(path, copy)
    with contextlib.closing(sqlite3.connect(":memory:")) as memory:
        apply_migrations(Database(memory), MIGRATIONS[:2])
        marks = ", ".join("?" * len(actors.REPLACED))
        sql = f"SELECT sql FROM sqlite_master WHERE name IN ({marks})"
        indexes = [row[0] for row in memory.execute(sql, actors.REPLACED)]
    with contextlib.closing(sqlite3.connect(copy)) as conn, conn:
        for name in ACTOR_TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        for table in actors.TABLES:
            conn.execute(f"DROP TABLE {table}")
        for name in ("events_bucket_actor", "events_bucket_container"):
            conn.execute(f"DROP INDEX {name}")
        for index in indexes:
            conn.execute(index)
    return sqlite3.connect(f"file:{copy}?mode=ro", uri=True)


def timed(run: Callable[[], int], queries: int) -> tuple[float, int]:
    started = time.perf_counter()
    rows = sum(run() for _ in range(queries))
    return queries / (time.perf_counter() - started), rows


def sample(conn: sqlite3.Connection, sql: str, count: int, rng: random.Random) -> list[Any]:
    """`count` values picked at random from the rows of `sql` (its first column)."""
    values = [row[0] for row in conn.execute(sql)]
    return [rng.choice(values) for _ in range(count)] if values else [None] * count


def documented_filters(
    conn: sqlite3.Connection, count: int, page: int
) -> dict[str, list[EventFilter | AlertFilter | list[str]]]:
    """Per documented filter, `count` filters with values that occur in the trail."""
    rng = random.Random(7)
    some = "FROM events WHERE seq % 997 = 0"  # a spread of the trail, cheap to read
    names = sample(conn, f"SELECT DISTINCT actor_name {some} AND type = 'container'", count, rng)
    images = sample(conn, f"SELECT DISTINCT actor_image {some} AND actor_image IS NOT NULL",
                    count, rng)  # fmt: skip
    logins = sample(conn, "SELECT DISTINCT who_login FROM events WHERE who_login IS NOT NULL",
                    count, rng)  # fmt: skip
    times = sample(conn, f"SELECT time_ns {some}", count, rng)
    rules = sample(conn, "SELECT DISTINCT rule FROM alerts", count, rng)
    ids = sample(conn, f"SELECT id {some}", count * 20, rng)
    minute = 60 * 10**9
    return {
        "container": [EventFilter(container=name) for name in names],
        "image": [EventFilter(image=image, limit=page) for image in images],
        "login": [EventFilter(user=login or "nobody", limit=page) for login in logins],
        "time_range": [EventFilter(since_ns=t, until_ns=t + minute) for t in times],
        "rule": [AlertFilter(rule=rule, limit=page) for rule in rules],
        "id_lookup_20": [ids[i * 20 : i * 20 + 20] for i in range(count)],
    }


def run_documented(path: Path, count: int, page: int) -> None:
    trail = SQLiteTrail(path)
    with trail:
        conn = trail._connection()
        print(f"{trail.count()} events, {trail.count_alerts()} alerts in {path}")
        for name, filters in documented_filters(conn, count, page).items():
            took: list[float] = []
            rows = 0
            for f in filters:
                started = time.perf_counter()
                if isinstance(f, EventFilter):
                    rows += sum(1 for _ in trail.query(f))
                elif isinstance(f, AlertFilter):
                    rows += sum(1 for _ in trail.query_alerts(f))
                else:
                    rows += len(trail.seqs_by_id(f))
                took.append((time.perf_counter() - started) * 1000)
            took.sort()
            p95 = took[int(len(took) * 0.95) - 1]
            print(f"{name:12} p50 {statistics.median(took):7.2f} ms  p95 {p95:7.2f} ms  "
                  f"max {took[-1]:7.2f} ms  rows/query {rows / len(filters):.0f}")  # fmt: skip
            print("  plan: " + " | ".join(plan_of(trail, filters[0])))
            figure(f"query_p95.{name}", p95, "ms", target="<50")


def plan_of(trail: SQLiteTrail, f: EventFilter | AlertFilter | list[str]) -> list[str]:
    if isinstance(f, EventFilter):
        return trail.query_plan(f)
    if isinstance(f, AlertFilter):
        return trail.alerts_query_plan(f)
    marks = ", ".join("?" * len(f))
    return trail._explain(f"SELECT id, seq FROM events WHERE id IN ({marks})", list(f))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--trail", type=Path, help="documented filters on this trail instead")
    parser.add_argument("--page", type=int, default=100, help="rows of a page (--trail)")
    args = parser.parse_args(argv)
    if args.trail is not None:
        run_documented(args.trail, min(args.queries, 200), args.page)
        return 0
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
            index = actor_index(conn)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all of it in the file copied
            previous = previous_layout(trail.path, Path(tmp) / "previous.db")
            plan = trail.query_plan(EventFilter(container=names[0]))
            rng = random.Random(7)
            picks = [rng.choice(names) for _ in range(args.queries)]
            pairs = [(rng.choice(names), rng.choice(names)) for _ in range(args.queries)]
            cursor = iter(range(10**9))

            def run_sql(sql_params: tuple[str, list[Any]], on: sqlite3.Connection = conn) -> int:
                return len(on.execute(*sql_params).fetchall())

            def pick() -> EventFilter:
                return EventFilter(container=picks[next(cursor) % len(picks)])

            results = {
                "baseline": timed(lambda: run_sql(baseline_sql(picks[next(cursor) % len(picks)]),
                                                  previous), args.queries),
                "resolved": timed(lambda: run_sql(build_query(pick(), actor_index=index)),
                                  args.queries),
                "resolved_per_id": timed(lambda: run_sql(build_query(pick()), previous),
                                         args.queries),
                "two names": timed(lambda: run_sql(build_query(
                    EventFilter(container=pairs[next(cursor) % len(pairs)]), actor_index=index)),
                    args.queries),
            }  # fmt: skip
            previous.close()
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
