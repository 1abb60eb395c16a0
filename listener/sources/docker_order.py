"""The order in which the live source (`docker_live`) hands events on: stream order per object.

An Engine event is handed on only after its inspect result (`Enrichment`,
started at once) is in, and after the events of its own object read before
it (`ObjectOrder`); the source's `docktrail` events are put in the same order.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from listener.model.event import Event
from listener.sources.docker_enrich import Enrichment


@dataclass(slots=True)
class Pending:
    """An event waiting for its turn to be handed on."""

    event: Event
    enrichment: asyncio.Future[Enrichment] | None = None
    # A posture event: dropped when, by its turn, its configuration has been judged
    # (the create of a new container, held behind its inspect, came first).
    judge_once: bool = False

    @property
    def waiting(self) -> bool:
        return self.enrichment is not None and not self.enrichment.done()


class ObjectOrder:
    """Stream order per object: an event waits for the inspects of its own object only.

    A container's create is inspected at once, but dockerd answers that inspect
    only after a start in progress finishes (both take the container's lock),
    and a start can take seconds. Holding every event of the host behind it
    would delay them all; holding the container's own events keeps its story
    in order (create with its config, then start, …).
    """

    def __init__(self) -> None:
        self.ready: asyncio.Queue[Pending | None] = asyncio.Queue()
        self._held: dict[tuple[str, str], deque[Pending]] = {}

    def put(self, pending: Pending) -> None:
        key = (pending.event.type, pending.event.actor.id)
        held = self._held.get(key)
        if held is not None:
            held.append(pending)
        elif pending.waiting:
            self._held[key] = deque([pending])
            self._release_when_done(key, pending)
        else:
            self.ready.put_nowait(pending)

    async def drain(self) -> None:
        """Waits until no event is held (shutting down: every inspect finishes)."""
        while self._held:
            waiting = [
                p.enrichment
                for held in self._held.values()
                for p in held
                if p.enrichment is not None and not p.enrichment.done()
            ]
            if waiting:
                await asyncio.wait(waiting)
            await asyncio.sleep(0)  # lets their done-callbacks release the events

    def _release_when_done(self, key: tuple[str, str], pending: Pending) -> None:
        assert pending.enrichment is not None
        pending.enrichment.add_done_callback(lambda _: self._release(key))

    def _release(self, key: tuple[str, str]) -> None:
        held = self._held[key]
        while held:
            if held[0].waiting:
                self._release_when_done(key, held[0])
                return
            self.ready.put_nowait(held.popleft())
        del self._held[key]
