"""An event read back from the trail is built by pydantic alone: no call back into
Python per event (a private attribute costs one, 40 % of a replayed event), and
the in-process launch stays out of what is dumped, hashed and compared.
"""

from __future__ import annotations

from listener.model.event import Actor, Event, Launch, canonical_json


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
