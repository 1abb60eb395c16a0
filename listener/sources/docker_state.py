"""What the trail knows about one Docker host (`KnownState`), and loading it.

`KnownState` holds the host's containers and images and the time of the last
Engine event. It is folded from the stored events at start
(`load_known_state`) and from every event since. Its `last_docker_ns` is
where the live source (`docker_live`) resumes reading; its containers and
images are what a reconciliation compares with the Engine's listing, to
record what changed while nobody was listening. Replayed events older than
what is known change nothing.

Each container also carries the fingerprint of the last security
configuration the container-config rules judged (of its `create`, an
`observed` or a `posture` event): the posture sweep records a container
again only when its configuration has another fingerprint.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Protocol

from listener.model.catalogue import CONFIG_ACTIONS
from listener.model.event import Event, container_gone, observed_change
from listener.rules.fingerprint import config_fingerprint
from sinks.base import EventFilter

_NS = 1_000_000_000
_RECENT_IDS = 16_384
_IMAGE_ADD_ACTIONS = frozenset({"pull", "tag", "import", "load"})


@dataclass(slots=True)
class KnownContainer:
    """One container as a `KnownState` has it. Never changed once in a state: a change
    puts a changed copy in its place, so that two states can share the rest (the
    service's and the one saved for the next start: `copy_known`)."""

    id: str
    name: str | None = None
    image: str | None = None
    state: str | None = None  # created, running, exited; None: not known yet
    started_ns: int | None = None  # when the last start we know of happened
    last_event_ns: int = 0
    config_fingerprint: str | None = None  # of the last configuration judged (`judged`)


CONTAINER_FIELDS = [f.name for f in fields(KnownContainer)]
_container_values = attrgetter(*CONTAINER_FIELDS)


def copied(known: KnownContainer) -> KnownContainer:
    return KnownContainer(*_container_values(known))


@dataclass(slots=True)
class KnownState:
    """What the trail says about one host: containers, images, the last Engine event.

    Folded from stored events (at start) and from every event since, so that a
    reconciliation can tell what changed while nobody was listening.
    """

    containers: dict[str, KnownContainer] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)  # image id -> last event time
    last_docker_ns: int | None = None
    removed: OrderedDict[str, int] = field(default_factory=OrderedDict)  # id -> when

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> KnownState:
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: Event) -> None:
        if event.source == "docker":
            self.last_docker_ns = max(self.last_docker_ns or 0, event.time_ns)
        if event.type == "container" and event.actor.id:
            self._apply_container(event)
        elif event.type == "image":
            self._apply_image(event)
        elif event.type == "container" and event.action == "commit":
            self._add_image(str(event.attributes.get("imageID") or ""), event.time_ns)

    def removed_since(self, object_id: str, time_ns: int) -> bool:
        return self.removed.get(object_id, -1) >= time_ns

    def judged(self, event: Event) -> None:
        """Notes the configuration a container event gives the config rules to judge.

        For events whose `config` is filled after they were applied (the
        inspect of a live `create`). Unknown containers are not added.
        """
        fingerprint = _judged_fingerprint(event)
        known = self.containers.get(event.actor.id)
        if fingerprint is not None and known is not None:
            known = self.containers[known.id] = copied(known)
            known.config_fingerprint = fingerprint

    def fingerprint(self, container_id: str) -> str | None:
        """The fingerprint of the configuration judged last for a container, if any."""
        known = self.containers.get(container_id)
        return known.config_fingerprint if known is not None else None

    def _apply_container(self, event: Event) -> None:
        cid, action, when = event.actor.id, event.action, event.time_ns
        if action == "posture":
            self.judged(event)  # a judgement, not a change: times and state stay
            return
        known = self.containers.get(cid)
        if self._is_stale(cid, when, known.last_event_ns if known else None):
            return  # a replayed event older than what we know
        if container_gone(event):
            self.containers.pop(cid, None)
            self._remember_removed(cid, when)
            return
        known = copied(known) if known is not None else KnownContainer(id=cid)
        self.containers[cid] = known
        known.last_event_ns = max(known.last_event_ns, when)
        known.name = event.actor.name or known.name
        known.image = event.actor.image or known.image
        if action == "commit":
            self._add_image(str(event.attributes.get("imageID") or ""), when)
        known.config_fingerprint = _judged_fingerprint(event) or known.config_fingerprint
        if event.source == "docktrail":
            self._apply_observed(known, event)
        elif action == "create":
            known.state = "created"
        elif action == "start":
            known.state, known.started_ns = "running", when
        elif action == "die":
            known.state = "exited"

    @staticmethod
    def _apply_observed(known: KnownContainer, event: Event) -> None:
        if event.action != "observed":
            return
        state = event.attributes.get("state")
        known.state = str(state) if state else known.state
        started = event.attributes.get("started_at_ns")
        known.started_ns = started if isinstance(started, int) else known.started_ns

    def _apply_image(self, event: Event) -> None:
        image_id = event.attributes.get("image_id") or event.actor.id
        if not isinstance(image_id, str) or not image_id.startswith("sha256:"):
            return
        change = observed_change(event)
        if self._is_stale(image_id, event.time_ns, self.images.get(image_id)):
            return
        if event.action == "delete" or change == "disappeared":
            self.images.pop(image_id, None)
            self._remember_removed(image_id, event.time_ns)
        elif event.action in _IMAGE_ADD_ACTIONS or change == "appeared":
            self._add_image(image_id, event.time_ns)
        elif image_id in self.images:
            self.images[image_id] = event.time_ns

    def _is_stale(self, object_id: str, when: int, last_event_ns: int | None) -> bool:
        """Replays (after a reconnect or stall) can hand on old events after newer ones."""
        if last_event_ns is not None and last_event_ns > when:
            return True
        return self.removed.get(object_id, -1) > when

    def _add_image(self, image_id: str, when: int) -> None:
        if image_id:
            self.images[image_id] = max(self.images.get(image_id, 0), when)

    def _remember_removed(self, object_id: str, when: int) -> None:
        self.removed[object_id] = when
        self.removed.move_to_end(object_id)
        while len(self.removed) > _RECENT_IDS:
            self.removed.popitem(last=False)


