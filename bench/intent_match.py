"""Cost of intent matching in the pipeline: the intent stage over batches of creates.

    .venv/bin/python bench/intent_match.py [--creates 20000] [--batch 500] [--ended 5000]

A SQLite trail holds 0, 10, 100 and 1000 declared intents (name patterns, a
tenth of them closed); batches of container creates go through
`IntentStage.before_write` (the refresh of intents from the trail, then a
match per create). Prints creates/s for each, and the ratio to the stage with
no intents declared (the baseline, measured in the same run).

Then a host's history: 100 open intents and `--ended` that expired 59 days
ago, through `run`'s stage (which skips intents ended over a week ago) and
`ingest`'s (which tries them all), each against the 100 open ones alone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from figures import figure

from listener.intents import IntentBook, IntentSpec, IntentStage, close_event, declare_event
from listener.model.event import Actor, Event, Who, natural_id
from sinks.sqlite import SQLiteTrail

_NS = 1_000_000_000


def _creates(count: int, start_ns: int) -> list[Event]:
    return [
        Event(
            id=natural_id("bench", i),
            time_ns=start_ns + i,
            source="docker",
            host="h",
            type="container",
            action="create",
            actor=Actor(id=f"{i:064x}", name=f"svc{i % 2000}-{i}", image=f"reg/app{i % 50}:1"),
        )
        for i in range(count)
    ]


def _declare(trail: SQLiteTrail, intents: int, now: int, ended: int = 0) -> None:
    """`intents` open ones (a tenth closed at once), and `ended` that expired 59 days ago."""
    events = []
    for i in range(ended):
        spec = IntentSpec(name=f"old{i}-*", who="deploy", why=f"rollout {i}", expires="1d")
        long_ago = now - 60 * 24 * 3600 * _NS + i
        events.append(declare_event(spec, host="h", declared_by=Who(), via="cli", now_ns=long_ago))
    for i in range(intents):
        spec = IntentSpec(name=f"svc{i}-*", who="deploy", why=f"rollout {i}", expires="30d")
        event = declare_event(spec, host="h", declared_by=Who(), via="cli", now_ns=now + i)
        events.append(event)
        if i % 10 == 9:
            events.append(close_event(event.actor.id, host="h", closed_by=Who(), via="cli",
                                      now_ns=now + i))  # fmt: skip
    trail.append(events)


async def _measure(
    path: Path, intents: int, creates: int, batch: int, ended: int = 0, live: bool = False
) -> float:
    now = time.time_ns() - 3600 * _NS
    trail = SQLiteTrail(path)
    async with trail:
        await trail.call(lambda t: _declare(t, intents, now, ended))
        stage = IntentStage(trail, IntentBook(), live=live)
        events = _creates(creates, now + 60 * _NS)
        started = time.perf_counter()
        for offset in range(0, creates, batch):
            await stage.before_write(events[offset : offset + batch])
        elapsed = time.perf_counter() - started
    matched = sum(e.why.source == "intent" for e in events)
    history = f" and {ended} ended ({'run' if live else 'ingest'})" if ended else ""
    print(
        f"  {intents:5} intents{history}: {creates / elapsed:10.0f} creates/s  ({matched} matched)"
    )
    return creates / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--creates", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--ended", type=int, default=5000, help="intents ended long ago")
    args = parser.parse_args()
    print(f"intent stage over {args.creates} creates in batches of {args.batch}:")
    with tempfile.TemporaryDirectory() as tmp:
        rates = {
            n: asyncio.run(_measure(Path(tmp) / f"t{n}.db", n, args.creates, args.batch))
            for n in (0, 10, 100, 1000)
        }
    base = rates[0]
    for n, rate in rates.items():
        print(f"  {n:5} intents: {rate / base:5.2f} x the rate with none")
        figure(f"intent_match.intents_{n}", rate, "creates/s", baseline=base, ratio=rate / base)
    # A host that declares an intent per deploy: 100 open, thousands ended long ago.
    # `run` tries only the last week's (listener.intents.ENDED_TRIED_NS): flat, ~1.0x
    # the 100 open alone; ingest tries them all (a capture's creates may be of any age).
    with tempfile.TemporaryDirectory() as tmp:
        for live in (True, False):
            name = "run" if live else "ingest"
            rate = asyncio.run(
                _measure(Path(tmp) / f"h{name}.db", 100, args.creates, args.batch, args.ended, live)
            )
            ratio = rate / rates[100]
            print(f"  history ({name}): {ratio:5.2f} x the rate with the 100 open ones alone")
            figure(
                f"intent_match.history_{name}",
                rate,
                "creates/s",
                baseline=rates[100],
                ratio=ratio,
            )


if __name__ == "__main__":
    main()
