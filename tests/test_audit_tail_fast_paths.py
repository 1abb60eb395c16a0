"""The live audit tail's quick paths give what the paths they skip give, on hostile input:
docker CLI events and their `who` built without validating them again (against pydantic's
validation, as before), and redacted texts looked up before they are scanned (against a
fresh redaction of every text)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from config.errors import InputError
from config.models import AuditdConfig, InputConfig
from listener import redact
from listener.model.event import canonical_json
from listener.model.trusted import trusted
from listener.sources.auditd import unvalidated
from listener.sources.auditd.convert import AuditConverter, Converted
from listener.sources.auditd.names import IdNames
from listener.sources.auditparse import AuditEvent
from tests.test_auditd import assemble, file_lines

KEY = b"\x07" * 32
SURROGATE = b"\xed\xa0\x80"  # UTF-8 of a lone surrogate: not UTF-8, kept as \xNN escapes
RUN = ["docker", "run", "-d", "--name"]
ARGVS: list[list[str | bytes]] = [
    [*RUN, "c1", "-e", "PASSWORD=hunter2", "-eAPI_TOKEN=abc", "--env=DB_DSN=x", "img", "true"],
    ["docker", "login", "-u", "bob", "-p", "s3cret", "registry.example"],
    ["docker", "login", "--password=s3cret", "-ps3cret"],
    ["docker", "-H", "tcp://user:pw@host:2376", "swarm", "join", "--token", "SWMTKN-1-x"],
    ["docker", "exec", "db", "mysql", "-uroot", "-pS3CRET", "-e", "select 1"],
    ["docker", "exec", "web", "sh", "-c", "curl -u admin:pw http://x; redis-cli -a q"],
    ["docker", "exec", "web", "curl", "-H", "Authorization: Bearer tok123", "http://x"],
    [*RUN, "c2", "--entrypoint", "sh", "--label", "SECRET_KEY=v", "img", "-c", "mysql -pX"],
    ["docker", "build", "--build-arg", "NPM_TOKEN=abc", "--env-file", "/e", "."],
    [*RUN, "c3", "-e", "PASSWORD=" + "x" * 70_000, "img", "y" * 70_000],
    [*RUN, "c4", "img", "é" * 40_000, "naïve", "日本語", "😀"],
    [*RUN, b"c5" + SURROGATE, b"img" + SURROGATE, b"arg\xff", "-e", b"TOKEN=" + SURROGATE],
    [*RUN, "c6", "--memory", "9" * 30 + "g", "--pids-limit", "-" + "9" * 25, "img"],
    [*RUN, "c7", *(["--label", "k=v"] * 40), "--mount", "type=bind,src=/,dst=/h", "img"],
    [*RUN, "x" * 17_000, "--label", "ü" * 9_000 + "=v", "img"],
    ["docker"],
    ["docker", "run", "--name"],
    ["docker", "ps", "-a"],
    ["docker", "-H", "ssh://root:pw@10.0.0.1", "--context", "c", "run", "img"],
]
IDS: list[dict[str, object]] = [
    {},
    {"ppid": "9" * 23, "pid": "18446744073709551615", "auid": "4294967295", "ses": "9" * 30},
    {"uid": "-1", "euid": "9" * 20, "egid": "abc", "tty": "pts0", "exe": '"/usr/bin/dockér"'},
    {"exe": (b"/opt/\xff" + SURROGATE + b"d" * 70_000).hex().upper()},
]
CWDS: list[str | bytes] = ["/", "/home/ä", b"/tmp/\xff" + SURROGATE, "/" + "w" * 70_000]
NODES = [None, "host1", "hōst"]
TINY = InputConfig(max_field_bytes=64, max_depth=4)


def _encoded(value: str | bytes) -> str:
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    if data and all(0x21 <= b < 0x7F for b in data) and b'"' not in data:
        return '"' + data.decode("ascii") + '"'
    return data.hex().upper()


def _call_lines(serial: int, argv: list[str | bytes], ids: dict[str, object]) -> list[str]:
    stamp = f"{1795346000 + serial}.{serial % 1000:03d}:{serial}"
    fields: dict[str, object] = {"ppid": 1, "pid": 2, "auid": 1001, "uid": 0, "gid": 0}
    fields.update({"euid": 0, "egid": 0})
    fields.update({"tty": "(none)", "ses": 3, "exe": '"/usr/bin/docker"', **ids})
    named = " ".join(f"{k}={v}" for k, v in fields.items())
    enriched = '\x1dAUID="alice" UID="root" EUID="root" EGID="root"' if serial % 2 else ""
    args = " ".join(f"a{i}={_encoded(arg)}" for i, arg in enumerate(argv))
    node = NODES[serial % len(NODES)]
    lines = [
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 "
        f'items=1 {named} comm="docker" key="docker-cli"{enriched}',
        f"type=EXECVE msg=audit({stamp}): argc={len(argv)} {args}",
        f"type=CWD msg=audit({stamp}): cwd={_encoded(CWDS[serial % len(CWDS)])}",
        f"type=EOE msg=audit({stamp}): ",
    ]
    return [line if node is None else f"node={node} {line}" for line in lines]


def hostile_events() -> list[AuditEvent]:
    lines: list[str] = []
    serial = 1
    for _ in range(2):  # the second round: the calls come from the converter's cache
        for argv in ARGVS:
            for ids in IDS:
                lines += _call_lines(serial, argv, ids)
                serial += 1
    return assemble(lines)


def _shape(value: Any) -> Any:
    """A value with its exact types, its models' fields in order and their fields set."""
    if isinstance(value, BaseModel):
        fields = [(name, _shape(item)) for name, item in value.__dict__.items()]
        return (type(value), fields, sorted(value.model_fields_set), value.__pydantic_extra__)
    if isinstance(value, dict):
        return (type(value), [(_shape(k), _shape(v)) for k, v in value.items()])
    if isinstance(value, list):
        return (type(value), [_shape(item) for item in value])
    return (type(value), value)


