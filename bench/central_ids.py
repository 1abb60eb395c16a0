"""Benchmark: what a central trail's id scheme costs its writes as it grows.

    .venv/bin/python bench/central_ids.py [--events 1000000] [--hosts 50] [--new 20000]
                                          [--batch 2000] [--repeat 3] [--dir DIR]

The central trail (`docktrail consume`) stores every host row under a central id
(`sinks.kafka.centralids`). For each scheme (``digest``: 128 random bits, the
central trails from before; ``host-seq``: one host trail's rows in seq order), it
builds a trail of `--events` events from `--hosts` hosts in turn (bench/
trail_append.py's mix, each under the central id of its host and host seq, stored
through `SQLiteTrail.append` in commits of `--batch`, consume's records per central
write, `kafka.consume.batch_size`), then,
round after round, appends `--new` more events into it and into an empty trail
(the baseline: both schemes are the same there). Printed: events/s of the append
into the grown trail, its ratio to the empty one's in the same round (the median of
the rounds' ratios), and the pages of the id index, for both schemes.

Only the storage differs: the per-host chain checks, the signatures and the fleet
rules are the same work under either scheme (bench/kafka.py measures consume end to
end into an empty central trail).
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from bench.trail_append import synthetic_events  # noqa: E402
from listener.model.event import Event  # noqa: E402
from sinks.kafka.centralids import CentralIds, Scheme  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402

SCHEMES: tuple[Scheme, ...] = ("digest", "host-seq")
BUILD_BATCH = 20_000  # the trails are built in larger commits: faster, the same index


def central_events(ids: CentralIds, hosts: int, first: int, count: int) -> Iterator[Event]:
    """Events `first..first+count-1` of the fleet, host by host in turn, under central ids."""
    for n, event in enumerate(synthetic_events(count), first):
        host_seq, host = divmod(n, hosts)
        digest = f"{n:064x}"  # the host row's hash: only its being distinct matters here
        event.id = ids.event(f"trail-{host}", host_seq + 1, digest)
        event.host = f"host-{host}"
        yield event


def append(path: Path, events: Iterator[Event], batch: int) -> float:
    """Seconds to store `events` in batches of `batch`, one commit each."""
    with SQLiteTrail(path, durability="normal") as trail:
        started = time.perf_counter()
        chunk: list[Event] = []
        for event in events:
            chunk.append(event)
            if len(chunk) == batch:
                trail.append(chunk)
                chunk = []
        if chunk:
            trail.append(chunk)
        return time.perf_counter() - started


def id_index_pages(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        sql = "SELECT count(*) FROM dbstat WHERE name = 'events_id'"
        return int(conn.execute(sql).fetchone()[0])


def measure(folder: Path, args: argparse.Namespace) -> None:
    built: dict[Scheme, Path] = {}
    for scheme in SCHEMES:
        built[scheme] = folder / f"{scheme}.db"
        ids = CentralIds(scheme)
        events = central_events(ids, args.hosts, 0, args.events)
        secs = append(built[scheme], events, max(args.batch, BUILD_BATCH))
        print(f"# {scheme}: {args.events:,} events built in {secs:.1f} s", flush=True)
    rates: dict[Scheme, list[float]] = {scheme: [] for scheme in SCHEMES}
    ratios: dict[Scheme, list[float]] = {scheme: [] for scheme in SCHEMES}
    empty: list[float] = []
    for round_no in range(args.repeat):
        first = args.events + round_no * args.new
        order = SCHEMES if round_no % 2 == 0 else SCHEMES[::-1]
        base = args.new / append(folder / f"empty-{round_no}.db",
                                 central_events(CentralIds("host-seq"), args.hosts, first,
                                                args.new), args.batch)  # fmt: skip
        empty.append(base)
        for scheme in order:
            events = central_events(CentralIds(scheme), args.hosts, first, args.new)
            rate = args.new / append(built[scheme], events, args.batch)
            rates[scheme].append(rate)
            ratios[scheme].append(rate / base)
    baseline = statistics.median(empty)
    for scheme in SCHEMES:
        name = f"central_ids.append.{_size(args.events)}.{scheme}"
        print(f"# {scheme}: id index {id_index_pages(built[scheme]):,} pages", flush=True)
        figure(name, statistics.median(rates[scheme]), "events/s", baseline=baseline,
               ratio=statistics.median(ratios[scheme]), target="ratio>=0.8")  # fmt: skip


def _size(events: int) -> str:
    return f"{events // 1_000_000}M" if events % 1_000_000 == 0 else f"{events / 1000:g}k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in each trail")
    parser.add_argument("--hosts", type=int, default=50, help="hosts the events come from")
    parser.add_argument("--new", type=int, default=20_000, help="events per measured append")
    parser.add_argument("--batch", type=int, default=2_000, help="events per commit")
    parser.add_argument("--repeat", type=int, default=3, help="rounds")
    parser.add_argument("--dir", type=Path, help="where the trails go (a temporary folder)")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        measure(args.dir, args)
        return
    with tempfile.TemporaryDirectory(prefix="docktrail-central-ids-") as folder:
        measure(Path(folder), args)


if __name__ == "__main__":
    main()
