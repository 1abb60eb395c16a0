"""`docktrail intent …`: declare, list, close deployment intents; what is due.

Registered on the main group by `listener.cli`; like every command module, it imports only click at
module level. Intents are appended to the trail as events; a running service
reads them from there before it matches the next create.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from listener.cli.common import State, handles_errors, main, pass_state

if TYPE_CHECKING:
    from listener.model.event import Event, Who


@main.group()
def intent() -> None:
    """Declared deployment intents: who deploys what, why, until when."""


@intent.command("declare")
@click.option("--image", help="Glob of image references (registry.internal/app:*).")
@click.option("--name", help="Glob of container names (web-*).")
@click.option("--who", required=True, help="Login that will deploy.")
@click.option("--why", required=True, help="Reason of the deployment.")
@click.option("--ticket", help="Change ticket.")
@click.option("--expires", help="RFC 3339 time, unix seconds, or a duration from now (7d).")
@pass_state
@handles_errors
def declare(
    state: State,
    image: str | None,
    name: str | None,
    who: str,
    why: str,
    ticket: str | None,
    expires: str | None,
) -> None:
    """Declare an intent; prints its id. Needs --image or --name (or both)."""
    from pydantic import ValidationError

    from config.errors import InputError
    from listener.intents import IntentSpec, declare_event

    fields = {"image": image, "name": name, "who": who, "why": why, "ticket": ticket,
              "expires": expires}  # fmt: skip
    try:
        spec = IntentSpec.model_validate(fields)
    except ValidationError as exc:
        problem = "; ".join(
            f"--{'.'.join(map(str, e['loc'])) or 'image/--name'}: {e['msg']}" for e in exc.errors()
        )
        raise InputError(problem) from None
    event = declare_event(spec, host=state.config.host_name(), declared_by=_caller(), via="cli")
    _append(state, event)
    click.echo(event.actor.id)


@intent.command("close")
@click.argument("intent_id")
@pass_state
@handles_errors
def close(state: State, intent_id: str) -> None:
    """Close an open intent: later creates no longer match it."""
    from config.errors import InputError
    from listener.intents import close_event, load_book

    with _trail(state) as trail:
        found = load_book(trail).intents.get(intent_id)
        if found is None:
            raise InputError(f"no intent {intent_id!r} in the trail")
        if found.closed_ns is not None:
            raise InputError(f"intent {intent_id} is closed already")
        trail.append(
            [close_event(intent_id, host=state.config.host_name(), closed_by=_caller(), via="cli")]
        )
    click.echo(f"closed {intent_id}")


@intent.command("list")
@click.option("--all", "show_all", is_flag=True, help="Closed and expired intents too.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))  # fmt: skip
@pass_state
@handles_errors
def list_intents(state: State, show_all: bool, fmt: str) -> None:
    """Open intents (the ones creates can still match), oldest first."""
    import time

    from listener.intents import describe, load_book

    with _trail(state) as trail:
        book = load_book(trail)
    now = time.time_ns()
    chosen = book.intents.values() if show_all else book.open_intents(now)
    _write(describe(sorted(chosen, key=lambda i: i.declared_ns), state.timezone()), fmt)


@intent.command("due")
@click.option("--within", default="24h", show_default=True,
              help="Duration ahead: what expires before now + this.")  # fmt: skip
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))  # fmt: skip
@pass_state
@handles_errors
def due(state: State, within: str, fmt: str) -> None:
    """Intents not closed that expire soon (or have expired), with their live containers."""
    import time

    from listener.intents import describe, load_book, parse_expires_ns

    now = time.time_ns()
    horizon = parse_expires_ns(within, now)
    with _trail(state) as trail:
        book = load_book(trail)
        chosen = sorted(
            (i for i in book.intents.values() if i.closed_ns is None
             and i.expires_ns is not None and i.expires_ns <= horizon),
            key=lambda i: i.expires_ns or 0,
        )  # fmt: skip
        rows = describe(chosen, state.timezone())
        containers = _live_containers(trail, {i.id for i in chosen})
    for row in rows:
        row["containers"] = containers.get(row["id"], [])
    _write(rows, fmt, (*_COLUMNS, "containers"))


def _live_containers(trail: Any, intent_ids: set[str]) -> dict[str, list[str]]:
    """Per intent: the containers created under it that the trail has not seen removed."""
    from listener.model.event import container_gone
    from sinks.base import EventFilter

    if not intent_ids:
        return {}
    created: dict[str, tuple[str, str]] = {}
    for event in trail.query(EventFilter(type="container")):
        found = event.attributes.get("intent") if event.source == "docker" else None
        if event.action == "create" and isinstance(found, dict) and found.get("id") in intent_ids:
            created[event.actor.id] = (str(found["id"]), event.actor.name or event.actor.id[:12])
        elif container_gone(event):  # destroyed, or found gone by a reconciliation
            created.pop(event.actor.id, None)
    result: dict[str, list[str]] = {}
    for intent_id, name in created.values():
        result.setdefault(intent_id, []).append(name)
    return result


_COLUMNS = ("id", "who", "image", "name", "expires", "ticket", "why")


def _write(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] = _COLUMNS) -> None:
    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False))
        return
    table = [[c.upper() for c in columns]]
    for row in rows:
        table.append([_cell(row.get(c)) for c in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, list):
        value = ",".join(map(str, value)) or None
    text = "-" if value is None else str(value)
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _caller() -> Who:
    """Who runs this command: the audit login (survives sudo) and the effective user."""
    import os
    import pwd

    from listener.model.event import Who

    def name(uid: int | None) -> str | None:
        if uid is None:
            return None
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    auid: int | None = None
    try:
        with open("/proc/self/loginuid", encoding="ascii") as handle:
            value = int(handle.read().strip())
        auid = None if value == 0xFFFFFFFF else value
    except (OSError, ValueError):
        auid = None
    uid = os.geteuid()
    return Who(
        login=name(auid), auid=auid, user=name(uid), uid=uid, pid=os.getpid(), method="local-cli"
    )


def _trail(state: State) -> Any:
    from listener.cli.common import existing_trail

    return existing_trail(state)


def _append(state: State, event: Event) -> None:
    from sinks.sqlite import SQLiteTrail

    with SQLiteTrail.from_config(state.config.trail, state.config.host_name()) as trail:
        trail.append([event])
