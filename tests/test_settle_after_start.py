"""After its start, `run` leaves the restored states to the permanent generation: the
collector never walks a big host's state objects again (bench/growth.py measures the
memory this hands back)."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from listener.app import settle_after_start


@dataclass(slots=True)
class Restored:
    name: str


def test_what_the_start_restored_is_frozen() -> None:
    thresholds = gc.get_threshold()
    states = [Restored(f"c{i}") for i in range(5_000)]
    frozen_before = gc.get_freeze_count()
    try:
        settle_after_start()
        assert gc.get_freeze_count() >= frozen_before + len(states)
        walked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
        assert not any(id(state) in walked for state in states)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
