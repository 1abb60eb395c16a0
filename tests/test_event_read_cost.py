"""An event read back from the trail is built by pydantic alone: no call back into
Python per event (a private attribute costs one, about a tenth of reading an
event back), and the in-process launch stays out of what is dumped, hashed and
compared; a row read back carries its chain hashes as set fields.
"""

from __future__ import annotations

from pathlib import Path

from listener.model.event import GENESIS_HASH, Actor, Event, Launch, canonical_json
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail


def event() -> Event:
    return Event(
        id="e1",
        time_ns=1,
        source="docker",
        host="h1",
        type="container",
        action="create",
        actor=Actor(id="c" * 64, name="web-1"),
    )


def test_building_an_event_calls_no_python_hook() -> None:
    assert Event.__pydantic_post_init__ is None
    assert Event.__private_attributes__ == {}


def test_the_launch_is_kept_in_process_only() -> None:
    stored = event()
    assert stored.launch is None
    launch = Launch(entrypoint=("nginx",), command=("-g", "daemon off;"))
    stored.note_launch(launch)
    assert stored.launch is launch
    assert "launch" not in canonical_json(stored.content())
    read_back = Event.model_validate_json(stored.model_dump_json())
    assert read_back.launch is None
    assert read_back == stored  # the launch is not part of the event's value


def test_a_row_read_back_carries_its_hashes_as_set_fields(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append([event()])
        (read_back,) = trail.query(EventFilter())
        stored = trail.get(1)
    assert stored is not None
    assert read_back.prev_hash == GENESIS_HASH
    assert read_back.hash is not None and len(read_back.hash) == 64
    assert {"prev_hash", "hash"} <= read_back.model_fields_set
    assert read_back.model_dump() == stored.model_dump()
