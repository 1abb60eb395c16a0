"""bench/growth.py's generated host: each round removes what the previous round left, so the
host keeps a handful of containers however long its trail (issue #20: `run`'s memory
follows the containers a host keeps; bench/live_state.py measures that apart)."""

from __future__ import annotations

from listener.sources.docker import normalize_engine_event
from listener.sources.docker_state import KnownState
from tests.shared_data import require_shared
from tests.test_bulk_trail import _load


def _known_after(rounds: int) -> KnownState:
    require_shared("fixtures", "scenario-a", "events.jsonl")
    mix = _load("growth").load_mix()
    per_round = len(mix.template) + len(mix.removals)
    raws = list(mix.rounds(0, len(mix.template) + (rounds - 1) * per_round))
    times = [raw["timeNano"] for raw in raws]
    assert times == sorted(times)
    return KnownState.from_events(normalize_engine_event(raw, "h") for raw in raws)


def test_the_containers_left_are_those_of_the_last_round_only() -> None:
    one, many = _known_after(1), _known_after(40)
    assert len(one.containers) == len(many.containers) == 4
    assert {c.name for c in many.containers.values()} == {
        f"{str(c.name).removesuffix('-0')}-39" for c in one.containers.values()
    }


def test_a_running_leftover_dies_before_it_is_destroyed() -> None:
    require_shared("fixtures", "scenario-a", "events.jsonl")
    removals = _load("growth").load_mix().removals
    by_name: dict[str, list[str]] = {}
    for raw in removals:
        by_name.setdefault(raw["Actor"]["Attributes"]["name"], []).append(raw["Action"])
    assert by_name == {
        "debug-priv": ["destroy"],  # created, never started
        "sock-mounter": ["die", "destroy"],
        "hostnet": ["die", "destroy"],
        "miner": ["die", "destroy"],
    }


def test_the_live_state_bench_keeps_every_container_it_creates() -> None:
    require_shared("fixtures", "scenario-a", "events.jsonl")
    live = _load("live_state")
    raws = list(live.live_events(_load("growth").load_mix().template, 500))
    assert [raw["Action"] for raw in raws[:4]] == ["create", "start", "create", "start"]
    known = KnownState.from_events(normalize_engine_event(raw, "h") for raw in raws)
    assert len(known.containers) == 500
    assert {c.state for c in known.containers.values()} == {"running"}
