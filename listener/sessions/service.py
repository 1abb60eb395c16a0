"""The tracker between the sources and the trail, for `run` and `ingest`.

Process records come from the audit source (`add`); each exec's Engine event,
once attributed, opens its session (`observe`, or the `after_write` stage of
the live pipeline, which sees events as stored, `who` filled in). Commands
that are due go into the pipeline like any source's events: `pump` (live, on
the clock) or `due` (ingest, on the audit log's time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from config.exec_sessions import ExecSessionsConfig
from listener import redact
from listener.model.event import Actor, Event
from listener.sessions.records import ProcessRecord, SessionInfo
from listener.sessions.tracker import SessionTracker

Put = Callable[[Event], Awaitable[None]]

_TICK_SECS = 0.2
# Live: how far behind the clock the audit log may be read; a command's exit is
# looked for up to its exit wait plus this, so live and ingest agree on it.
_LIVE_LAG_NS = 1_000_000_000


def session_info(event: Event) -> SessionInfo | None:
    """The session an Engine `exec_start` opens (None for any other event)."""
    if event.type != "container" or event.action != "exec_start":
        return None
    exec_id = event.attributes.get("execID")
    if not isinstance(exec_id, str) or not exec_id:
        return None
    config = event.config
    pid = event.attributes.get("exec_pid")
    command = config.get("command")
    return SessionInfo(
        exec_id=exec_id,
        container=Actor(id=event.actor.id, name=event.actor.name, image=event.actor.image),
        host=event.host,
        owner=event.who.model_copy(deep=True),
        time_ns=event.time_ns,
        root_pid=pid if isinstance(pid, int) and pid > 0 else None,
        user=str(config["user"]) if config.get("user") else None,
        tty=bool(config.get("tty")),
        interactive=bool(config.get("interactive")),
        privileged=bool(config.get("privileged")),
        command=[str(word) for word in command] if isinstance(command, list) else [],
        command_text=str(event.attributes.get("action_detail") or ""),
    )


class ExecSessions:
    """`SessionTracker` wired to events: Engine execs in, due commands out."""

    def __init__(
        self, config: ExecSessionsConfig, host: str, redactor: redact.Redactor | None = None
    ) -> None:
        self.tracker = SessionTracker(config, host, redactor)

    def add(self, record: ProcessRecord) -> None:
        self.tracker.add(record)

    def observe(self, event: Event) -> None:
        if event.type != "container":
            return
        info = session_info(event)
        if info is not None:
            self.tracker.open(info)
        elif event.action == "exec_die":
            exec_id = event.attributes.get("execID")
            if isinstance(exec_id, str):
                self.tracker.ended(exec_id)

    def due(self, now_ns: int) -> list[Event]:
        return self.tracker.due(now_ns)

    def flush(self) -> list[Event]:
        return self.tracker.flush()

    # -- live pipeline stage --------------------------------------------------

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        for event in stored:
            self.observe(event)

    async def pump(self, put: Put) -> None:
        """Live: hands due commands on until cancelled, then what is still held."""
        try:
            while True:
                await asyncio.sleep(_TICK_SECS)
                for event in self.tracker.due(time.time_ns() - _LIVE_LAG_NS):
                    await put(event)
        except asyncio.CancelledError:
            for event in self.tracker.flush():
                await put(event)
            raise
