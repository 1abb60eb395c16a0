"""Benchmark: the trail's writer thread while the event loop runs Python.

    .venv/bin/python bench/trail_contention.py [--events 20000] [--batch 2000]
                                               [--old-events 2000] [--repeat 3]

`docktrail run` writes the trail on a worker thread (`SQLiteTrail.write`) while
its event loop parses audit records, normalises Engine events and runs the
rules: one GIL for both. SQLite works without the GIL, and the thread coming
back from it waits until the loop's thread hands the GIL over, at the latest
after the interpreter's switch interval. This bench writes `--events` events
(bench/trail_append.py's synthetic mix) in batches of `--batch` through the
async API, with the loop idle and with the loop busy (a task that runs Python
for 2 ms at a time, then yields, as a loop under load does), and prints the
events/s of each and busy/idle (two threads' work on one GIL: 0.5 would be
an even share).

Variants, in the same run (`--old-events` events for all but the first: with
the loop busy, the older ways take minutes on more):

- ``tuned``: as docktrail writes: the loop giving way to the writer
  (`sinks.sqlite.worker`), multi-row inserts while the loop is seen busy
  (`sinks.sqlite.bulk`), the switch interval `listener.app.tune_threads` sets;
- ``no_give_way``: the same without the loop giving way;
- ``executemany``: the same with the rows always inserted by `executemany`;
- ``before``: as docktrail wrote before all three (`executemany`, CPython's 5 ms
  interval, no giving way), in batches of 50 and for at most `--cap` seconds:
  with the loop busy the writer may not get the GIL at all (the figure is then
  the events committed within the cap, per second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for where in (REPO, REPO / "bench"):
    if str(where) not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, str(where))

from busyloop import giving_way, python_in_slices  # noqa: E402
from figures import figure  # noqa: E402
from trail_append import synthetic_events  # noqa: E402

from listener.app import SWITCH_INTERVAL_SECS  # noqa: E402
from listener.model.event import Event  # noqa: E402
from sinks.sqlite import SQLiteTrail, alerting, trail  # noqa: E402
from sinks.sqlite.bulk import insert_rows  # noqa: E402

BUSY_SLICE_SECS = 0.002  # the loop runs Python this long between two yields
LOOP_BUSY_BEFORE_SECS = 0.1  # before the first write (not timed)
DEFAULT_INTERVAL = 0.005  # CPython's


def _executemany(conn: Any, sql: str, rows: Sequence[Sequence[Any]], **_: Any) -> None:
    conn.executemany(sql, rows)


@dataclass(frozen=True)
class Variant:
    name: str
    multirow: bool = True
    interval: float = SWITCH_INTERVAL_SECS
    give_way: bool = True
    old: bool = True  # `--old-events` events, not `--events`
    batch: int | None = None  # `--batch` when None
    capped: bool = False  # stop the busy loop after `--cap` seconds


VARIANTS = (
    Variant("tuned", old=False),
    Variant("no_give_way", give_way=False),
    Variant("executemany", multirow=False),
    Variant("before", False, DEFAULT_INTERVAL, give_way=False, batch=50, capped=True),
)


@contextlib.contextmanager
def writing_as(variant: Variant) -> Iterator[None]:
    """The trail's inserts, the switch interval and the giving way of `variant`."""
    how = insert_rows if variant.multirow else _executemany
    modules = (trail, alerting)
    saved = [module.insert_rows for module in modules]
    before = sys.getswitchinterval()
    for module in modules:
        module.insert_rows = how  # type: ignore[attr-defined]
    sys.setswitchinterval(variant.interval)
    try:
        with giving_way(variant.give_way):
            yield
    finally:
        sys.setswitchinterval(before)
        for module, original in zip(modules, saved, strict=True):
            module.insert_rows = original  # type: ignore[attr-defined]


async def write_rate(
    path: Path, events: list[Event], batch: int, busy: bool, cap: float | None
) -> float:
    """Events/s committed (within `cap` seconds of loop work when given)."""
    sink = SQLiteTrail(path, durability="normal", signing_key=path.with_suffix(".key"))
    await sink.start()
    try:
        await sink.write(events[:1])  # opened, sealed once: not part of the figure
        done = asyncio.Event()
        loop_work = (
            asyncio.create_task(python_in_slices(done, BUSY_SLICE_SECS, cap)) if busy else None
        )
        if loop_work is not None:
            await asyncio.sleep(LOOP_BUSY_BEFORE_SECS)  # as a loop under load: busy already
        started, committed = time.perf_counter(), 0
        for start in range(1, len(events), batch):
            if done.is_set():
                break  # the cap
            committed += len((await sink.write(events[start : start + batch])).stored)
        took = time.perf_counter() - started
        done.set()
        if loop_work is not None:
            await loop_work
        return committed / took
    finally:
        await sink.aclose()


def measure(work: Path, variant: Variant, events: list[Event], args: Any) -> None:
    idle, busy = [], []
    batch = variant.batch or args.batch
    cap = args.cap if variant.capped else None
    with writing_as(variant):
        for run in range(args.repeat):
            for loaded, rates in ((False, idle), (True, busy)):
                path = work / f"{variant.name}-{run}-{int(loaded)}.db"
                rates.append(asyncio.run(write_rate(path, events, batch, loaded, cap)))
    base, loaded_rate = statistics.median(idle), statistics.median(busy)
    print(f"{variant.name}: {len(events) - 1} events in batches of {batch}: idle {base:,.0f} "
          f"events/s, loop busy {loaded_rate:,.0f} events/s ({loaded_rate / base:.3f} of idle)",
          flush=True)  # fmt: skip
    name = f"trail.contention.{variant.name}"
    figure(f"{name}.idle", base, "events/s", spread=idle)
    figure(f"{name}.busy", loaded_rate, "events/s", baseline=base, ratio=loaded_rate / base,
           spread=busy)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--old-events", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cap", type=float, default=10.0, help="seconds, `before` busy")
    args = parser.parse_args()
    events = list(synthetic_events(args.events + 1))
    with tempfile.TemporaryDirectory(prefix="dt-contention-") as tmp:
        for variant in VARIANTS:
            chosen = events[: args.old_events + 1] if variant.old else events
            measure(Path(tmp), variant, chosen, args)


if __name__ == "__main__":
    main()
