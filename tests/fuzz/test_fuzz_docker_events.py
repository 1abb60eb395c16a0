"""Property: the Docker event normalizer and file reader never raise, and whatever
they hand out can be stored; every line is an event or a malformed report."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from config.errors import InputError
from config.models import InputConfig
from listener.model.event import Event, canonical_json, chain_hash
from listener.sources.docker import normalize_engine_event, read_events_file

LIMITS = InputConfig(max_line_bytes=4096, max_field_bytes=256)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(1 << 80), max_value=1 << 80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=300)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
strings = st.text(max_size=40) | st.sampled_from(
    ["container", "image", "network", "volume", "exec_start: sh -c id", "die"]
)
attributes = st.dictionaries(st.text(max_size=300), st.text(max_size=300) | json_values, max_size=6)
actors = st.fixed_dictionaries(
    {}, optional={"ID": strings | json_values, "Attributes": attributes | json_values}
)
raw_events = st.fixed_dictionaries(
    {},
    optional={
        "Type": strings | json_values,
        "Action": strings | json_values,
        "Actor": actors | json_values,
        "scope": st.sampled_from(["local", "swarm"]) | json_values,
        "time": st.integers(min_value=-10, max_value=1 << 70) | st.floats() | json_values,
        "timeNano": st.integers(min_value=-10, max_value=1 << 90) | json_values,
        "status": json_values,
    },
)


def assert_storable(event: Event) -> None:
    body = canonical_json(event.content())
    chain_hash("0" * 64, body)  # raises on what SQLite's UTF-8 text cannot hold
    assert 0 <= event.time_ns < 1 << 63
    Event.model_validate_json(body)  # what the trail reads back


@given(raw_events)
def test_normalize_returns_a_storable_event_or_input_error(raw: dict[str, Any]) -> None:
    try:
        event = normalize_engine_event(raw, "h1", LIMITS)
    except InputError:
        return
    assert_storable(event)


lines = (
    raw_events.map(lambda raw: json.dumps(raw, allow_nan=True))
    | st.text(max_size=200).filter(lambda t: "\n" not in t and "\r" not in t)
    | st.binary(max_size=200).map(lambda b: b.decode("latin-1").replace("\n", " "))
    | st.sampled_from(["", "   ", "[" * 3000, "{}{}", '{"Type":"container"}' * 3, "x" * 5000])
)


@given(st.lists(lines, max_size=12))
def test_every_line_is_an_event_or_a_report(text_lines: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes("\n".join(text_lines).encode("utf-8", "surrogatepass"))
        items = list(read_events_file(path, "h1", limits=LIMITS))
    reported = {item.line for item in items if isinstance(item, InputError)}
    events = [item for item in items if isinstance(item, Event)]
    for event in events:
        assert_storable(event)
    non_blank = [n for n, line in enumerate(text_lines, 1) if line.removeprefix("\ufeff").strip()]
    assert len(items) >= len(non_blank)  # at least one thing per line
    assert reported <= set(range(1, len(text_lines) + 1))
