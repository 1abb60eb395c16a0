"""The posture sweep of the live source (`docker_live`): `PostureSweep`.

A posture sweep after every connect and every `docker.sweep_interval_secs`
(`sweep`): the running containers the trail knows are inspected, and each
whose security configuration was not judged yet (it differs from the last
one of its `create`, `observed` or `posture` events, by `config_fingerprint`)
is recorded as a `docktrail` container `posture` event with that
configuration, for the container-config rules. Its id derives from (host,
container, fingerprint), so a configuration is recorded once per container
even if two sweeps race.

Each sweep also tells the source's hooks (`on_running`, `on_sweep`) and hands
on the events they return. The inspects run on the source's worker threads
(`call`); the events go in order with the Engine's (`ObjectOrder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from config.errors import SourceError
from listener.model.event import Actor, Event, natural_id
from listener.rules.fingerprint import config_fingerprint
from listener.sources.docker_engine import Engine, parse_engine_time_ns
from listener.sources.docker_enrich import Enrichment, Inspector
from listener.sources.docker_labels import who_from_labels, why_from_labels
from listener.sources.docker_order import ObjectOrder, Pending
from listener.sources.docker_reconcile import container_name, state_attributes
from listener.sources.docker_state import KnownState, _listed_state
from listener.sources.docker_stats import SourceStats

if TYPE_CHECKING:
    from config.models import DockerConfig

_T = TypeVar("_T")

# The name the live source has always logged under (it was part of `docker`).
log = logging.getLogger("listener.sources.docker")

# Told the running containers the trail knows (their listing) at each sweep; returns events.
OnRunning = Callable[[list[dict[str, Any]]], list[Event]]
# Each sweep, given the Engine and the sweep's reason: more checks' events (`listener.posture`).
OnSweep = Callable[[Engine, str], Awaitable[list[Event]]]


class SweptSource(Protocol):
    """What the posture sweep reads of the live source (`DockerSource`)."""

    config: DockerConfig
    host: str
    engine: Engine
    known: KnownState
    stats: SourceStats
    on_running: OnRunning | None  # each sweep: events about the running containers
    on_sweep: OnSweep | None

    async def call(self, func: Callable[..., _T], *args: Any) -> _T: ...


class PostureSweep:
    """The sweeps of one live source: when they run, and the `posture` events they record."""

    def __init__(self, source: SweptSource, inspector: Inspector, order: ObjectOrder) -> None:
        self._source = source
        self._inspector = inspector
        self._order = order
        self._wanted = asyncio.Event()  # a connect asks for a sweep
        self._reason = "periodic"

    async def sweep(self, reason: str = "periodic") -> int:
        """Records each running container whose configuration was not judged yet.

        Lists the containers, inspects the running ones the trail knows (in the
        worker threads) and hands on a `posture` event for each whose security
        configuration has another fingerprint than the last one judged. A
        container the trail does not know yet is left to its `create` event or
        to a reconciliation's `observed` one. Returns how many were handed on.
        Raises `SourceError` when the Engine cannot list its containers.
        """
        source = self._source
        listed = await source.call(source.engine.containers)
        running = [
            item
            for item in listed
            if _listed_state(item.get("State")) == "running"
            and str(item.get("Id")) in source.known.containers
        ]
        if source.on_running is not None:
            for found in source.on_running(running):
                self._order.put(Pending(found))
        if source.on_sweep is not None:
            for found in await source.on_sweep(source.engine, reason):
                self._order.put(Pending(found))
        inspected = await asyncio.gather(
            *(
                source.call(self._inspector.inspect_with_config, str(item.get("Id")))
                for item in running
            )
        )
        recorded = 0
        for item, (data, enrichment) in zip(running, inspected, strict=True):
            event = self._posture_event(item, data, enrichment, reason)
            if event is not None:
                self._order.put(Pending(event, judge_once=True))
                recorded += 1
        source.stats.sweeps += 1
        return recorded

    def want(self, reason: str) -> None:
        """Ask the sweep loop for a sweep now (a connect; a deployment expires)."""
        self._reason = reason
        self._wanted.set()

    async def loop(
        self, until_wired: Callable[[], Awaitable[None]], stopping: asyncio.Event
    ) -> None:
        """A sweep after every connect and every `sweep_interval_secs` after the last one."""
        await until_wired()
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._source.config.sweep_interval_secs):
                    await self._wanted.wait()
            if stopping.is_set():
                return
            reason, self._reason = self._reason, "periodic"
            self._wanted.clear()
            try:
                recorded = await self.sweep(reason)
            except SourceError as exc:  # the Engine is away: its reconnect asks again
                log.warning(f"posture sweep skipped: {exc}")
                continue
            except Exception:  # a bug must not end the sweeps, nor the source
                log.exception("posture sweep failed")
                continue
            log.log(
                logging.INFO if recorded else logging.DEBUG,
                "posture sweep done",
                extra={"fields": {"reason": reason, "recorded": recorded}},
            )

    def not_judged(self, event: Event) -> bool:
        """At its turn to be handed on: whether a posture event still says something new."""
        known = self._source.known.containers.get(event.actor.id)
        if known is None:
            return False  # removed meanwhile
        if known.config_fingerprint == event.attributes.get("config_fingerprint"):
            return False
        self._source.stats.posture += 1
        return True

    def _posture_event(
        self,
        listed: dict[str, Any],
        data: dict[str, Any] | None,
        enrichment: Enrichment,
        reason: str,
    ) -> Event | None:
        """A `posture` event, or None: gone, not inspectable, or its configuration was judged."""
        host = self._source.host
        cid = str(listed.get("Id"))
        known = self._source.known.containers.get(cid)
        if data is None or enrichment.config is None or known is None:
            return None
        fingerprint = config_fingerprint(enrichment.config)
        if fingerprint == known.config_fingerprint:
            return None
        state_info: Mapping[str, Any] = data.get("State") or {}
        labels = dict(listed.get("Labels") or {})
        attributes: dict[str, Any] = {
            "reason": reason,
            "state": _listed_state(listed.get("State")),
            "status": str(listed.get("Status") or ""),
            "labels": labels,
            "config_fingerprint": fingerprint,
            "previous_config_fingerprint": known.config_fingerprint,
            **state_attributes(state_info, parse_engine_time_ns(state_info.get("StartedAt"))),
        }
        now = time.time_ns()
        return Event(
            # Once per container and configuration: a repeated sweep stores nothing twice.
            id=natural_id("docktrail", host, "container", "posture", cid, fingerprint),
            time_ns=now,
            source="docktrail",
            host=host,
            type="container",
            action="posture",
            actor=Actor(
                id=cid,
                name=container_name(listed, data) or known.name,
                image=listed.get("Image") or known.image,
            ),
            attributes=attributes,
            who=who_from_labels(labels),
            why=why_from_labels(labels),
            config=enrichment.config,
        )
