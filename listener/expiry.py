"""Retirement: a container still running after its expiry raises `expired-deployment`.

A deadline is the expiry of the intent a container was created under, or its
`audit.expires` label (a time, or a duration from its creation). `ExpiryWatch`
records a `docktrail` container `expired` event, once per container and
deadline, for each running container past its deadline: at every posture
sweep (`DockerSource.on_running`), and at the moment it passes, when
`expiry_timer` asks the source for a sweep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from config.errors import InputError
from listener.intents import ENDED_TRIED_NS, IntentBook, parse_expires_ns
from listener.model.event import Actor, Event, format_time_ns, natural_id
from sinks.base import EventFilter

_NS = 1_000_000_000


@dataclass(slots=True, frozen=True)
class Deadline:
    expires_ns: int
    source: str  # intent | label
    intent_id: str | None = None


class ExpiryWatch:
    """Which running container is past its expiry; an `expired` event once for each."""

    def __init__(self, host: str, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.host = host
        self.deadlines: dict[str, Deadline] = {}
        self._reported: set[tuple[str, int]] = set()
        self._clock = clock
        self.changed = asyncio.Event()  # a new deadline: the timer looks again

    def note(self, container_id: str, deadline: Deadline) -> None:
        self.deadlines[container_id] = deadline
        self.changed.set()

    def note_create(self, event: Event) -> None:
        """A stored or about-to-be-stored create: its intent's or its label's expiry."""
        intent = event.attributes.get("intent")
        if isinstance(intent, dict) and isinstance(intent.get("expires_ns"), int):
            self.note(event.actor.id, Deadline(intent["expires_ns"], "intent", intent.get("id")))
            return
        labels = event.attributes.get("labels") or {}
        expires = _label_deadline(labels, event.time_ns)
        if expires is not None:
            self.note(event.actor.id, Deadline(expires, "label"))

    def forget(self, container_id: str) -> None:
        """A removed container: nothing of it is kept (memory stays bounded)."""
        self.deadlines.pop(container_id, None)
        self._reported = {key for key in self._reported if key[0] != container_id}

    def on_running(self, listed: list[dict[str, Any]]) -> list[Event]:
        """Sweep hook: `expired` events for the listed running containers past expiry."""
        now = self._clock()
        found = []
        for item in listed:
            cid = str(item.get("Id"))
            deadline = self.deadlines.get(cid) or _listed_deadline(item)
            if deadline is None:
                continue
            if deadline.expires_ns > now:
                if cid not in self.deadlines:  # created before this start: the timer learns it
                    self.note(cid, deadline)
                continue
            if (cid, deadline.expires_ns) in self._reported:
                continue
            self._reported.add((cid, deadline.expires_ns))
            found.append(self._expired_event(item, cid, deadline, now))
        return found

    def next_deadline(self, after_ns: int) -> int | None:
        return min(
            (d.expires_ns for d in self.deadlines.values() if d.expires_ns > after_ns),
            default=None,
        )

    def _expired_event(
        self, item: Mapping[str, Any], cid: str, deadline: Deadline, now: int
    ) -> Event:
        names = item.get("Names") or []
        name = str(names[0]).lstrip("/") if names else None
        return Event(
            id=natural_id("docktrail", self.host, "container", "expired", cid, deadline.expires_ns),
            time_ns=now,
            source="docktrail",
            host=self.host,
            type="container",
            action="expired",
            actor=Actor(id=cid, name=name, image=item.get("Image")),
            attributes={
                "expires": format_time_ns(deadline.expires_ns),
                "expires_ns": deadline.expires_ns,
                "expires_from": deadline.source,
                "intent_id": deadline.intent_id,
                "labels": dict(item.get("Labels") or {}),
            },
        )


def _label_deadline(labels: Mapping[str, Any], created_ns: int) -> int | None:
    text = labels.get("audit.expires")
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return parse_expires_ns(text, created_ns)
    except InputError:
        return None  # a label is a claim: an unreadable one is no deadline


def _listed_deadline(item: Mapping[str, Any]) -> Deadline | None:
    created = item.get("Created")
    created_ns = int(created) * _NS if isinstance(created, int) else time.time_ns()
    expires = _label_deadline(item.get("Labels") or {}, created_ns)
    return Deadline(expires, "label") if expires is not None else None


async def expiry_timer(
    watch: ExpiryWatch, want_sweep: Callable[[str], None], *, max_sleep_secs: float
) -> None:
    """Asks for a sweep when the next known expiry passes (checked at least this often)."""
    while True:
        watch.changed.clear()  # before looking: a deadline noted from now on wakes us
        now = time.time_ns()
        due = watch.next_deadline(now)
        wait = max_sleep_secs if due is None else min(max_sleep_secs, (due - now) / _NS + 0.05)
        try:
            async with asyncio.timeout(wait):
                await watch.changed.wait()
            continue  # a new deadline may come first
        except TimeoutError:
            pass
        if due is not None and time.time_ns() >= due:
            want_sweep("expiry")


def prime_expiry(
    trail: Any, book: IntentBook, watch: ExpiryWatch, now_ns: int | None = None
) -> None:
    """The deadlines of containers created under intents before this start, that are
    still there.

    Only intents whose expiry is to come, or passed less than `ENDED_TRIED_NS` ago,
    are read for: a container created under an older one was reported when its
    deadline passed, by the service running then (`expired` is in the trail), and
    reading every create since a host's first intent would make each start read
    its whole history.
    """
    floor = (time.time_ns() if now_ns is None else now_ns) - ENDED_TRIED_NS
    starts = [
        i.declared_ns
        for i in book.intents.values()
        if i.expires_ns is not None and i.expires_ns >= floor
    ]
    if not starts:
        return
    where = EventFilter(type="container", action=("create", "destroy"), since_ns=min(starts))
    for event in trail.query(where):
        if event.action == "destroy":
            watch.forget(event.actor.id)  # gone: nothing to report, nothing to keep
        else:
            watch.note_create(event)
