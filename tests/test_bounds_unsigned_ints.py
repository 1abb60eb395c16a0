"""Integers between 2**63 and 2**64 in attributes or config: refused like any beyond 64 bits.

orjson writes unsigned 64-bit integers, so a quick look by orjson alone let them
through; SQLite's INTEGER (and every reader of the trail) holds signed 64 bits.
"""

from __future__ import annotations

import pytest

from config.errors import InputError
from listener.bounds import bound_event
from listener.model.event import Event, Who

BASE = {"id": "e", "time_ns": 1, "source": "docker", "host": "h", "type": "t", "action": "a"}


@pytest.mark.parametrize("value", [1 << 63, (1 << 64) - 1, -(1 << 63) - 1])
@pytest.mark.parametrize("part", ["attributes", "config"])
def test_an_integer_outside_signed_64_bits_is_refused(part: str, value: int) -> None:
    # a long command elsewhere: the event as a whole takes the careful way, the part does not
    event = Event(**BASE, who=Who(command="x" * 70_000), **{part: {"nested": {"n": value}}})
    with pytest.raises(InputError, match="outside 64 bits"):
        bound_event(event)


@pytest.mark.parametrize("value", [(1 << 63) - 1, -(1 << 63), (1 << 53) + 1])
def test_an_integer_inside_signed_64_bits_is_kept(value: int) -> None:
    event = bound_event(Event(**BASE, who=Who(command="x" * 70_000), attributes={"n": value}))
    assert event.attributes["n"] == value
