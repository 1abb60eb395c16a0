"""What the trail knows about this host (`KnownState`), saved so that `run` starts
without reading every container and image event the trail holds.

`load_known_state` folds every stored lifecycle event of the host, which takes
longer the longer the trail. `KnownFold` (a pipeline stage after the write)
keeps the same fold of the events as they are stored and saves it now and
then and at a stop, with the seq it was folded through, in the trail's
`rule_state` table; `restore_known` takes it and folds on only the events
stored after it. Both give what `load_known_state` would.

With it, the fold saves its horizon (the last stored Engine event's time of
the host) in a small row of its own, sealed the same way: `run` reads it, and
the Engine events stored after it, before it opens the Engine's stream
(`resume_point`), without decoding the whole state first.

As with the rules' saved state (`listener.rules.snapshot`, whose MAC this
uses), a row is trusted only when it authenticates under the key derived from
the trail's signing key, for this trail, this host and the event it was folded
through. An attacker who can write the trail file but not read the key can
delete or roll back the row (the state is rebuilt or folded on from the older
seq: a slower start, the same state) but not make the service believe in
containers, configurations or removals the trail does not show.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import EllipsisType
from typing import Any

import orjson

from listener.model.event import Event
from listener.rules.engine import SAVED_BYTES_PER_EVENT
from listener.rules.snapshot import Binding, authentic, mac_key, seal_body, shared_strings
from listener.sources.docker_state import (
    _LIFECYCLE_ACTIONS,
    CONTAINER_FIELDS,
    KnownContainer,
    KnownState,
    fold_known_state,
    last_docker_time_ns,
)
from sinks.base import stored_after

log = logging.getLogger(__name__)

VERSION = 1
# Stored events between two saves: what a start after a crash reads. As for the rules'
# state, a big state is saved less often (SAVED_BYTES_PER_EVENT: listener.rules.engine).
SAVE_EVERY_EVENTS = 5_000
_PAGE = 2_000


def folded(event: Event, host: str) -> bool:
    """The events `load_known_state` folds: the host's container lifecycle and image events."""
    if event.host != host:
        return False
    return event.type == "image" or (
        event.type == "container" and event.action in _LIFECYCLE_ACTIONS
    )


def state_name(host: str) -> str:
    return f"known-state/{host}"


def horizon_name(host: str) -> str:
    return f"known-horizon/{host}"


def _scope(host: str) -> str:
    return hashlib.sha256(
        f"known-state v{VERSION}\x00{host}\x00{CONTAINER_FIELDS}".encode()
    ).hexdigest()


def _horizon_scope(host: str) -> str:
    return hashlib.sha256(f"known-horizon v1\x00{host}".encode()).hexdigest()


def _fold_one(state: KnownState, event: Event, host: str) -> None:
    """Folds `event` in; every Engine event of the host moves `last_docker_ns`, so that
    the saved horizon is where reading resumes (`resume_point`)."""
    if folded(event, host):
        state.apply(event)
    elif event.source == "docker" and event.host == host:
        state.last_docker_ns = max(state.last_docker_ns or 0, event.time_ns)


def encode_known(state: KnownState) -> bytes:
    rows = list(state.containers.values())
    return orjson.dumps(
        {
            "containers": [[getattr(row, name) for row in rows] for name in CONTAINER_FIELDS],
            "images": list(state.images.items()),
            "last_docker_ns": state.last_docker_ns,
            "removed": list(state.removed.items()),
        }
    )


def decode_known(body: bytes) -> KnownState:
    """Raises ValueError, TypeError or KeyError on a body this module did not write."""
    data = orjson.loads(body)
    columns = [shared_strings(column) for column in data["containers"]]
    if len(columns) != len(CONTAINER_FIELDS):
        raise ValueError("saved known state has other container fields")
    containers = [KnownContainer(*row) for row in zip(*columns, strict=True)]
    return KnownState(
        containers={c.id: c for c in containers},
        images={str(k): int(v) for k, v in data["images"]},
        last_docker_ns=data["last_docker_ns"],
        removed=OrderedDict((str(k), int(v)) for k, v in data["removed"]),
    )


def copy_known(state: KnownState) -> KnownState:
    """A copy to change independently. The containers are shared: a state never changes
    one in place (`KnownContainer`); a second decode of the saved body cost as much
    again in time, and kept a second copy of everything."""
    return KnownState(
        containers=dict(state.containers),
        images=dict(state.images),
        last_docker_ns=state.last_docker_ns,
        removed=OrderedDict(state.removed),
    )


