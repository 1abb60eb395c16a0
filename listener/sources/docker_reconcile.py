"""What the live source (`docker_live`) records of what it may have missed (`Reconciler`).

* A `docktrail` `daemon`/`gap` event naming the window (`from_ns`,
  `until_ns`) where events may have been missed. dockerd keeps its last 256
  events for replay; after a (re)connect or a stall the source reads that
  buffer (`since=0`), which proves nothing was lost when it reaches back to
  the last event we have. Otherwise the window between that event and the
  oldest buffered one is the gap. Stalls: a paused process (SIGSTOP, an
  overloaded host) is noticed by `StallWatchdog`; events queued for us before
  the pause still arrive, so the gap starts after the last of those.
* After a (re)connect, and after a stall that lost events, `docktrail`
  `observed` events for containers (`attributes.change`: appeared,
  disappeared, started, stopped, restarted) and images (appeared,
  disappeared) whose state differs from what the trail knows
  (`KnownState`). Objects with an event newer than the listing are left out.
  The missed Engine events themselves are never invented.

The `daemon` events (`connected` too) are made here. Every Engine call goes
through the source's worker threads (`call`); events go on through the
source (`hand_on`, `replay`), in order with the Engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from config.errors import SourceError
from listener.model.event import Actor, Event, format_time_ns, natural_id
from listener.sources.docker_engine import (
    DaemonIdentity,
    Engine,
    parse_engine_time_ns,
    since_arg,
)
from listener.sources.docker_enrich import Enrichment, Inspector
from listener.sources.docker_inspect import _image_attributes
from listener.sources.docker_labels import who_from_labels, why_from_labels
from listener.sources.docker_state import KnownState, _listed_state
from listener.sources.docker_stats import SourceStats
from listener.sources.docker_stream import REPLAY_OVERLAP_NS, WATCHDOG_TICK_NS, Stall

_T = TypeVar("_T")

# The name the live source has always logged under (it was part of `docker`).
log = logging.getLogger("listener.sources.docker")

_ENGINE_PUBLISH_TIMEOUT_NS = 100_000_000  # dockerd drops an event for a reader after this
_DRAIN_IDLE_SECS = 0.3  # a stalled stream's backlog counts as read after this much quiet
_DRAIN_MAX_SECS = 5.0


class ReconciledSource(Protocol):
    """What the reconciliation reads of the live source (`DockerSource`) and hands to it."""

    host: str
    engine: Engine
    known: KnownState
    identity: DaemonIdentity | None
    stats: SourceStats
    horizon_ns: int | None  # everything up to here is in hand

    def engine_now(self) -> int: ...

    async def call(self, func: Callable[..., _T], *args: Any) -> _T: ...

    def hand_on(self, event: Event) -> None: ...

    def replay(self, buffer: list[dict[str, Any]], from_ns: int) -> int: ...

    def caught_up(self, idle_secs: float) -> bool: ...


@dataclass(slots=True)
class _Drain:
    """After a stall: the stream first delivers its backlog from before, then live events."""

    cutoff_ns: int  # events older than this were queued for us before the stall
    prefix_end_ns: int  # the newest of them the stream has delivered so far
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Reconciler:
    """Gaps and `observed` events after a (re)connect or a stall; the `daemon` events."""

    def __init__(self, source: ReconciledSource, inspector: Inspector) -> None:
        self._source = source
        self._inspector = inspector
        self._drains: list[_Drain] = []

    def stream_read(self, time_nano: int) -> None:
        """The stream handed on an event of `time_nano`: a stall's backlog may be read."""
        for drain in self._drains:
            if time_nano >= drain.cutoff_ns:
                drain.done.set()
            else:
                drain.prefix_end_ns = max(drain.prefix_end_ns, time_nano)

    # ------------------------------------------------------------------ gaps

    async def oldest_held(self, until_ns: int) -> int | None:
        """The oldest event the Engine holds up to `until_ns`, read as the stream opens
        (None when it cannot say). dockerd replays to the stream what it holds after
        `since`, so nothing after this one is lost, however long the source then waits
        for `wired` (a trail being upgraded) while newer events push it out of the buffer."""
        try:
            return _oldest(await self._source.call(self._source.engine.buffered_events, until_ns))
        except SourceError as exc:
            log.warning(f"could not read the Engine's replay buffer: {exc}")
            return None

    async def reconcile(
        self, reason: str, horizon: int | None, replay_from_ns: int, read_oldest: int | None = None
    ) -> None:
        """Lists the host, reads the Engine's replay buffer, records what may be lost.

        The buffer is read after the listing, and its events are handed on
        before comparing, so that a change the listing shows is explained by
        its event when the Engine still has it. `read_oldest`: the oldest event
        the stream already handed on (`DockerSource._hand_on_read`); nothing after it is lost.
        """
        source = self._source
        listed_at = source.engine_now()
        containers, images = await source.call(self._list_host)
        until = source.engine_now()
        buffer = await source.call(source.engine.buffered_events, until)
        source.replay(buffer, replay_from_ns)
        oldest = min((t for t in (_oldest(buffer), read_oldest) if t is not None), default=None)
        if horizon is not None and (oldest is None or oldest > horizon):
            # dockerd only has the events after `oldest` (it restarted, or more than
            # 256 happened): those between the last one we have and it may be lost.
            self._record_gap(horizon, oldest if oldest is not None else until, reason)
        source.horizon_ns = max(source.horizon_ns or 0, until)
        await self._compare(containers, images, listed_at, reason)

    async def recover_from_stall(self, stall: Stall) -> None:
        """Reads the Engine's replay buffer again after a stall; a gap when it falls short."""
        source = self._source
        source.stats.stalls += 1
        skew = source.identity.clock_offset_ns if source.identity else 0
        # Events queued for us before the pause: older than its end, less the time
        # dockerd waits on a full queue, less the watchdog's own delay.
        cutoff = stall.resumed_ns + skew - _ENGINE_PUBLISH_TIMEOUT_NS - 3 * WATCHDOG_TICK_NS
        drain = _Drain(cutoff_ns=cutoff, prefix_end_ns=stall.since_ns)
        self._drains.append(drain)
        log.warning(
            f"docktrail did not run for {stall.secs:.1f}s: reading the Engine's events again",
            extra={"fields": {"since": since_arg(stall.since_ns)}},
        )
        try:
            # Read the buffer at once, before more events push the missed ones out;
            # hand it on after the stream's backlog, which holds most of them.
            buffer = await source.call(source.engine.buffered_events, source.engine_now())
            await self._wait_drained(drain)
            recovered = source.replay(buffer, stall.since_ns - REPLAY_OVERLAP_NS)
            oldest = _oldest(buffer)
            # Lost: events after the last one the stream had queued before the
            # pause, older than anything the buffer still holds.
            covered = oldest is None or oldest <= drain.prefix_end_ns
            log.info(
                "stall checked: " + ("nothing lost" if covered else "events may be lost"),
                extra={"fields": {"recovered": recovered, "buffered": len(buffer)}},
            )
            if covered:
                return
            assert oldest is not None
            self._record_gap(drain.prefix_end_ns, oldest, "stall")
            listed_at = source.engine_now()
            containers, images = await source.call(self._list_host)
            await self._compare(containers, images, listed_at, "stall")
        except SourceError as exc:
            # The connection is failing too: its reconnect reconciles.
            log.warning(f"could not check the stall: {exc}")
        finally:
            self._drains.remove(drain)

    async def _wait_drained(self, drain: _Drain) -> None:
        """Until the backlog from before the stall is read (or the stream is quiet)."""
        started = time.monotonic()
        while not drain.done.is_set() and time.monotonic() - started < _DRAIN_MAX_SECS:
            if self._source.caught_up(_DRAIN_IDLE_SECS):
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await drain.done.wait()

    def _record_gap(self, from_ns: int, until_ns: int, reason: str) -> None:
        self._source.stats.gaps += 1
        window = {"from": format_time_ns(from_ns), "until": format_time_ns(until_ns)}
        log.warning(
            "events of the Docker Engine may be missing: recorded a gap",
            extra={"fields": {**window, "reason": reason}},
        )
        attributes = {"from_ns": from_ns, "until_ns": until_ns, **window, "reason": reason}
        self._source.hand_on(self.daemon_event("gap", attributes))

    # ------------------------------------------------------------------ reconciliation

    def _list_host(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        engine = self._source.engine
        return engine.containers(), engine.images()

    async def _compare(
        self,
        containers: list[dict[str, Any]],
        images: list[dict[str, Any]],
        listed_at: int,
        reason: str,
    ) -> None:
        """Stores an `observed` event for each difference between the listing and `known`.

        Objects with an event since `listed_at` are left out: that event says
        more than the listing does.
        """
        changes = self._container_changes(containers, listed_at)
        inspected = await asyncio.gather(*(self._inspect_change(cid, c) for cid, c, _ in changes))
        for (cid, change, listed), (data, enrichment) in zip(changes, inspected, strict=True):
            known = self._source.known.containers.get(cid)
            if known is not None and known.last_event_ns >= listed_at:
                continue  # an event came in while we inspected: it says more
            event = self._observed_container(cid, change, listed, data, enrichment, reason)
            if event is not None:
                self._source.hand_on(event)
        for event in self._image_changes(images, listed_at, reason):
            self._source.hand_on(event)

    def _container_changes(
        self, containers: list[dict[str, Any]], listed_at: int
    ) -> list[tuple[str, str, dict[str, Any] | None]]:
        """(id, change, listing) of containers to look at; `restarted?` needs an inspect."""
        known_state = self._source.known
        changes: list[tuple[str, str, dict[str, Any] | None]] = []
        listed = {str(c.get("Id")): c for c in containers}
        for cid, item in listed.items():
            known = known_state.containers.get(cid)
            if known is None:
                if not known_state.removed_since(cid, listed_at):
                    changes.append((cid, "appeared", item))
                continue
            if known.last_event_ns >= listed_at or known.state is None:
                continue
            state = _listed_state(item.get("State"))
            if state == "running" and known.state != "running":
                changes.append((cid, "started", item))
            elif state != "running" and known.state == "running":
                changes.append((cid, "stopped", item))
            elif state == "running" and known.started_ns is not None:
                changes.append((cid, "restarted?", item))
        for cid, known in known_state.containers.items():
            if cid not in listed and known.last_event_ns < listed_at:
                changes.append((cid, "disappeared", None))
        return changes

    async def _inspect_change(
        self, container_id: str, change: str
    ) -> tuple[dict[str, Any] | None, Enrichment]:
        if change == "disappeared":
            return None, Enrichment()
        return await self._source.call(self._inspector.inspect_with_config, container_id)

    def _observed_container(
        self,
        cid: str,
        change: str,
        listed: dict[str, Any] | None,
        data: dict[str, Any] | None,
        enrichment: Enrichment,
        reason: str,
    ) -> Event | None:
        known = self._source.known.containers.get(cid)
        state_info: Mapping[str, Any] = (data or {}).get("State") or {}
        started_ns = parse_engine_time_ns(state_info.get("StartedAt"))
        if change == "restarted?":
            if known is None or started_ns is None or started_ns <= (known.started_ns or 0):
                return None
            change = "restarted"
        state = _listed_state(listed.get("State")) if listed is not None else "gone"
        attributes: dict[str, Any] = {
            "change": change,
            "reason": reason,
            "state": state,
            "previous_state": known.state if known is not None else None,
        }
        if listed is not None:
            attributes["status"] = str(listed.get("Status") or "")
            attributes["labels"] = dict(listed.get("Labels") or {})
        attributes.update(state_attributes(state_info, started_ns))
        if change != "disappeared":
            attributes.update(enrichment.attributes)
        name = container_name(listed, data) or (known.name if known else None)
        image = (listed or {}).get("Image") or (known.image if known else None)
        event = self._observed("container", cid, change, name, image, attributes)
        event.config = enrichment.config or {}
        return event

    def _image_changes(
        self, images: list[dict[str, Any]], listed_at: int, reason: str
    ) -> Iterator[Event]:
        known_state = self._source.known
        listed = {str(image.get("Id")): image for image in images}
        for image_id, item in listed.items():
            if image_id in known_state.images or known_state.removed_since(image_id, listed_at):
                continue
            attributes = {"change": "appeared", "reason": reason, **_image_attributes(item)}
            yield self._observed(
                "image", image_id, "appeared", _image_name(item, image_id), None, attributes
            )
        for image_id, last_event in list(known_state.images.items()):
            if image_id not in listed and last_event < listed_at:
                attributes = {"change": "disappeared", "reason": reason, "image_id": image_id}
                yield self._observed("image", image_id, "disappeared", image_id, None, attributes)

    # ------------------------------------------------------------------ docktrail events

    def daemon_event(self, action: str, attributes: dict[str, Any]) -> Event:
        """A `daemon` event of the connected Engine: `connected`, `gap`."""
        source = self._source
        identity = source.identity
        assert identity is not None
        now = time.time_ns()
        return Event(
            id=natural_id("docktrail", source.host, "daemon", action, identity.id, now),
            time_ns=now,
            source="docktrail",
            host=source.host,
            type="daemon",
            action=action,
            actor=Actor(id=identity.id, name=identity.name or None),
            attributes={"docker_host": source.engine.host, **identity.attributes(), **attributes},
        )

    def _observed(
        self,
        type_: str,
        object_id: str,
        change: str,
        name: str | None,
        image: str | None,
        attributes: dict[str, Any],
    ) -> Event:
        source = self._source
        source.stats.observed += 1
        now = time.time_ns()
        labels: Mapping[str, str] = attributes.get("labels") or {}
        return Event(
            id=natural_id("docktrail", source.host, type_, "observed", object_id, change, now),
            time_ns=now,
            source="docktrail",
            host=source.host,
            type=type_,
            action="observed",
            actor=Actor(id=object_id, name=name, image=image),
            attributes=attributes,
            who=who_from_labels(labels),
            why=why_from_labels(labels),
        )


def container_name(listed: Mapping[str, Any] | None, data: Mapping[str, Any] | None) -> str | None:
    names = (listed or {}).get("Names") or []
    name = names[0] if names else (data or {}).get("Name")
    return str(name).lstrip("/") if name else None


def state_attributes(state: Mapping[str, Any], started_ns: int | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if started_ns is not None:
        attributes["started_at_ns"] = started_ns
        attributes["started_at"] = format_time_ns(started_ns)
    finished_ns = parse_engine_time_ns(state.get("FinishedAt"))
    if finished_ns is not None:
        attributes["finished_at"] = format_time_ns(finished_ns)
    if finished_ns is not None and not state.get("Running"):
        attributes["exit_code"] = state.get("ExitCode")
    return attributes


def _oldest(buffer: list[dict[str, Any]]) -> int | None:
    times = [raw["timeNano"] for raw in buffer if isinstance(raw.get("timeNano"), int)]
    return min(times) if times else None


def _image_name(data: Mapping[str, Any], image_id: str) -> str:
    tags = [tag for tag in data.get("RepoTags") or [] if tag != "<none>:<none>"]
    return str(tags[0]) if tags else image_id
