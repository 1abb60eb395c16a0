"""Bounds on input: line length, field size, integer range, time window, nesting.

Every source hands its events through `bound_event` before they reach the
trail, and reads its files through `listener.sources.lines.bounded_lines`, so that no single record
(hostile or broken) can stop an ingest, exhaust memory or make SQLite refuse a
whole batch:

* A line longer than `max_line_bytes` is skipped in bounded memory (a gzip
  bomb that expands to one 1 GB line included) by `listener.sources.lines`:
  one malformed line with its number and size.
* A string longer than `max_field_bytes` (UTF-8) is cut at a character
  boundary; the event records the cap and the original size under
  `attributes.truncated` (`{"attributes.labels.big": {"size": N, "cap": C}}`).
* Integers outside signed 64 bits (SQLite's INTEGER), times outside
  1970..2200 and nesting deeper than `max_depth` make the record malformed
  (`InputError`): none of them has a sane meaning to keep. (Non-finite
  floats are stored as null, as the trail's canonical JSON writes them; an
  event time that is one is refused by its source.)
* Lone surrogates: a JSON `"\\ud800"` is not text, the record is malformed
  (`surrogates="reject"`, Engine events); bytes that are not UTF-8 in an audit
  record are real evidence (a file name, an argument) and are kept as `\\xNN`
  escapes (`surrogates="escape"`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, overload

import orjson
from pydantic import BaseModel

from config.errors import InputError
from config.models import InputConfig
from listener.model.event import Event

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_TIME_NS",
    "active_limits",
    "bound_event",
    "check_time_ns",
    "configure_limits",
]

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
MAX_TIME_NS = 7_258_118_400 * 1_000_000_000
"""2200-01-01T00:00:00Z: later event times are garbage (and 2262 overflows int64 ns)."""

DEFAULT_LIMITS = InputConfig()
Surrogates = Literal["reject", "escape"]


_active_limits = DEFAULT_LIMITS


def configure_limits(limits: InputConfig) -> None:
    """The limits sources use when none are given (the service and ingest set them)."""
    global _active_limits
    _active_limits = limits


def active_limits() -> InputConfig:
    return _active_limits


def check_time_ns(time_ns: int) -> None:
    if not 0 <= time_ns < MAX_TIME_NS:
        raise InputError(f"time {time_ns} ns is outside 1970..2200")


def bound_event(
    event: Event, limits: InputConfig | None = None, surrogates: Surrogates = "reject"
) -> Event:
    """`event` with its strings capped (recorded) and its numbers checked, in place.

    Raises `InputError` (without location: the caller knows the line) when a
    value cannot be stored: see the module docstring.
    """
    check_time_ns(event.time_ns)
    limits = limits or _active_limits
    if _nothing_to_bound(event, limits):
        return event  # the usual event: nothing to cut, escape or refuse
    bounder = _Bounder(limits, surrogates)
    for name in ("id", "host", "type", "action"):
        value = getattr(event, name)
        bounded = bounder.value(value, "", name, 0)
        if bounded is not value:  # pydantic's setattr is slow: only what changed
            setattr(event, name, bounded)
    for name in ("actor", "who", "why"):
        bounder.model(getattr(event, name), name)
    for name in ("attributes", "config"):
        value = getattr(event, name)
        if not value or bounder.plain(value):
            continue
        bounded = bounder.mapping(value, name, 1)
        if bounded is not value:
            setattr(event, name, bounded)
    if bounder.truncated:
        known = event.attributes.get("truncated")
        notes = known if isinstance(known, dict) else {}
        event.attributes["truncated"] = {**notes, **bounder.truncated}
    return event


def within_bounds(event: Event, limits: InputConfig | None = None) -> bool:
    """True when `bound_event` certainly leaves `event` as it is (its time aside)."""
    return _nothing_to_bound(event, limits or _active_limits)


def _nothing_to_bound(event: Event, limits: InputConfig) -> bool:
    """True when `bound_event` certainly has nothing to do: one quick look instead of the walk.

    orjson refuses lone surrogates, keys that are not strings and (with
    OPT_STRICT_INTEGER) integers beyond 53 bits, well inside 64. What it writes
    in no more than a quarter of the field cap, all ASCII, holds no string
    over the cap; the brackets it writes, but for the outer list and the
    three parts' own objects, bound the nesting of `attributes` and `config`
    (and the parts hold at most a list of strings, within any `max_depth`).
    """
    try:
        data = orjson.dumps(
            (
                event.id,
                event.host,
                event.type,
                event.action,
                event.actor.__dict__,
                event.who.__dict__,
                event.why.__dict__,
                event.attributes,
                event.config,
            ),
            option=orjson.OPT_STRICT_INTEGER,
        )
    except (orjson.JSONEncodeError, TypeError):
        return False
    brackets = data.count(b"[") + data.count(b"{") - 4
    return (
        len(data) <= limits.max_field_bytes // 4 and data.isascii() and brackets <= limits.max_depth
    )


def _join(parent: str, key: object) -> str:
    """The dotted path of a value, made only when a message or a record needs it."""
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


class _Bounder:
    """One event's walk. Paths are built only for containers and for what is reported."""

    __slots__ = ("cap", "depth", "escape", "quick", "truncated")

    def __init__(self, limits: InputConfig, surrogates: Surrogates) -> None:
        self.cap = limits.max_field_bytes
        self.quick = self.cap // 4  # a str this long or shorter is within the cap in UTF-8
        self.depth = limits.max_depth
        self.escape = surrogates == "escape"
        self.truncated: dict[str, dict[str, int]] = {}

    def plain(self, value: dict[str, Any]) -> bool:
        """True when `value` certainly needs nothing: a quick look instead of the walk.

        orjson (with OPT_STRICT_INTEGER) refuses integers beyond 53 bits, well
        inside signed 64 (without it, it writes unsigned 64-bit ones that SQLite
        cannot hold), lone surrogates and keys that are not strings; what it
        writes in no more than the field cap holds no longer string; fewer
        brackets than the depth limit, no deeper nesting.
        """
        try:
            data = orjson.dumps(value, option=orjson.OPT_STRICT_INTEGER)
        except (orjson.JSONEncodeError, TypeError):
            return False
        return len(data) <= self.cap and data.count(b"[") + data.count(b"{") <= self.depth

    def model(self, model: BaseModel, path: str) -> None:
        quick = self.quick
        for name, value in model.__dict__.items():
            if value is None or (type(value) is str and len(value) <= quick and value.isascii()):
                continue
            bounded = self.value(value, path, name, 1)
            if bounded is not value:
                setattr(model, name, bounded)

    def value(self, value: Any, parent: str, key: object, depth: int) -> Any:
        kind = type(value)
        if kind is str:
            if len(value) <= self.quick and value.isascii():
                return value  # the usual case, checked first
            return self.text(value, parent, key)
        if kind is int:
            if not INT64_MIN <= value <= INT64_MAX:
                where = _join(parent, key)
                raise InputError(
                    f"{where}: integer of {value.bit_length()} bits is outside 64 bits"
                )
            return value
        if kind is dict:
            return self.mapping(value, _join(parent, key), depth + 1)
        if kind is list:
            return self.sequence(value, _join(parent, key), depth + 1)
        return value  # floats: NaN and infinities are written as null by the trail's JSON

    def mapping(self, value: dict[str, Any], path: str, depth: int) -> dict[str, Any]:
        self._deeper(path, depth)
        quick = self.quick
        changes: list[tuple[str, str, Any]] | None = None
        for key, item in value.items():
            name = key
            if type(key) is not str or len(key) > quick or not key.isascii():
                name = self.text(key, path, f"{str(key)[:60]} (key)")
            kind = type(item)  # the usual values inline, the rest through value()
            if name is key and (
                item is None
                or kind is bool
                or (kind is str and len(item) <= quick and item.isascii())
                or (kind is int and INT64_MIN <= item <= INT64_MAX)
                or ((kind is list or kind is dict) and not item)
            ):
                continue
            bounded = self.value(item, path, name, depth)
            if name is not key or bounded is not item:
                changes = changes or []
                changes.append((key, name, bounded))
        if changes is None:
            return value
        result = dict(value)
        for key, name, bounded in changes:
            if name is not key:
                del result[key]
            result[name] = bounded
        return result

    def sequence(self, value: list[Any], path: str, depth: int) -> list[Any]:
        self._deeper(path, depth)
        quick = self.quick
        result: list[Any] | None = None
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str and len(item) <= quick and item.isascii():
                bounded = item
            else:
                bounded = self.value(item, path, index, depth)
            if result is None and bounded is not item:
                result = value[:index]
            if result is not None:
                result.append(bounded)
        return value if result is None else result

    def text(self, value: str, parent: str, key: object) -> str:
        if not value.isascii():
            value = self._unicode(value, parent, key)
        if len(value) <= self.quick:
            return value
        data = value.encode("utf-8")
        if len(data) <= self.cap:
            return value
        self.truncated[_join(parent, key)[:200]] = {"size": len(data), "cap": self.cap}
        return data[: self.cap].decode("utf-8", "ignore")

    def _unicode(self, value: str, parent: str, key: object) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            if not self.escape:
                where = _join(parent, key)[:200]
                raise InputError(f"{where}: not valid Unicode (a lone surrogate)") from None
            return _escaped(value)
        return value

    def _deeper(self, path: str, depth: int) -> None:
        if depth > self.depth:
            raise InputError(f"{path[:200]}: nested deeper than {self.depth} (input.max_depth)")


