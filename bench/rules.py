"""Throughput of the rules: every rule over a trail of synthetic events.

    .venv/bin/python bench/rules.py [--events 1000000] [--dir DIR]

Builds a trail of N realistic events (container lifecycles with configs,
execs, image pulls; 4 % privileged or with added capabilities), then in the
same run measures:

- reading every event back from the trail (the baseline: what replay costs
  without rules);
- `replay_trail`: reading plus every rule, the path of `docktrail replay`;
- the rules alone on events already in memory (what the live pipeline adds
  per batch), under the service's collector settings (`listener.app.tuned_runtime`)
  as the live pipeline runs.

Each read is timed `--repeat` times, interleaved with the others, and the
fastest of each kind is the figure (a slow spell of a shared machine hits one
run, not the comparison).

Each measurement starts from a collected heap, so that none inherits the
collector's state (how much the previous one left to walk) from another.
Prints events/s for each and the ratio of replay to the plain read.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import figure
from trail_append import synthetic_events

from config.models import RulesConfig
from listener.app import tuned_runtime
from listener.model.containerconfig import ContainerConfig, Mount
from listener.model.event import Event
from listener.rules.engine import RuleEngine, replay_trail
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail

T = TypeVar("T")
RULES = RulesConfig.model_validate(
    {"untrusted-image": {"trusted": ["docker.io/library/*", "registry.internal/*"]}}
)


def rule_events(count: int) -> Iterator[Event]:
    """The trail benchmark's stream, with container configs in the contract's shape."""
    for event in synthetic_events(count):
        if event.config:
            event.config = _contract_config(event.config)
        yield event


def _contract_config(raw: dict[str, object]) -> dict[str, object]:
    source, destination, mode = str(raw["mounts"][0]).split(":")  # type: ignore[index]
    return ContainerConfig(
        origin="inspect",
        privileged=bool(raw["privileged"]),
        cap_add=list(raw["cap_add"]),  # type: ignore[call-overload]
        mounts=[Mount(source=source, destination=destination, mode=mode, read_only=True)],
        network_mode=str(raw["network_mode"]),
        read_only_rootfs=bool(raw["read_only"]),
        user=str(raw["user"]) or None,
        memory_bytes=int(raw["memory"]) or None,  # type: ignore[call-overload]
        pids_limit=raw["pids_limit"],  # type: ignore[arg-type]
    ).as_event_config()


def build(path: Path, count: int) -> float:
    started = time.perf_counter()
    batch: list[Event] = []
    with SQLiteTrail(path, durability="normal") as trail:
        for event in rule_events(count):
            batch.append(event)
            if len(batch) == 5_000:
                trail.append(batch)
                batch = []
                print(f"\rbuilding trail: {trail.count():,}/{count:,}", end="", file=sys.stderr)
        if batch:
            trail.append(batch)
    print(file=sys.stderr)
    return time.perf_counter() - started


def timed_read(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with SQLiteTrail(path) as trail:
        seen = sum(1 for _ in trail.query(EventFilter()))
    return time.perf_counter() - started, seen


def timed_plain_read(path: Path) -> float:
    """The rows decoded as JSON, no model: what reading the trail costs at the least."""
    started = time.perf_counter()
    with sqlite3.connect(path) as conn:
        for row in conn.execute("SELECT seq, body, prev_hash, hash FROM events ORDER BY seq"):
            orjson.loads(row[1])
    return time.perf_counter() - started


def timed_replay(path: Path) -> tuple[float, int]:
    started = time.perf_counter()
    with SQLiteTrail(path) as trail:
        found = replay_trail(trail, RULES)
    return time.perf_counter() - started, len(found)


def timed_rules_only(count: int) -> float:
    events = list(rule_events(count))
    for seq, event in enumerate(events, 1):
        event.seq = seq
    engine = RuleEngine(RULES, attribution_available=True)
    with tuned_runtime():
        started = time.perf_counter()
        engine.alerts_for(events)
        return time.perf_counter() - started


def collected(measure: Callable[[], T]) -> T:
    """`measure()` from a collected heap."""
    gc.collect()
    return measure()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, help="where the trail goes (temp dir)")
    parser.add_argument("--repeat", type=int, default=3, help="reads and replays; the fastest")
    args = parser.parse_args()
    if args.dir is not None:  # kept, to look at afterwards
        measure(args.dir / "rules.db", args.events, args.repeat)
        return
    with tempfile.TemporaryDirectory(prefix="docktrail-rules-") as folder:
        measure(Path(folder) / "rules.db", args.events, args.repeat)


def measure(path: Path, n: int, repeat: int) -> None:
    built = build(path, n)
    print(f"{n:,} events; trail built in {built:.1f} s ({n / built:,.0f} ev/s appended)")
    plain, read, replay = [], [], []
    for _ in range(repeat):  # interleaved: a slow spell of the machine hits all three
        plain.append(collected(lambda: timed_plain_read(path)))
        read.append(collected(lambda: timed_read(path)))
        replay.append(collected(lambda: timed_replay(path)))
    plain_secs = min(plain)
    read_secs, seen = min(read)
    replay_secs, alerts = min(replay)
    only = min(n, 200_000)
    rules_secs = collected(lambda: timed_rules_only(only))
    print(f"read back (baseline)     {seen / read_secs:>10,.0f} ev/s")
    print(f"replay: read + 15 rules  {n / replay_secs:>10,.0f} ev/s   {alerts:,} alerts   "
          f"ratio {read_secs / replay_secs:.2f}x of the read back")  # fmt: skip
    figure("rules.replay", n / replay_secs, "events/s", baseline=seen / read_secs,
           ratio=read_secs / replay_secs, target="ratio>=0.5")  # fmt: skip
    figure("rules.replay_vs_plain_read", n / replay_secs, "events/s", baseline=n / plain_secs,
           ratio=plain_secs / replay_secs, target="ratio>=0.5")  # fmt: skip
    figure("rules.read_vs_plain_read", seen / read_secs, "events/s", baseline=n / plain_secs,
           ratio=plain_secs / read_secs)  # fmt: skip
    print(f"rules alone (in memory)  {only / rules_secs:>10,.0f} ev/s   ({only:,} events)")
    figure("rules.in_memory", only / rules_secs, "events/s")


if __name__ == "__main__":
    main()
