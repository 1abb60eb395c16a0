"""Cost of the metrics stage on the pipeline: the same events through `Pipeline` into
an in-memory trail, without and with `ServiceMetrics` as the first stage.

    .venv/bin/python bench/metrics_stage.py [--events 200000]

Prints events/s of each, the ratio (with / without), and the stage's own time per
event, all measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import figure
from trail_append import synthetic_events

from listener.metrics import ServiceMetrics
from listener.model.event import Event
from listener.pipeline import Pipeline, Stage
from sinks.memory import MemoryTrail


async def through_pipeline(events: list[Event], with_metrics: bool) -> float:
    trail = MemoryTrail()
    stages: list[Stage] = [ServiceMetrics(Path("/nonexistent"))] if with_metrics else []
    pipeline = Pipeline(trail, stages=stages, batch_size=500)
    started = time.perf_counter()
    for event in events:
        await pipeline.put(event)
    await pipeline.aclose()
    return time.perf_counter() - started


async def stage_alone(events: list[Event]) -> float:
    """Seconds the stage itself takes over `events` in batches of 500 (no trail)."""
    metrics = ServiceMetrics(Path("/nonexistent"))
    started = time.perf_counter()
    for i in range(0, len(events), 500):
        batch = events[i : i + 500]
        await metrics.before_write(batch)
        await metrics.after_write(batch)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    events = list(synthetic_events(args.events))
    results: dict[bool, float] = {}
    for with_metrics in (False, True, False, True):  # interleaved: warm-up and drift cancel
        elapsed = asyncio.run(through_pipeline(events, with_metrics))
        results[with_metrics] = min(results.get(with_metrics, elapsed), elapsed)
    base, metered = results[False], results[True]
    print(f"events:          {args.events}")
    print(f"without metrics: {args.events / base:,.0f} events/s")
    print(f"with metrics:    {args.events / metered:,.0f} events/s")
    print(f"ratio with/without time: {metered / base:.3f}")
    figure("metrics_stage.events_per_s", args.events / metered, "events/s",
           baseline=args.events / base, ratio=base / metered)  # fmt: skip
    alone = asyncio.run(stage_alone(events))
    print(f"stage alone:     {alone / args.events * 1e6:.2f} us/event "
          f"({alone / base:.1%} of the pipeline's time without it)")  # fmt: skip


if __name__ == "__main__":
    main()
