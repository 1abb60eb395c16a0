"""Where `verify` spends its time: each of its passes alone over the same trail.

    .venv/bin/python bench/verify_parts.py [--size 100k|1M|10M] [--cache DIR] [--runs 3]

Uses (or builds) bench/trail_scale.py's cached trail and times, in this process
and in the same run, with min/median/max of `--runs`:

- a plain read of the events (seq, hashes, body): the baseline;
- the read with the copied-column check in SQL (SQLite's JSON functions), as
  verify's walk selects it;
- the chain walk: that read plus sha256 of every row in Python;
- the same with the actor index's probe of every row (migration 0014) in the walk,
  as verify ran it before the probe moved beside the integrity check (and still
  does when that finds a row lacking);
- `PRAGMA integrity_check` (every index entry against its row) and, for
  comparison, `PRAGMA quick_check` (structure only);
- the whole `verify_file`, which runs the walk on one connection and, at once on
  a second, the integrity check then the actor probe.

Figures are CPU seconds per 1M events (wall for the whole verify), with the
ratio to the plain read.
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for where in (REPO, REPO / "bench"):
    if str(where) not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, str(where))

from figures import figure  # noqa: E402
from trail_scale import SIZES, cached_trail  # noqa: E402

import sinks.sqlite.actors as actors  # noqa: E402
from listener.model.event import chain_hash  # noqa: E402
from sinks.sqlite import verify_file  # noqa: E402
from sinks.sqlite.schema import VERIFY_ROWS, verify_event_rows  # noqa: E402

PLAIN_ROWS = "SELECT seq, prev_hash, hash, body FROM events ORDER BY seq"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def plain_read(path: Path) -> None:
    with _connect(path) as conn:
        for _ in conn.execute(PLAIN_ROWS):
            pass


def column_read(path: Path) -> None:
    with _connect(path) as conn:
        for row in conn.execute(VERIFY_ROWS):
            if not row[4]:
                raise SystemExit("the bench trail is broken")


def chain_walk(path: Path) -> None:
    with _connect(path) as conn:
        for _, prev_hash, digest, body, columns_ok, _, _, _ in conn.execute(VERIFY_ROWS):
            if not columns_ok or chain_hash(prev_hash, body) != digest:
                raise SystemExit("the bench trail is broken")


def actor_walk(path: Path) -> None:
    """`chain_walk` with the actor index's probe (a trail without it: `chain_walk`)."""
    with _connect(path) as conn:
        indexed = actors.present(conn)
        params = (actors.through_seq(conn),) if indexed else ()
        rows = conn.execute(verify_event_rows(False, indexed), params)
        for _, prev_hash, digest, body, columns_ok, _, _, held in rows:
            if not (columns_ok and held) or chain_hash(prev_hash, body) != digest:
                raise SystemExit("the bench trail is broken")


def pragma(name: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        with _connect(path) as conn:
            if conn.execute(f"PRAGMA {name}(1)").fetchone()[0] != "ok":
                raise SystemExit(f"{name} failed on the bench trail")

    return check


def whole_verify(path: Path) -> None:
    if not verify_file(path, path.with_suffix(".key")).ok:
        raise SystemExit("verify failed on the bench trail")


PARTS: dict[str, Callable[[Path], None]] = {
    "plain_read": plain_read,
    "column_read": column_read,
    "chain_walk": chain_walk,
    "actor_walk": actor_walk,
    "integrity_check": pragma("integrity_check"),
    "quick_check": pragma("quick_check"),
}


def measure(path: Path, runs: int) -> dict[str, list[float]]:
    """Seconds per part and run: CPU of this thread for a part, wall for the whole verify."""
    times: dict[str, list[float]] = {name: [] for name in [*PARTS, "verify"]}
    for _ in range(runs):  # interleaved, so that a busy moment hits every part alike
        for name, part in PARTS.items():
            started = _cpu()
            part(path)
            times[name].append(_cpu() - started)
        started = time.perf_counter()
        whole_verify(path)
        times["verify"].append(time.perf_counter() - started)
    return times


def report(times: dict[str, list[float]], label: str, count: int) -> None:
    per_1m = 1_000_000 / count
    baseline = statistics.median(times["plain_read"]) * per_1m
    for name, secs in times.items():
        low, mid, high = min(secs), statistics.median(secs), max(secs)
        print(
            f"{name:16s} s per 1M: min {low * per_1m:6.2f}  median {mid * per_1m:6.2f}  "
            f"max {high * per_1m:6.2f}  ({mid * per_1m / baseline:.2f}x the plain read)"
        )
        figure(
            f"verify_parts.{name}.{label}",
            mid * per_1m,
            "s_per_1M",
            baseline=baseline,
            ratio=mid * per_1m / baseline,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="100k", choices=SIZES)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "docktrail-scale"
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    count = SIZES[args.size]
    path, _ = cached_trail(args.cache, args.size, count, rebuild=False)
    report(measure(path, args.runs), args.size, count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