def _outcome(converter: AuditConverter, events: list[AuditEvent]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        try:
            item = converter.convert_bounded(event)
        except InputError as exc:
            out.append(("error", str(exc)))
            continue
        out.append(_converted(item))
    return out


def _converted(item: Converted | None) -> Any:
    if item is None or item.event is None:
        return item
    event, call = item.event, item.call
    who_shared = call is not None and call.who is event.who
    canonical = canonical_json(event.content())
    return (_shape(event), canonical, who_shared, None if call is None else _shape(call.who))


def _converter(limits: InputConfig | None = None, host: str = "h1") -> AuditConverter:
    redactor = redact.Redactor(KEY)
    return AuditConverter(AuditdConfig(), host, IdNames(None, None), limits, redactor)


def _slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every docker CLI event and `who` validated by pydantic, as before the quick path."""
    monkeypatch.setattr(unvalidated, "_exact_who", lambda values: False)
    monkeypatch.setattr(unvalidated, "_exact_cli_event", lambda values: False)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []

    def counted(cls: type[Any], values: dict[str, Any], given: set[str]) -> Any:
        built.append(cls.__name__)
        return trusted(cls, values, given)

    monkeypatch.setattr(unvalidated, "trusted", counted)
    return built


class Host(str):
    """A caller's own str type: pydantic stores a plain str, so must the quick path."""

    def __format__(self, spec: str) -> str:
        return "formatted"


@pytest.mark.parametrize("limits", [None, TINY], ids=["default-limits", "tiny-limits"])
@pytest.mark.parametrize("host", ["h1", Host("h2")], ids=["str-host", "str-subclass-host"])
def test_cli_events_built_unvalidated_equal_the_validated_ones(
    monkeypatch: pytest.MonkeyPatch, limits: InputConfig | None, host: str
) -> None:
    events = hostile_events()
    built = _counting(monkeypatch)
    quick = _outcome(_converter(limits, host), events)
    assert built.count("Event") > 30 and built.count("Who") > 100  # the quick paths taken
    with monkeypatch.context() as slow_path:
        _slow(slow_path)
        slow = _outcome(_converter(limits, host), events)
    assert len(quick) == len(events) == len(slow)
    errors = [item for item in quick if isinstance(item, tuple) and item[0] == "error"]
    assert 0 < len(errors) < len(events) // 2
    for fast_item, slow_item in zip(quick, slow, strict=True):
        assert fast_item == slow_item


def test_who_of_file_events_built_unvalidated_equals_the_validated_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lines: list[str] = []
    names = ["daemon.json", "dä" * 40_000, "x" * 70_000, "ü b"]
    for serial, name in enumerate(names * 4, 1):
        exe = ["/usr/bin/dash", "/usr/bin/é", "/" + "e" * 70_000][serial % 3]
        stamp = f"{1795346000 + serial}.000:{serial}"
        lines += file_lines(
            stamp, "write", name, exe=exe, auid=serial * 7, enriched=serial % 2 == 0
        )
    events = assemble(lines)
    built = _counting(monkeypatch)
    quick = _outcome(_converter(TINY), events)
    assert built.count("Who") == len(events) == len(names) * 4
    with monkeypatch.context() as slow_path:
        _slow(slow_path)
        assert _outcome(_converter(TINY), events) == quick


def _mutables(value: Any) -> Iterator[int]:
    """The ids of every mutable container an event holds (model dicts and field sets too)."""
    if isinstance(value, BaseModel):
        yield id(value.__dict__)
        yield id(value.__pydantic_fields_set__)
        for item in value.__dict__.values():
            yield from _mutables(item)
    elif isinstance(value, dict | list):
        yield id(value)
        for item in value.values() if isinstance(value, dict) else value:
            yield from _mutables(item)


def test_cli_events_share_no_mutable_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each event its own dicts, lists, models and field sets: a later stage may change one."""
    converter, events = _converter(), []
    for audit_event in hostile_events():
        with contextlib.suppress(InputError):
            converted = converter.convert_bounded(audit_event)
            events.append(converted.event if converted else None)
    mutables = [ident for event in events if event is not None for ident in _mutables(event)]
    assert len(events) > 100 and len(mutables) == len(set(mutables))


TEXTS = [
    "docker run --rm --name churn-1 busybox true",
    "docker run -e PASSWORD=hunter2 img",
    "docker login -u bob -p s3cret registry",
    "sh -c 'mysql -uroot -pS3CRET; curl -u a:b http://x'",
    "curl -H 'Authorization: Bearer tok123' https://user:pw@host/x",
    "redis-cli -a secret ping; sshpass -p pw ssh host",
    "env API_TOKEN=x DB_DSN='postgres://u:p@h/db' cmd",
    "é PASSWORD=ü\udce9 -p",
    "PASSWORD=" + "x" * 3000,  # longer than the cached texts
    "x" * 3000 + " mysql -pZ",
    "",
    "=",
    "@",
]


class Evil(str):
    """Equal to every str and hashed like a cached secret text: must not reach the cache."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash(TEXTS[1])


def test_redacted_texts_looked_up_first_equal_a_fresh_redaction() -> None:
    redactor = redact.Redactor(KEY)
    for _ in range(3):  # first computed, then from the cache
        for text in TEXTS:
            assert redactor.text(text) == redact.Redactor(KEY)._redacted_text(text)
            assert "hunter2" not in redactor.text(text)
    evil = Evil("harmless")
    assert str.__str__(redactor.text(evil)) == "harmless"
    assert redactor.text(TEXTS[1]) == redact.Redactor(KEY)._redacted_text(TEXTS[1])
    assert TEXTS[8] not in redactor._texts
    assert all(type(text) is str for text in redactor._texts)


def test_the_text_cache_stays_bounded() -> None:
    redactor = redact.Redactor(KEY)
    for number in range(redact._CACHE_MAX * 2 + 7):
        assert redactor.text(f"docker ps {number}") == f"docker ps {number}"
        assert len(redactor._texts) <= redact._CACHE_MAX
