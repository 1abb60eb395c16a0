"""Engine events are normalised without validating them twice, and nothing else changes:
every bad field still gets its clear error with its line (the good records around it
kept), the events are the ones pydantic would build, the bounds' quick look agrees with
the walk, and lines decoded by orjson give the standard library's values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from config.errors import InputError
from config.models import InputConfig
from listener import bounds
from listener.bounds import bound_event
from listener.coverage import FixedCoverage, mark_uncovered
from listener.model.event import Actor, Event, Who, Why
from listener.sources import docker
from listener.sources.docker import normalize_engine_event, read_events_file
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a" / "events.jsonl"
GOOD = (
    '{"Type":"container","Action":"start","Actor":{"ID":"c0ffee","Attributes":'
    '{"image":"img:1","name":"box"}},"scope":"local","time":1795346502,'
    '"timeNano":17953465026555%05d}'
)

# Each bad field and the error it has always had (pinned from the code before).
BAD_RECORDS = {
    '{"Action":"start","timeNano":1}': "missing Type",
    '{"Type":5,"Action":"start","timeNano":1}': "Type must be a non-empty string, got 5",
    '{"Type":123456789012345678901234567890,"Action":"start","timeNano":1}': (
        "Type must be a non-empty string, got 123456789012345678901234567890"
    ),
    '{"Type":" ","Action":"start","timeNano":1}': "Type must be a non-empty string, got ' '",
    '{"Type":"container","timeNano":1}': "missing Action",
    '{"Type":"container","Action":-99999999999999999999999,"timeNano":1}': (
        "Action must be a non-empty string, got -99999999999999999999999"
    ),
    '{"Type":"container","Action":"start","Actor":[],"timeNano":1}': (
        "Actor must be an object, got array"
    ),
    '{"Type":"container","Action":"start","Actor":{"ID":7},"timeNano":1}': (
        "Actor.ID must be a string, got number"
    ),
    '{"Type":"container","Action":"start","Actor":{"ID":"c","Attributes":["a"]},"timeNano":1}': (
        "Actor.Attributes must be an object, got array"
    ),
    '{"Type":"container","Action":"start","Actor":{"ID":"c","Attributes":{"a":1}},"timeNano":1}': (
        "Actor.Attributes.a must be a string, got number"
    ),
    '{"Type":"container","Action":"x","Actor":{"ID":"c","Attributes":{"a":null}},"timeNano":1}': (
        "Actor.Attributes.a must be a string, got null"
    ),
    '{"Type":"container","Action":"start","timeNano":-1}': (
        "timeNano must be a non-negative integer, got -1"
    ),
    '{"Type":"container","Action":"start","timeNano":true}': (
        "timeNano must be a non-negative integer, got True"
    ),
    '{"Type":"container","Action":"start","timeNano":1.5}': (
        "timeNano must be a non-negative integer, got 1.5"
    ),
    '{"Type":"container","Action":"start","timeNano":123456789012345678901234567890}': (
        "time 123456789012345678901234567890 ns is outside 1970..2200"
    ),
    '{"Type":"container","Action":"start","timeNano":9223372036854775807}': (
        "time 9223372036854775807 ns is outside 1970..2200"
    ),
    '{"Type":"container","Action":"start"}': "missing timeNano and time",
    '{"Type":"container","Action":"start","time":"now"}': (
        "time must be a non-negative number, got 'now'"
    ),
    '{"Type":"container","Action":"start","time":NaN}': "time must be a finite number, got nan",
    '{"Type":"container","Action":"start","time":1e400}': "time must be a finite number, got inf",
    '{"Type":"container","Action":"start","time":123456789012345678901234567890}': (
        "time 123456789012345678901234567890 s is outside 1970..2200"
    ),
    '{"Type":"container","Action":"start","scope":1,"timeNano":1}': (
        "scope must be a string, got number"
    ),
    '{"Type":"container","Action":"start","Actor":{"ID":"c","Attributes":{"l":"\\ud800"}},'
    '"timeNano":1}': "attributes.labels.l: not valid Unicode (a lone surrogate)",
    '{"Type":"container","Action":"start","Actor":{"ID":"c","Attributes":{"name":"x\\udfff"}},'
    '"timeNano":1}': "actor.name: not valid Unicode (a lone surrogate)",
    "[1,2]": "expected a JSON object, got array",
    '{"Type":': "invalid JSON: Expecting value (column 9)",
    GOOD % 99999 + '{"Type":1}': "Type must be a non-empty string, got 1",
}


def test_each_bad_field_gets_its_error_with_its_line_and_loses_nothing_else(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    expected: list[Any] = []
    for number, (bad, reason) in enumerate(BAD_RECORDS.items()):
        lines += [GOOD % number, bad]
        expected += ["event", (len(lines), reason)]
    lines.append(GOOD % 77777)
    expected.append("event")
    expected.insert(-2, "event")  # the good object before the bad one on the last bad line
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    found = [
        (item.line, item.reason) if isinstance(item, InputError) else "event"
        for item in read_events_file(path, "h1")
    ]
    assert found == expected


# ------------------------------------------------------------------ the models


def assert_as_validated(model: BaseModel) -> None:
    """`model` is what pydantic would have built: a revalidated copy is identical."""
    again = type(model).model_validate(model.model_dump(exclude_unset=True))
    assert list(model.__dict__) == list(again.__dict__)
    assert model.__dict__ == again.__dict__
    assert model.model_fields_set == again.model_fields_set
    assert model.__pydantic_extra__ is None and model.__pydantic_private__ is None
    for name, value in model.__dict__.items():
        if isinstance(value, BaseModel):
            assert_as_validated(value)
        elif isinstance(value, str | int) and value is not None:
            assert type(value) in (str, int, bool), name


class Text(str):
    pass


class Number(int):
    pass


def hostile() -> list[dict[str, Any]]:
    labels = {
        "audit.who": " alice ",
        "audit.why": "deploy",
        "audit.ticket": "T-1",
        "DB_PASSWORD": "hunter2",
        "url": "https://u:pw@registry/x",
        "note": "é" * 10,
    }
    return [
        {"Type": "container", "Action": "create", "timeNano": 10**18,
         "Actor": {"ID": "c" * 64, "Attributes": {"image": "nginx", "name": "web", **labels}}},
        {"Type": "container", "Action": "exec_start: sh -c 'TOKEN=x id'", "timeNano": 10**18 + 1,
         "Actor": {"ID": "c" * 64, "Attributes": {"execID": "e1", "name": "web"}}},
        {"Type": "image", "Action": "untag", "time": 1795346502.25,
         "Actor": {"ID": "sha256:" + "a" * 64, "Attributes": {}}},
        {"Type": "volume", "Action": "create", "scope": "local", "time": 1795346502,
         "Actor": {"ID": "data", "Attributes": {"driver": "local"}}},
        {"Type": "daemon", "Action": "reload", "timeNano": 10**18 + 2,
         "Actor": {"ID": "d", "Attributes": {"labels": "[a=b]", "name": "host"}}},
        {"Type": "container", "Action": "prune", "timeNano": 10**18 + 3},
        {"Type": Text("container"), "Action": Text("start"), "timeNano": Number(10**18 + 4),
         "Actor": {"ID": Text("c1"), "Attributes": {"name": Text("w"), "image": Text("i")}}},
        {"Type": "container", "Action": "start", "timeNano": 10**18 + 5,
         "Actor": {"ID": "c2", "Attributes": {"name": "n", "big": "x" * 70_000}}},
    ]  # fmt: skip


def scenario() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SCENARIO.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("source", ["scenario", "hostile"])
def test_events_are_the_ones_pydantic_builds(source: str) -> None:
    raws = scenario() if source == "scenario" else hostile()
    for raw in raws:
        event = normalize_engine_event(raw, Text("h1"))
        assert_as_validated(event)
        assert type(event.host) is str


def test_a_label_is_a_claim_and_long_values_are_cut_as_before() -> None:
    created, _exec, *_rest, cut = (normalize_engine_event(raw, "h1") for raw in hostile())
    assert created.who.claimed == "alice" and created.who.login is None
    assert created.who.model_fields_set == {"claimed"}
    assert created.why.source == "label" and created.why.reason == "deploy"
    assert created.attributes["labels"]["DB_PASSWORD"].startswith("redacted:hmac:")
    assert created.attributes["labels"]["note"] == "é" * 10
    assert len(cut.attributes["labels"]["big"]) == InputConfig().max_field_bytes
    assert cut.attributes["truncated"] == {
        "attributes.labels.big": {"size": 70_000, "cap": InputConfig().max_field_bytes}
    }


def test_normalizing_runs_no_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for model in (Event, Actor, Who, Why):
        real = model.__pydantic_validator__

        class Counting:
            def __init__(self, real: Any, name: str) -> None:
                self.real, self.name = real, name

            def validate_python(self, *args: Any, **kwargs: Any) -> Any:
                calls.append(self.name)
                return self.real.validate_python(*args, **kwargs)

        monkeypatch.setattr(model, "__pydantic_validator__", Counting(real, model.__name__))
    Who()  # the counting is live
    assert calls == ["Who"]
    calls.clear()
    for raw in scenario()[:50]:
        normalize_engine_event(raw, "h1")
    assert calls == []


# ------------------------------------------------------------------ bounds


def walked(event: Event, limits: InputConfig, monkeypatch: pytest.MonkeyPatch) -> Any:
    """`bound_event` by the full walk alone (the quick look turned off)."""
    with monkeypatch.context() as patched:
        patched.setattr(bounds, "_nothing_to_bound", lambda _event, _limits: False)
        try:
            return bound_event(event, limits).model_dump()
        except InputError as exc:
            return exc.reason


def bound_cases() -> list[Event]:
    base = {"id": "e", "time_ns": 1, "source": "auditd", "host": "h", "type": "t", "action": "a"}
    return [
        Event(**base, attributes={"a": "x", "n": {"k": "v"}}),
        Event(**base, attributes={"a": "é" * 20_000}),
        Event(**base, attributes={"a": "x" * 20_000}),
        Event(**base, attributes={"a": "\ud800"}),
        Event(**base, attributes={"k\ud800": "v"}),
        Event(**base, attributes={"a": 1 << 63}),
        Event(**base, attributes={"a": (1 << 64) - 1}),
        Event(**base, attributes={"a": 1 << 70}),
        Event(**base, attributes={"a": [[[[[[["deep"]]]]]]]}),
        Event(**base, attributes={"a": {"b": {"c": {"d": {"e": "deep"}}}}}),
        Event(**base, attributes={"a": "[[[[{{{{"}, config={"b": ["x"]}),
        Event(**base, who=Who(uid=1 << 63, login="root")),
        Event(**base, who=Who(uid=(1 << 53) + 1, candidates=["a", "b"])),
        Event(**base, who=Who(command="x" * 70_000)),
        Event(**base, actor=Actor(id="\udfff")),
        Event(**base | {"host": "h" * 70_000}),
        Event(**base, config={"f": float("nan"), "t": True, "n": None}),
    ]


@pytest.mark.parametrize("index", range(len(bound_cases())))
def test_the_quick_look_agrees_with_the_walk(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    limits = InputConfig(max_field_bytes=64 * 1024, max_depth=4)  # the least depth allowed
    expected = walked(bound_cases()[index], limits, monkeypatch)
    try:
        found: Any = bound_event(bound_cases()[index], limits).model_dump()
    except InputError as exc:
        found = exc.reason
    assert repr(found) == repr(expected)  # NaN is not equal to itself


def test_the_usual_events_need_only_the_quick_look() -> None:
    events = [normalize_engine_event(raw, "h1") for raw in scenario()]
    assert all(bounds._nothing_to_bound(event, InputConfig()) for event in events)
    limits = InputConfig(max_field_bytes=64 * 1024, max_depth=4)
    quick = [i for i, event in enumerate(bound_cases()) if bounds._nothing_to_bound(event, limits)]
    assert quick == [0, 16]  # plain strings and what the walk leaves alone (NaN, True, None)


# ------------------------------------------------------------------ decoding


LINES: list[str | bytes] = [
    GOOD % 1,
    '{"timeNano":123456789012345678901234567890,"Type":"c"}',
    '{"Type":"c","Action":"a","timeNano":18446744073709551616}',
    '{"Type":"c","Action":"a","time":-9223372036854775809}',
    '{"Type":1e400,"Action":NaN}',
    '{"Type":"c","Action":"a","time":1795346502.75}',
    '{"Type":"c","Action":"a","timeNano":1,"scope":123456789012345678901234567890}',
    '{"Type":"c","Action":"a","timeNano":1,"Actor":{"ID":-123456789012345678901234567890}}',
    '{"Type":"c","Action":"a","timeNano":1,"Actor":{"ID":"i","Attributes":{"x":1e400}}}',
    '{"Type":"c","Action":"a","timeNano":1,"status":123456789012345678901234567890}',
    '{"Type":"c","Action":"a","Type":"d","timeNano":2.5,"timeNano":3}',
    '{"Type":"c","Action":"a","timeNano":1,"Actor":{"ID":"i","Attributes":{"x":"\\ud800"}}}',
    '{"Type":"c","Action":"a","timeNano":1,"Actor":{"ID":"\\u00e9\\ud83d\\ude00"}}',
    '{"Type":"c","Action":"a","timeNano":1}{"Type":"c","Action":"b","timeNano":2} {"x":3}',
    "[" * 5000 + "]" * 5000,
    '"just text"',
    "-0",
    "\ufeff" + GOOD % 2,  # a BOM on the first line
    GOOD % 3 + "\x0c",  # white space to Python, not to JSON
    "\xa0" + GOOD % 4,
    " \t" + GOOD % 5 + " \r",
]


def outcome(path: Path) -> list[Any]:
    return [
        (item.line, item.reason) if isinstance(item, InputError) else item.model_dump()
        for item in read_events_file(path, "h1")
    ]


BAD_UTF8: list[str | bytes] = [
    b'{"Type":"c","Action":"a","timeNano":1,"Actor":{"ID":"\xed\xa0\x80"}}',  # a surrogate
    b'{"Type":"c","Action":"a","timeNano":1,"Actor":{"ID":"\xc0\xaf"}}',  # overlong
    b'{"Type":"c","Action":"\xe9","timeNano":1}',  # Latin-1
]


@pytest.mark.parametrize("text", LINES + BAD_UTF8)
def test_lines_read_by_orjson_give_what_the_standard_library_gives(
    text: str | bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    found = outcome(path)
    monkeypatch.setattr(docker, "_decode_one", lambda _data: None)  # the standard library alone
    assert repr(found) == repr(outcome(path))


def test_an_event_no_audit_source_covered_says_why_as_validated() -> None:
    claimed, unclaimed = (normalize_engine_event(raw, "h1") for raw in hostile()[:2])
    for event in (claimed, unclaimed):
        mark_uncovered(event, FixedCoverage("no audit log read"))
        assert event.who.method == "unavailable"
        assert event.who.reason == "no audit log read"
        assert_as_validated(event)
    assert claimed.who.claimed == "alice" and unclaimed.who.claimed is None
    assert claimed.who.model_fields_set == {"method", "reason", "claimed"}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"Type":"c\\ud800","Action":"start","timeNano":1}', "Type"),
        ('{"Type":"container","Action":"exec_start: \\udc00","timeNano":1}', "Action"),
        ('{"Type":"container","Action":"start","Actor":{"ID":"\\ud800"},"timeNano":1}', "Actor.ID"),
    ],
)
def test_a_lone_surrogate_in_what_makes_the_id_is_one_bad_line(
    bad: str, reason: str, tmp_path: Path
) -> None:
    """It used to stop the whole ingest (the id could not be made): now one bad record."""
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([GOOD % 1, bad, GOOD % 2]) + "\n")
    found = [
        (item.line, item.reason) if isinstance(item, InputError) else "event"
        for item in read_events_file(path, "h1")
    ]
    assert found == ["event", (2, f"{reason}: not valid Unicode (a lone surrogate)"), "event"]
