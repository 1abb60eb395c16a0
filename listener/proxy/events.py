"""`api-call` events, and the ledger that ties the Engine's events to them.

Each state-changing request through the proxy is one `api-call` event
(source `docktrail`, type `api-call`, action the HTTP method) whose `who`
comes from the peer credentials. The ledger keeps the recent calls with the
ids and names they touched, so that the Engine events that follow get the
same `who` with `method = "peer"` (`PeerAttribution`, a pipeline stage).
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from listener import redact
from listener.model.event import Actor, Event, Who, natural_id
from listener.proxy.judge import Call
from listener.proxy.peer import Peer

API_CALL = "api-call"
# The Engine stamps an event while it handles the request that caused it: after
# the proxy saw the request start, and about when the response goes out.
EARLY_NS = 0  # same clock: the proxy stamps the start before it forwards
LATE_NS = 10_000_000
BEFORE_NS = 100_000_000  # an event is never much older than the request that caused it
AFTER_NS = 2_000_000_000  # a few Engine events (die, destroy) follow the response
KEEP_NS = 60_000_000_000
MAX_CALLS = 4096


def peer_who(peer: Peer) -> Who:
    command = shlex.join(redact.active().argv(peer.argv))[:4096] if peer.argv else None
    return Who(
        login=peer.login,
        auid=peer.auid,
        user=peer.user,
        uid=peer.uid,
        pid=peer.pid,
        command=command,
        exe=peer.exe,
        ses=peer.ses,
        method="peer",
        confidence="high",
    )


def _set_event() -> asyncio.Event:
    event = asyncio.Event()
    event.set()
    return event


@dataclass(slots=True)
class PeerCall:
    """One state-changing request, from its start to its response (or its end)."""

    event_id: str
    path: str
    who: Who
    peer: Peer
    start_ns: int
    keys: set[tuple[str, str]] = field(default_factory=set)  # (object kind, id or name)
    end_ns: int | None = None
    awaiting_id: bool = False  # a create: the Engine names the new object in the response
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # cleared while the proxy reads the client's details (the call is forwarded meanwhile)
    identified: asyncio.Event = field(default_factory=_set_event)

    def finish(self, keys: Sequence[tuple[str, str]]) -> None:
        self.keys.update(k for k in keys if k[1])
        self.end_ns = time.time_ns()
        self.done.set()

    def in_flight_at(self, time_ns: int) -> bool:
        end = self.end_ns if self.end_ns is not None else time.time_ns()
        return self.start_ns - EARLY_NS <= time_ns <= end + LATE_NS

    def covers(self, time_ns: int) -> bool:
        end = self.end_ns if self.end_ns is not None else time.time_ns()
        return self.start_ns - BEFORE_NS <= time_ns <= end + AFTER_NS


def api_call_id(host: str, peer: Peer, start_ns: int, method: str, target: str) -> str:
    return natural_id("docktrail", host, API_CALL, peer.pid, start_ns, method, target)


def api_call_event(
    host: str,
    peer: Peer,
    who: Who,
    method: str,
    target: str,
    call: Call,
    *,
    status: int | None,
    start_ns: int,
    refused: str | None = None,
    response_id: str | None = None,
) -> Event:
    attributes: dict[str, Any] = {
        "method": method,
        "path": call.path,
        "query": redact.active().text(target.partition("?")[2])[:2048],
        "status": status,
        "peer": peer.summary(),
    }
    if call.body:
        attributes["body"] = call.body
    if call.body_error:
        attributes["body_error"] = call.body_error
    if refused:
        attributes["refused"] = refused
    if response_id:
        attributes["response_id"] = response_id
    name = call.names[-1] if call.names else None
    return Event(
        id=api_call_id(host, peer, start_ns, method, target),
        time_ns=start_ns,
        source="docktrail",
        host=host,
        type=API_CALL,
        action="refused" if refused else method.lower(),
        actor=Actor(id=response_id or name or "", name=name, image=call.image),
        attributes=attributes,
        who=who.model_copy(),
    )


class PeerLedger:
    """The recent peer calls, for attribution of the Engine events that follow."""

    def __init__(self) -> None:
        self._calls: deque[PeerCall] = deque(maxlen=MAX_CALLS)

    def open(
        self,
        event_id: str,
        path: str,
        who: Who,
        peer: Peer,
        keys: Sequence[tuple[str, str]],
        *,
        awaiting_id: bool,
    ) -> PeerCall:
        call = PeerCall(event_id, path, who, peer, time.time_ns(), {k for k in keys if k[1]})
        call.awaiting_id = awaiting_id
        self._calls.append(call)
        self._evict(call.start_ns)
        return call

    def match(self, event: Event) -> tuple[PeerCall, str] | None:
        """The call that names the event's object: one in flight at the event first, then
        the latest that ended shortly before it (die, destroy follow a stop or a remove)."""
        keys = _event_keys(event)
        best: tuple[int, int, PeerCall, str] | None = None
        for call in self._calls:
            if not call.covers(event.time_ns) or not _may_cause(call, event):
                continue
            for matched_by, kind, value in keys:
                if any(kind == k and _same(value, v) for k, v in call.keys):
                    rank = (1 if call.in_flight_at(event.time_ns) else 0, call.start_ns)
                    if best is None or rank > best[:2]:
                        best = (*rank, call, matched_by)
                    break
        return None if best is None else (best[2], best[3])

    def in_flight(self, time_ns: int) -> list[PeerCall]:
        return [
            c
            for c in self._calls
            if c.awaiting_id and c.end_ns is None and c.start_ns - BEFORE_NS <= time_ns
        ]

    def _evict(self, now_ns: int) -> None:
        while (
            self._calls
            and self._calls[0].end_ns is not None
            and (now_ns - self._calls[0].end_ns > KEEP_NS)
        ):
            self._calls.popleft()


# Engine actions that only one endpoint causes; any other action: any call naming the object.
_CAUSED_BY = {
    "create": ("/containers/create", "/volumes/create", "/networks/create"),
    "attach": ("/attach",),
    "start": ("/start",),
    "exec_create": ("/exec",),
    "exec_start": ("/start",),
    "pull": ("/images/create",),
    "load": ("/images/load",),
}


def _may_cause(call: PeerCall, event: Event) -> bool:
    paths = _CAUSED_BY.get(event.action.split(":", 1)[0])
    return paths is None or call.path.endswith(paths)


def _same(value: str, named: str) -> bool:
    """The event's id or name is what the call named (an id may be abbreviated)."""
    return value == named or (len(named) >= 12 and value.startswith(named))


