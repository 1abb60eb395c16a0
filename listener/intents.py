"""Declared deployment intents: why a container exists, who deploys it, until when.

An intent is declared (CLI or the HTTP endpoint) before a deployment: image
and/or name glob patterns, the login that will deploy, the reason, a ticket
and an expiry. Intents are events of the trail (`docktrail` `intent`
`declare` / `close`), hash-chained like everything else; the open set is
folded from those events (`IntentBook`), never kept in a table an attacker
could edit outside the chain.

`IntentStage` (after attribution, before the write) gives a container
`create` that matches an open intent its `why` (`why.source = "intent"`) and
`attributes.intent` (id and declared login), which `intent-mismatch` checks
against the evidence of who created it. `listener.expiry` records a `docktrail`
container `expired` event when a container runs past its expiry (the intent's
or its `audit.expires` label): from the posture sweep, and from a timer that
asks for a sweep at the moment the next known expiry passes.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.errors import InputError
from listener.model.event import Actor, Event, Who, Why, container_gone, format_time_ns, natural_id
from listener.timeparse import parse_time_ns
from sinks.base import EventFilter


class ExpiryNotes(Protocol):
    """What the book tells the expiry watch (`listener.expiry`, which imports this module)."""

    def note_create(self, event: Event) -> None: ...

    def forget(self, container_id: str) -> None: ...


_NS = 1_000_000_000
_DURATION = re.compile(r"(\d+(\.\d+)?(ns|us|ms|s|m|h|d|w))+")
_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # no control characters: they would forge output lines
_LOGIN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$"


class IntentSpec(BaseModel):
    """What a pipeline or a person declares; the HTTP endpoint's JSON body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    image: str | None = Field(
        None, max_length=256, pattern=_PATTERN, description="Glob of image references."
    )
    name: str | None = Field(
        None, max_length=256, pattern=_PATTERN, description="Glob of container names."
    )
    who: str = Field(max_length=64, pattern=_LOGIN, description="Login that will deploy.")
    why: str = Field(min_length=1, max_length=1000, pattern=_PATTERN, description="Reason.")
    ticket: str | None = Field(None, max_length=128, pattern=_PATTERN, description="Change ticket.")
    expires: str | None = Field(
        None, max_length=64, description="RFC 3339 time, unix seconds, or a duration from now."
    )

    @model_validator(mode="after")
    def _one_pattern(self) -> IntentSpec:
        if not self.image and not self.name:
            raise ValueError("give image or name (a glob pattern), or both")
        return self


def parse_expires_ns(text: str, now_ns: int) -> int:
    """An expiry: a time, or a duration counted from `now_ns` (`2h`, `7d`)."""
    value = text.strip()
    parsed = parse_time_ns(value, now_ns=now_ns)
    if _DURATION.fullmatch(value):
        return 2 * now_ns - parsed  # parse_time_ns counts durations back from now
    return parsed


@dataclass(slots=True)
class Intent:
    id: str
    who: str
    why: str
    declared_ns: int
    image: str | None = None
    name: str | None = None
    ticket: str | None = None
    expires_ns: int | None = None
    closed_ns: int | None = None
    via: str | None = None

    def open_at(self, time_ns: int) -> bool:
        return (
            self.declared_ns <= time_ns
            and (self.closed_ns is None or time_ns < self.closed_ns)
            and (self.expires_ns is None or time_ns < self.expires_ns)
        )

    def matches(self, image: str | None, name: str | None) -> bool:
        if self.name is not None and (name is None or not _glob(self.name)(name)):
            return False
        return self.image is None or _image_matches(self.image, image)

    def summary(self) -> dict[str, Any]:
        """What a matched create carries in `attributes.intent`."""
        return {
            "id": self.id,
            "who": self.who,
            "image": self.image,
            "name": self.name,
            "expires_ns": self.expires_ns,
        }

    def why_of(self) -> Why:
        expires = format_time_ns(self.expires_ns) if self.expires_ns is not None else None
        return Why(reason=self.why, ticket=self.ticket, expires=expires, source="intent")


def _image_matches(pattern: str, image: str | None) -> bool:
    """The reference as given, or without its tag or digest (`app` matches `app:1.2`)."""
    if not image:
        return False
    matches = _glob(pattern)
    if matches(image):
        return True
    bare = image.split("@", 1)[0]
    if ":" in bare.rsplit("/", 1)[-1]:
        bare = bare.rsplit(":", 1)[0]
    return matches(bare) is not None


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(fnmatch.translate(pattern)).match