@dataclass(slots=True)
class KnownFold:
    """Pipeline stage after the write: folds stored events of the host, saves the fold."""

    trail: Any
    host: str
    state: KnownState
    key: bytes | None
    folded_through: int
    saved_through: int = 0
    save_every: int = SAVE_EVERY_EVENTS

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        first = (stored[0].seq or 0) if stored else 0
        if first > self.folded_through + 1:  # stored by another process meanwhile
            gap = self.folded_through
            await self.trail.call(lambda t: _fold_after(t, self.host, self.state, gap, first - 1))
        for event in stored:
            _fold_one(self.state, event, self.host)
        if stored:
            self.folded_through = max(self.folded_through, stored[-1].seq or 0)
        if self.folded_through - self.saved_through >= self.save_every:
            await self.save()

    async def save(self) -> None:
        await self.trail.call(self._save)

    def _save(self, trail: Any) -> None:
        through = self.folded_through
        if self.key is None or not through or through == self.saved_through:
            return
        binding = _binding(trail, self.host, through)
        if binding is None:
            return
        try:
            body = encode_known(self.state)
        except (TypeError, ValueError) as exc:  # not saving costs a slower start, no more
            log.warning("known state not saved", extra={"fields": {"why": str(exc)}})
            return
        trail.save_rule_state(state_name(self.host), seal_body(body, binding, self.key))
        horizon = orjson.dumps({"last_docker_ns": self.state.last_docker_ns})
        horizon_binding = replace(binding, scope=_horizon_scope(self.host))
        trail.save_rule_state(
            horizon_name(self.host), seal_body(horizon, horizon_binding, self.key)
        )
        self.saved_through = through
        self.save_every = max(SAVE_EVERY_EVENTS, len(body) // SAVED_BYTES_PER_EVENT)


def _binding(trail: Any, host: str, through: int) -> Binding | None:
    event = trail.get(through)
    if event is None or event.hash is None:
        return None
    return Binding(trail.trail_id, through, event.hash, _scope(host))


def restore_known(
    trail: Any, host: str, last_docker_ns: int | EllipsisType | None = ...
) -> tuple[KnownState, KnownFold]:
    """What the trail knows of `host` (for the source), and the stage that keeps it saved.

    `last_docker_ns`: `last_docker_time_ns` when the caller has it already (on a
    trail without recent Engine events of the host it scans the events table).
    Blocking: run it where the trail may be used (`await trail.call(...)`).
    """
    head, _ = trail.head()
    persists = hasattr(trail, "load_rule_state") and hasattr(trail, "signing_key")
    key = mac_key(trail.signing_key) if persists else None
    restored = _restore(trail, host, key, head) if key is not None else None
    if restored is None:
        folded, saved_through = fold_known_state(trail, host), 0
    else:
        folded, saved_through = restored
        folded = _fold_after(trail, host, folded, saved_through, head)
    if isinstance(last_docker_ns, EllipsisType):
        last_docker_ns = resume_point(trail, host)
    # Exact from here on: a restored state only followed lifecycle and image events
    # (before the saved horizon), and the fold must save the very point reading resumes at.
    folded.last_docker_ns = last_docker_ns
    fold = KnownFold(trail, host, folded, key, folded_through=head, saved_through=saved_through)
    if restored is None and head:
        fold._save(trail)  # rebuilt: the next start need not do it again
    # Two copies: the source changes its own as it reads; the fold follows the trail.
    return copy_known(folded), fold


def resume_point(trail: Any, host: str) -> int | None:
    """`last_docker_time_ns`: the last stored Engine event's time of `host`, where
    the live source resumes reading.

    From the saved horizon (`KnownFold` saves it, sealed like the known state) and
    the Engine events stored after it, when there is one that authenticates: a
    host whose last Engine event is old, or none, would otherwise cost a scan of
    every event (4.8 s warm, 13-33 s cold on a 10M-event trail) before `run` reads the
    Engine. A deleted or older row only means an earlier point: more of the
    Engine's buffer replayed (and dropped as already stored).

    Blocking: run it where the trail may be used (`await trail.call(...)`).
    """
    saved = _saved_horizon(trail, host)
    if saved is None:
        return last_docker_time_ns(trail, host)
    horizon, through = saved
    later = trail.newest_engine_time_ns(host, through)
    return max((t for t in (horizon, later) if t is not None), default=None)


def _saved_horizon(trail: Any, host: str) -> tuple[int | None, int] | None:
    """(saved last Engine event time, seq it holds through), when the row authenticates."""
    if not hasattr(trail, "newest_engine_time_ns") or not hasattr(trail, "signing_key"):
        return None
    key = mac_key(trail.signing_key)
    saved = trail.load_rule_state(horizon_name(host)) if key is not None else None
    if key is None or saved is None or not 0 < saved.through_seq <= trail.head()[0]:
        return None
    binding = _binding(trail, host, saved.through_seq)
    if binding is None:
        return None
    binding = replace(binding, scope=_horizon_scope(host))
    if not authentic(saved, binding, key):
        return None
    try:
        value = orjson.loads(saved.body)["last_docker_ns"]
    except (ValueError, TypeError, KeyError):
        return None
    if value is not None and not isinstance(value, int):
        return None
    return value, int(saved.through_seq)


def _restore(trail: Any, host: str, key: bytes, head: int) -> tuple[KnownState, int] | None:
    saved = trail.load_rule_state(state_name(host))
    if saved is None or not 0 < saved.through_seq <= head:
        return None
    binding = _binding(trail, host, saved.through_seq)
    if binding is None or not authentic(saved, binding, key):
        log.warning(
            "saved known state of this host does not hold for this trail and key: rebuilding it",
            extra={"fields": {"through_seq": saved.through_seq}},
        )
        return None
    try:
        state = decode_known(saved.body)
    except (ValueError, TypeError, KeyError):
        return None
    return state, int(saved.through_seq)


def _fold_after(trail: Any, host: str, state: KnownState, after: int, head: int) -> KnownState:
    """Folds the host's events stored after seq `after`, each as it is read: a page of
    models at once was what `run` kept of its heap after folding what `ingest` stored
    since its last start (105 MB instead of 89 on the 10M-event growth trail, after
    60,000 ingested events)."""
    for event in stored_after(trail, after, head, page=_PAGE):
        _fold_one(state, event, host)
    return state