def _event_keys(event: Event) -> list[tuple[str, str, str]]:
    """(matched_by, object kind, id or name) of what the event is about."""
    keys: list[tuple[str, str, str]] = []
    attributes = event.attributes
    exec_id = attributes.get("execID") or attributes.get("exec_id")
    if isinstance(exec_id, str) and exec_id:
        keys.append(("exec-id", "exec", exec_id))
    if event.actor.id:
        keys.append(("id", event.type, event.actor.id))
    if event.actor.name:
        keys.append(("name", event.type, event.actor.name.lstrip("/")))
    name = attributes.get("name")
    if isinstance(name, str) and name:
        keys.append(("name", event.type, name))
    return keys


class PeerAttribution:
    """Pipeline stage: Engine events caused by a peer call get its `who` (`method = peer`).

    Runs after the auditd correlation: peer credentials name the exact client,
    so they win over a CLI call that only fitted the time window.
    """

    def __init__(self, ledger: PeerLedger, wait_secs: float = 1.0) -> None:
        self._ledger = ledger
        self._wait = wait_secs

    async def before_write(self, batch: list[Event]) -> list[Event]:
        for event in batch:
            if event.source == "docker":
                await self._attribute(event)
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        return None

    async def _attribute(self, event: Event) -> None:
        found = self._ledger.match(event)
        if found is None:
            pending = self._ledger.in_flight(event.time_ns)
            if pending:  # the create event comes before the response that names its id
                waits = [asyncio.create_task(c.done.wait()) for c in pending]
                await asyncio.wait(waits, timeout=self._wait)
                for task in waits:
                    task.cancel()
                found = self._ledger.match(event)
        if found is None:
            return
        call, kind = found
        if not call.identified.is_set():  # forwarded before its client's details were read
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.identified.wait(), self._wait)
        who = call.who.model_copy()
        who.matched_by = kind
        who.claimed = event.who.claimed
        event.who = who
        peer: dict[str, Any] = {"call": call.event_id}
        if call.peer.container_id:
            peer["container"] = {"id": call.peer.container_id, "name": call.peer.container_name}
        event.attributes["peer_call"] = peer