# ------------------------------------------------------------------------ events


def declare_event(
    spec: IntentSpec,
    *,
    host: str,
    declared_by: Who,
    via: str,
    now_ns: int | None = None,
    peer: str | None = None,
) -> Event:
    """The `declare` event of a new intent (a fresh random id)."""
    now = time.time_ns() if now_ns is None else now_ns
    expires_ns = parse_expires_ns(spec.expires, now) if spec.expires else None
    if expires_ns is not None and expires_ns <= now:
        raise InputError(f"expires {spec.expires!r} is not in the future")
    intent = Intent(
        id="in-" + secrets.token_hex(6),
        who=spec.who,
        why=spec.why,
        declared_ns=now,
        image=spec.image,
        name=spec.name,
        ticket=spec.ticket,
        expires_ns=expires_ns,
        via=via,
    )
    attributes: dict[str, Any] = {"intent": intent.summary(), "via": via}
    if peer is not None:
        attributes["peer"] = peer
    return Event(
        id=natural_id("docktrail", host, "intent", "declare", intent.id),
        time_ns=now,
        source="docktrail",
        host=host,
        type="intent",
        action="declare",
        actor=Actor(id=intent.id),
        attributes=attributes,
        who=declared_by,
        why=intent.why_of(),
    )


def close_event(
    intent_id: str, *, host: str, closed_by: Who, via: str, now_ns: int | None = None
) -> Event:
    now = time.time_ns() if now_ns is None else now_ns
    return Event(
        id=natural_id("docktrail", host, "intent", "close", intent_id),
        time_ns=now,
        source="docktrail",
        host=host,
        type="intent",
        action="close",
        actor=Actor(id=intent_id),
        attributes={"via": via},
        who=closed_by,
    )


def _intent_of(event: Event) -> Intent | None:
    found = event.attributes.get("intent")
    if not isinstance(found, dict):
        return None
    return Intent(
        id=event.actor.id,
        who=str(found.get("who") or ""),
        why=event.why.reason or "",
        declared_ns=event.time_ns,
        image=found.get("image"),
        name=found.get("name"),
        ticket=event.why.ticket,
        expires_ns=found.get("expires_ns"),
        via=event.attributes.get("via"),
    )


# ------------------------------------------------------------------------ the book


ENDED_TRIED_NS = 7 * 24 * 3600 * _NS
"""How long `run` still tries an intent on creates after it ended (closed or expired):
the Engine replays its last events after a restart, which may be days after they
happened. Older ones are skipped, so a host that declares an intent per deploy
matches each create against the last week's, not against its whole history."""


def _end_ns(intent: Intent) -> int | None:
    ends = [t for t in (intent.closed_ns, intent.expires_ns) if t is not None]
    return min(ends) if ends else None


@dataclass(slots=True)
class IntentBook:
    """Every intent of the trail, folded from its `declare` and `close` events."""

    intents: dict[str, Intent] = field(default_factory=dict)
    last_seq: int = 0
    # `run` only (`IntentStage`): intents that ended before it are not tried on creates.
    # `ingest` leaves it None: a capture's creates may be of any age.
    ended_before_ns: int | None = None
    _tried: list[Intent] = field(default_factory=list)  # newest first
    _tried_from: int = -1  # len(intents) when `_tried` was made; -1: make it again
    _tried_floor: int | None = None  # `ended_before_ns` when it was made
    _drop_at: int | None = None  # the earliest end among `_tried`: past it, one can go

    def apply(self, event: Event) -> None:
        if event.source != "docktrail" or event.type != "intent":
            return
        if event.action == "declare" and event.actor.id not in self.intents:
            intent = _intent_of(event)
            if intent is not None:
                self.intents[intent.id] = intent
        elif event.action == "close":
            intent = self.intents.get(event.actor.id)
            if intent is not None and intent.closed_ns is None:
                intent.closed_ns = event.time_ns
                self._tried_from = -1  # its end moved
        if event.seq is not None:
            self.last_seq = max(self.last_seq, event.seq)

    def refresh(self, trail: Any) -> None:
        """Reads the intent events stored since the last refresh (other processes' too)."""
        where = EventFilter(source="docktrail", type="intent", after_seq=self.last_seq)
        for event in trail.query(where):
            self.apply(event)

    def match(self, event: Event) -> Intent | None:
        """The newest intent open at the event's time that matches its image and name."""
        image, name, at = event.actor.image, event.actor.name, event.time_ns
        for intent in self._newest_first():
            if intent.open_at(at) and intent.matches(image, name):
                return intent
        return None

    def _newest_first(self) -> list[Intent]:
        """The intents to try (all but those ended before `ended_before_ns`), newest first."""
        floor, made_for = self.ended_before_ns, self._tried_floor
        passed = floor is not None and self._drop_at is not None and floor > self._drop_at
        lowered = made_for is not None and (floor is None or floor < made_for)
        if self._tried_from != len(self.intents) or passed or lowered:
            self._tried = sorted(
                (i for i in self.intents.values() if not _ended_before(i, floor)),
                key=lambda i: -i.declared_ns,
            )
            ends = [end for i in self._tried if (end := _end_ns(i)) is not None]
            self._drop_at = min(ends) if ends else None
            self._tried_from, self._tried_floor = len(self.intents), floor
        return self._tried

    def open_intents(self, now_ns: int) -> list[Intent]:
        return sorted(
            (i for i in self.intents.values() if i.open_at(now_ns)), key=lambda i: i.declared_ns
        )


