"""Docker Engine events: normalisation to `Event`, and captured files.

Normalisation decisions (one raw Engine event -> one `Event`):

* Only `Type`, `Action`, `Actor.ID`, `Actor.Attributes`, `scope`, `time` and
  `timeNano` are read. The legacy `status`, `id` and `from` fields are gone
  from API 1.52 on, so nothing may depend on them.
* `time_ns` is `timeNano`; `time` * 1e9 only when `timeNano` is absent (old
  captures). The id is `time_ordered_id(time_ns, "docker", time_ns, Type,
  raw Action, Actor.ID)`: reading the same capture twice, or the same event
  through the CLI (`docker events --format '{{json .}}'`) and the raw API,
  gives one id.
* Exec and health actions carry text after a colon (`exec_start: sh -c id`,
  `health_status: healthy`). `action` is the part before the colon, so rules
  and queries match one word; the rest is kept in `attributes.action_detail`.
* Every attribute is kept. Container and image events mix labels in among the
  Engine's own keys: those go to `attributes.labels` (how: `docker_labels`).
* `actor.name` is the human name: `Attributes.name` for most types; for
  images the reference, falling back to the image id (`untag`/`delete` name
  the id); for volumes and builder, `Actor.ID` (a volume's id is its name).
* `scope` (`local` / `swarm`) goes to `attributes.scope`.
* Labels `audit.who` (a claim, never the login) and `audit.why` /
  `audit.ticket` / `audit.expires` fill `who` and `why` (`docker_labels`).

Reading files: one JSON object per line (blank lines ignored); objects
concatenated on one line (`}{`, as a raw `/events` chunk may be saved) are
split with `raw_decode`. Files are read in binary and decoded per line, so a
bad byte, bad JSON or a bad record is an `InputError` naming the file and line
and the good records around it are kept. Gzip is recognised by magic bytes.

The live source (`docktrail run`) is in `docker_live`; the Engine calls it
makes are in `docker_engine`, the reading of inspect data in
`docker_inspect`, and what the trail knows about a host in `docker_state`.

This module must stay light to import (the CLI imports it for `ingest`):
no docker-py at module level.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import math
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, cast

import orjson

from config.errors import InputError, SourceError
from config.models import InputConfig
from listener import redact
from listener.bounds import MAX_TIME_NS, KeptErrors, active_limits, bound_event, check_time_ns
from listener.model.event import Actor, Event, time_prefix
from listener.model.trusted import trusted
from listener.sources.docker_labels import split_labels, who_from_labels, why_from_labels
from listener.sources.lines import Oversized, bounded_lines
from sinks.base import AsyncLifecycle

log = logging.getLogger(__name__)

_NS = 1_000_000_000

# Types whose human name is the actor id rather than Attributes.name.
_NAME_IS_ID = frozenset({"volume", "builder"})

_PROGRESS_EVERY = 256 * 1024  # bytes between on_progress calls
_GZIP_MAGIC = b"\x1f\x8b"


def normalize_engine_event(
    raw: dict[str, Any],
    host: str,
    limits: InputConfig | None = None,
    redactor: redact.Redactor | None = None,
) -> Event:
    """One raw Engine event (API or `docker events --format '{{json .}}'`) as an `Event`.

    Raises `InputError` (without location: the caller adds it) when the record
    is not a usable event. Secrets are redacted (`listener.redact`) and values
    bounded (`listener.bounds`); without `limits` and `redactor`, those the
    process was configured with.
    """
    if not isinstance(raw, dict):
        raise InputError(f"expected a JSON object, got {_json_type(raw)}")
    type_ = _required_str(raw, "Type")
    raw_action = _required_str(raw, "Action")
    actor_id, attrs = _read_actor(raw.get("Actor"))
    time_ns = _read_time_ns(raw)
    action, _, detail = raw_action.partition(":")
    action = action.strip()
    attributes = _attributes(type_, action, attrs, detail.strip(), _read_scope(raw))
    # A `daemon reload` carries the daemon's settings, `labels` among them as a string.
    found = attributes.get("labels")
    labels: Mapping[str, str] = found if isinstance(found, Mapping) else {}
    image = attrs.get("image") if type_ == "container" else None
    actor = _actor(actor_id, _actor_name(type_, actor_id, attrs), image)
    # Every value is checked above as the model would (exact str and int, fresh dicts):
    # built without validating it again (listener.model.trusted).
    values = {
        "seq": None,
        "id": _docker_id(time_ns, type_, raw_action, actor_id),
        "time_ns": time_ns,
        "source": "docker",
        "host": _exact(host),
        "type": type_,
        "action": action,
        "actor": actor,
        "attributes": attributes,
        "who": who_from_labels(labels),
        "why": why_from_labels(labels),
        "config": {},
        "hash": None,
        "prev_hash": None,
    }
    event = trusted(Event, values, set(_EVENT_GIVEN))
    (redactor or redact.active()).event(event)
    return bound_event(event, limits, surrogates="reject")


_EVENT_GIVEN = frozenset(
    {"id", "time_ns", "source", "host", "type", "action", "actor", "attributes", "who", "why"}
)
_ACTOR_GIVEN = frozenset({"id", "name", "image"})


def _docker_id(time_ns: int, type_: str, raw_action: str, actor_id: str) -> str:
    """`time_ordered_id(time_ns, "docker", time_ns, type_, raw_action, actor_id)`, without
    its generator."""
    key = f"docker\x1f{time_ns}\x1f{type_}\x1f{raw_action}\x1f{actor_id}"
    try:
        return time_prefix(time_ns) + hashlib.sha256(key.encode()).hexdigest()[:24]
    except UnicodeEncodeError:  # a JSON "\\ud800": not text, and the id cannot be made
        for name, value in (("Type", type_), ("Action", raw_action), ("Actor.ID", actor_id)):
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    raise InputError(f"{name}: not valid Unicode (a lone surrogate)") from None
        raise


def _exact(value: str) -> str:
    """`value` as a plain str, as pydantic stores a str field (a subclass is copied)."""
    return value if type(value) is str else str.__str__(value)


def _actor(actor_id: str, name: str | None, image: str | None) -> Actor:
    values = {
        "id": actor_id,
        "name": None if name is None else _exact(name),
        "image": None if image is None else _exact(image),
    }
    return trusted(Actor, values, set(_ACTOR_GIVEN))


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _required_str(raw: Mapping[str, Any], key: str) -> str:
    value = raw.get(key)
    if value is None:
        raise InputError(f"missing {key}")
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{key} must be a non-empty string, got {value!r:.60}")
    return _exact(value)


def _read_actor(actor: object) -> tuple[str, dict[str, str]]:
    """`Actor.ID` and `Actor.Attributes`; prune events have an empty actor."""
    if actor is None:
        return "", {}
    if not isinstance(actor, dict):
        raise InputError(f"Actor must be an object, got {_json_type(actor)}")
    actor_id = actor.get("ID") or ""
    if not isinstance(actor_id, str):
        raise InputError(f"Actor.ID must be a string, got {_json_type(actor_id)}")
    attrs = actor.get("Attributes") or {}
    if not isinstance(attrs, dict):
        raise InputError(f"Actor.Attributes must be an object, got {_json_type(attrs)}")
    for key, value in attrs.items():
        if type(value) is not str or type(key) is not str:
            _check_attribute(key, value)
    return _exact(actor_id), dict(attrs)


def _check_attribute(key: object, value: object) -> None:
    # The Engine's type is map[string]string: anything else is not from it.
    if not isinstance(value, str):
        raise InputError(f"Actor.Attributes.{key} must be a string, got {_json_type(value)}")
    if not isinstance(key, str):  # never from JSON: a caller's own dict
        raise InputError(f"Actor.Attributes keys must be strings, got {_json_type(key)}")


def _read_scope(raw: Mapping[str, Any]) -> str | None:
    scope = raw.get("scope")
    if scope is not None and not isinstance(scope, str):
        raise InputError(f"scope must be a string, got {_json_type(scope)}")
    return scope


def _attributes(
    type_: str, action: str, attrs: dict[str, str], detail: str, scope: str | None
) -> dict[str, Any]:
    attributes = split_labels(type_, action, attrs)
    if detail:
        attributes["action_detail"] = detail
    if scope is not None:
        attributes["scope"] = scope
    return attributes


def _read_time_ns(raw: Mapping[str, Any]) -> int:
    time_nano = raw.get("timeNano")
    if time_nano is not None:
        if isinstance(time_nano, bool) or not isinstance(time_nano, int) or time_nano < 0:
            raise InputError(f"timeNano must be a non-negative integer, got {time_nano!r:.60}")
        check_time_ns(time_nano)
        return time_nano if type(time_nano) is int else int(time_nano)
    seconds = raw.get("time")
    if seconds is None:
        raise InputError("missing timeNano and time")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise InputError(f"time must be a non-negative number, got {seconds!r:.60}")
    if isinstance(seconds, float) and not math.isfinite(seconds):
        raise InputError(f"time must be a finite number, got {seconds!r}")
    if seconds >= MAX_TIME_NS // _NS:
        raise InputError(f"time {seconds!r:.60} s is outside 1970..2200")
    time_ns = seconds * _NS if isinstance(seconds, int) else round(seconds * _NS)
    check_time_ns(time_ns)
    return time_ns


def _actor_name(type_: str, actor_id: str, attrs: Mapping[str, str]) -> str | None:
    if type_ in _NAME_IS_ID:
        return actor_id or None
    name = attrs.get("name")
    if type_ == "image":
        return name or actor_id or None
    return name or None


# --------------------------------------------------------------------------- files


def read_events_file(
    path: Path,
    host: str,
    *,
    on_progress: Callable[[int], None] | None = None,
    limits: InputConfig | None = None,
) -> Iterator[Event | InputError]:
    """Events of a captured file, with each bad record yielded as an `InputError`.

    `on_progress(bytes_consumed)` is called every few hundred KiB and at the
    end; for a gzip file the bytes are those of the compressed file, so they
    can be compared with its size. Raises `SourceError` when the file cannot
    be read at all. Lines are read in bounded memory (`limits.max_line_bytes`).
    """
    try:
        with open(path, "rb") as raw_file:
            stream = _open_stream(raw_file)
            progress = on_progress or (lambda _consumed: None)
            reader = _LineReader(path, host, limits or active_limits())
            yield from reader.read(stream, raw_file, progress)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _open_stream(raw_file: IO[bytes]) -> IO[bytes]:
    magic = raw_file.read(2)
    raw_file.seek(0)
    if magic == _GZIP_MAGIC:
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw_file, mode="rb"))
    return raw_file


class _LineReader:
    """The records of one file's lines, each bad line an `InputError` with its number."""

    def __init__(self, path: Path, host: str, limits: InputConfig) -> None:
        self.path = path
        self.host = host
        self.limits = limits

    def read(
        self, stream: IO[bytes], raw_file: IO[bytes], on_progress: Callable[[int], None]
    ) -> Iterator[Event | InputError]:
        reported = 0
        line_no = 0
        blocks = bounded_lines(stream, self.limits.max_line_bytes)
        while True:
            try:
                block = next(blocks)
            except StopIteration:
                break
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                # A truncated or corrupt gzip stream: keep what was read, say where it broke.
                reason = f"compressed data is damaged: {exc}"
                yield InputError(reason, path=str(self.path), line=line_no + 1)
                break
            for data in block:
                line_no += 1
                if isinstance(data, Oversized):
                    yield InputError(data.reason, path=str(self.path), line=line_no)
                    continue
                record = _decode_one(data)
                if record is None:  # not one plain object: the careful way, with its errors
                    yield from self._parse_line(data, line_no)
                    continue
                try:
                    event = normalize_engine_event(record, self.host, self.limits)
                except InputError as exc:
                    yield InputError(exc.reason, path=str(self.path), line=line_no)
                else:
                    yield event
            if raw_file.tell() - reported >= _PROGRESS_EVERY:
                reported = raw_file.tell()
                on_progress(reported)
        on_progress(raw_file.tell())

    def _parse_line(self, data: bytes, line_no: int) -> Iterator[Event | InputError]:
        path = str(self.path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield InputError(f"invalid UTF-8 at byte {exc.start + 1}", path=path, line=line_no)
            return
        if line_no == 1:
            text = text.removeprefix("\ufeff")  # a BOM written by some editors
        for record in _decode_objects(text.strip()):
            if isinstance(record, InputError):
                yield InputError(record.reason, path=path, line=line_no)
                continue
            try:
                yield normalize_engine_event(record, self.host, self.limits)
            except InputError as exc:
                yield InputError(exc.reason, path=path, line=line_no)


_DECODER = json.JSONDecoder()
# Fields whose error message shows the value: an integer orjson reads as a float
# (beyond 64 bits) would be reported differently from the standard library's.
_SHOWN_NUMBERS = ("timeNano", "time", "Type", "Action")


def _decode_objects(text: str) -> Iterator[Any | InputError]:
    """The JSON values of one line: usually one, several when written as `}{`."""
    pos = 0
    while pos < len(text):
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield InputError(f"invalid JSON: {exc.msg} (column {exc.colno})")
            return
        except RecursionError:
            yield InputError("invalid JSON: nested too deeply")
            return
        yield value
        pos = end
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1


def _decode_one(data: bytes) -> dict[str, Any] | None:
    """The line as one JSON object by orjson (about 2.5 times faster), or None: then the
    standard library decides (several objects, bad JSON or UTF-8, a BOM, NaN, lone
    surrogates, floats where it reads integers), and says what is wrong. orjson checks
    UTF-8 as strictly; where it reads a value normalisation shows, it reads the same one
    (an integer beyond 64 bits elsewhere is a "number" to either)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if type(value) is not dict:
        return None
    for key in _SHOWN_NUMBERS:
        if type(value.get(key)) is float:
            return None
    return value


# --------------------------------------------------------------------------- source


class DockerEventsFile(AsyncLifecycle):
    """Async source of the events in captured files (`docktrail ingest`).

    Files are read in a worker thread, a batch at a time, so the event loop is
    never blocked for long. Bad records are logged and collected in
    `malformed`; they never stop the reading.
    """

    _BATCH = 512

    def __init__(
        self,
        paths: Iterable[Path | str],
        host: str,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.host = host
        self.malformed = KeptErrors()  # counted; the first kept
        self.count = 0
        self._on_progress = on_progress  # total bytes over all files, called on the loop
        self._done_bytes = 0
        self._current: Iterator[Event | InputError] | None = None
        self._started = False

    async def start(self) -> None:
        """Checks that every file can be opened, before anything is read."""
        for path in self.paths:
            if not path.is_file():
                raise SourceError(f"{path}: not a readable file")
        self._started = True

    async def aclose(self) -> None:
        if self._current is not None:
            close = getattr(self._current, "close", None)
            if close is not None:
                close()
            self._current = None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        if not self._started:
            await self.start()
        for path in self.paths:
            async for event in self._file_events(path):
                yield event

    async def _file_events(self, path: Path) -> AsyncIterator[Event]:
        position = [0]
        self._current = read_events_file(
            path, self.host, on_progress=lambda n: position.__setitem__(0, n)
        )
        while self._current is not None:
            batch = await asyncio.to_thread(_take, self._current, self._BATCH)
            self._report_progress(position[0])
            for item in batch:
                if isinstance(item, InputError):
                    log.warning("skipped: %s", item)
                    self.malformed.append(item)
                    continue
                self.count += 1
                yield item
            if len(batch) < self._BATCH:
                break
        self._done_bytes += position[0]
        self._current = None

    def _report_progress(self, in_file: int) -> None:
        if self._on_progress is not None:
            self._on_progress(self._done_bytes + in_file)


def _take(items: Iterator[Event | InputError], n: int) -> list[Event | InputError]:
    """Up to `n` items; fewer only at the end (runs in a worker thread)."""
    batch: list[Event | InputError] = []
    for item in items:
        batch.append(item)
        if len(batch) >= n:
            break
    return batch