def _judged_fingerprint(event: Event) -> str | None:
    """The fingerprint of the configuration a container event gives the config rules."""
    if event.type != "container" or event.action not in CONFIG_ACTIONS or not event.config:
        return None
    return config_fingerprint(event.config)


def _listed_state(engine_state: object) -> str:
    """`docker ps` State -> created / running / exited."""
    if engine_state in ("running", "paused", "restarting"):
        return "running"
    return "created" if engine_state == "created" else "exited"


# The container actions that change what `KnownState` holds; the others (exec,
# attach, …) need not be read at start-up.
_LIFECYCLE_ACTIONS = ("create", "start", "die", "destroy", "commit", "rename", "observed",
                      "posture")  # fmt: skip
_RECENT_WINDOWS_SECS = (300, 3600, 86_400, 30 * 86_400)
_TAIL_ROWS = 2000  # rows read back from the head for the last Engine event


class QueryableTrail(Protocol):
    def query(self, f: EventFilter) -> Iterator[Event]: ...

    def head(self) -> tuple[int, str]: ...

    def get(self, seq: int) -> Event | None: ...


def load_known_state(trail: QueryableTrail, host: str) -> KnownState:
    """What `trail` knows about `host`: containers, images, the last Engine event time.

    Blocking: run it where the trail may be used (`await trail.call(...)`).
    Reads every container lifecycle and image event of the host once.
    """
    state = fold_known_state(trail, host)
    state.last_docker_ns = last_docker_time_ns(trail, host)
    return state


def fold_known_state(trail: QueryableTrail, host: str) -> KnownState:
    """`load_known_state` without looking for where reading resumes (its
    `last_docker_ns` covers only the folded events): for a caller that has it."""
    filters = [EventFilter(type="container", action=a, host=host) for a in _LIFECYCLE_ACTIONS]
    filters.append(EventFilter(type="image", host=host))
    merged = heapq.merge(*(trail.query(f) for f in filters), key=lambda event: event.seq or 0)
    return KnownState.from_events(merged)


def last_docker_time_ns(trail: QueryableTrail, host: str) -> int | None:
    """The `timeNano` of the last stored Engine event of `host`: where reading resumes.

    Usually among the last rows, so they are looked at first; otherwise the
    newest by time, searching recent times first.
    """
    seq, _ = trail.head()
    for back in range(seq, max(seq - _TAIL_ROWS, 0), -1):
        event = trail.get(back)
        if event is not None and event.source == "docker" and event.host == host:
            return event.time_ns
    now = time.time_ns()
    for window in (*_RECENT_WINDOWS_SECS, None):
        since = None if window is None else now - window * _NS
        found = trail.query(EventFilter(source="docker", host=host, since_ns=since))
        newest = max((event.time_ns for event in found), default=None)
        if newest is not None:
            return newest
    return None