def _ended_before(intent: Intent, floor: int | None) -> bool:
    end = _end_ns(intent)
    return floor is not None and end is not None and end < floor


def load_book(trail: Any) -> IntentBook:
    book = IntentBook()
    book.refresh(trail)
    return book


# ------------------------------------------------------------------------ the stage


class IntentStage:
    """Pipeline stage after attribution: stamps creates with their intent."""

    def __init__(
        self,
        trail: Any,
        book: IntentBook,
        expiry: ExpiryNotes | None = None,
        *,
        live: bool = False,
    ) -> None:
        """`live`: `run`'s stage, whose creates are recent (`ENDED_TRIED_NS`)."""
        self._trail = trail
        self.book = book
        self.expiry = expiry
        self.live = live

    async def before_write(self, batch: list[Event]) -> list[Event]:
        if self.expiry is not None:
            for event in batch:
                if container_gone(event):
                    self.expiry.forget(event.actor.id)
        if not any(_concerns_intents(event) for event in batch):
            return batch
        await self._trail.call(self.book.refresh)  # intents other processes declared
        if self.live:  # the wall clock, not an event's time: one odd time must not move it
            self.book.ended_before_ns = time.time_ns() - ENDED_TRIED_NS
        for event in batch:
            self.book.apply(event)
            if event.source == "docker" and event.type == "container" and event.action == "create":
                self._stamp(event)
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        return None

    def _stamp(self, event: Event) -> None:
        intent = self.book.match(event)
        if intent is not None:
            event.why = intent.why_of()
            event.attributes = {**event.attributes, "intent": intent.summary()}
        if self.expiry is not None:
            self.expiry.note_create(event)


def _concerns_intents(event: Event) -> bool:
    return event.type == "intent" or (event.type == "container" and event.action == "create")


# ------------------------------------------------------------------------ timeline


def intent_lines(created: Event | None) -> Iterator[str]:
    """`timeline`: the intent that explains a container, when one does."""
    intent = created.attributes.get("intent") if created is not None else None
    if not isinstance(intent, dict):
        return
    patterns = ", ".join(
        f"{key} {intent[key]}" for key in ("image", "name") if intent.get(key) is not None
    )
    expires = created.why.expires if created is not None else None
    yield (
        f"  intent   {intent.get('id')} declared for {intent.get('who')} ({patterns})"
        + (f", expires {expires}" if expires else "")
    )


def describe(intents: Iterable[Intent], tz: tzinfo = UTC) -> list[dict[str, Any]]:
    """`intent list` / `due` rows, times in `tz`."""

    def when(time_ns: int | None) -> str | None:
        return format_time_ns(time_ns, tz) if time_ns is not None else None

    return [
        {
            "id": i.id,
            "who": i.who,
            "image": i.image,
            "name": i.name,
            "why": i.why,
            "ticket": i.ticket,
            "declared": when(i.declared_ns),
            "expires": when(i.expires_ns),
            "closed": when(i.closed_ns),
            "via": i.via,
        }
        for i in intents
    ]