def _escaped(value: str) -> str:
    """Bytes that were not UTF-8 (surrogate escapes) as `\\xNN`; other surrogates as `\\udNNN`."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


MALFORMED_KEPT = 1_000
"""Malformed inputs kept (to show) of one read; the others are only counted."""


class KeptErrors:
    """The malformed input of a long read: every one counted, the first `keep` kept.

    A file of garbage lines must not become as many error objects in memory.
    `len()` is how many there were; iterating and indexing give the kept ones.
    """

    __slots__ = ("count", "first", "keep")

    def __init__(self, keep: int = MALFORMED_KEPT) -> None:
        self.keep = keep
        self.first: list[InputError] = []
        self.count = 0

    def append(self, error: InputError) -> None:
        self.count += 1
        if len(self.first) < self.keep:
            self.first.append(error)

    def extend(self, errors: Iterable[InputError]) -> None:
        for error in errors:
            self.append(error)

    def merge(self, other: KeptErrors) -> None:
        """Another read's: its count, and its kept errors while room is left."""
        room = max(0, self.keep - len(self.first))
        self.first.extend(other.first[:room])
        self.count += other.count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[InputError]:
        return iter(self.first)

    @overload
    def __getitem__(self, index: int) -> InputError: ...
    @overload
    def __getitem__(self, index: slice) -> list[InputError]: ...
    def __getitem__(self, index: int | slice) -> InputError | list[InputError]:
        return self.first[index]
