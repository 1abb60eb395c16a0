"""Throughput of `docktrail export` per format, against reading the same events.

    .venv/bin/python bench/export.py [--events N]

Fills a trail with N synthetic events (bench/trail_append.py's generator;
not timed), then prints records/s of reading them back (`SQLiteTrail.query`,
the baseline) and of exporting them as jsonl, ocsf, ecs and csv to a null
sink, each with its ratio to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from figures import figure  # noqa: E402
from trail_append import synthetic_events  # noqa: E402

from listener.export import FORMATS, export_trail  # noqa: E402
from sinks.base import EventFilter  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402


class NullSink(io.StringIO):
    def write(self, text: str) -> int:
        return len(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trail = SQLiteTrail(Path(tmp) / "t.db", durability="normal")
        with trail:
            events = list(synthetic_events(args.events))
            for start in range(0, len(events), 1000):
                trail.append(events[start : start + 1000])
            begin = time.perf_counter()
            read = sum(1 for _ in trail.query(EventFilter()))
            baseline = read / (time.perf_counter() - begin)
            print(f"read back      {baseline:>10,.0f} records/s  (baseline)")
            for fmt in FORMATS:
                begin = time.perf_counter()
                summary = export_trail(trail, fmt, NullSink())
                rate = (summary.events + summary.alerts) / (time.perf_counter() - begin)
                print(f"export {fmt:<7} {rate:>10,.0f} records/s  {rate / baseline:.2f}x read")
                figure(f"export.{fmt}", rate, "records/s", baseline=baseline,
                       ratio=rate / baseline)  # fmt: skip


if __name__ == "__main__":
    main()
