"""`docktrail notify …`: try the destinations, see and flush the outbox.

Registered on the main group by `listener.cli`; like every command module, it imports only click at
module level.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from listener.cli.common import (
    State,
    existing_trail,
    flush_outbox,
    handles_errors,
    main,
    pass_state,
)

if TYPE_CHECKING:
    from config.models import Destination


@main.group()
def notify() -> None:
    """Alert delivery: test the destinations, inspect and flush the outbox."""


@notify.command("test")
@click.option("--destination", "names", multiple=True,
              help="Only this destination (repeatable); default: every one.")  # fmt: skip
@pass_state
@handles_errors
def notify_test(state: State, names: tuple[str, ...]) -> None:
    """Send a sample alert to each destination and print what each one answered.

    Exit 0 when every destination accepted it, 1 otherwise. The trail and its
    outbox are not touched.
    """
    import asyncio

    results = asyncio.run(_send_samples(_chosen(state, names), state))
    for name, safe_url, outcome in results:
        mark = "ok  " if outcome.ok else "FAIL"
        line = f"{mark} {name} ({safe_url}): {outcome.status} in {outcome.elapsed_ms:.0f} ms"
        click.echo(line + (f": {outcome.error}" if outcome.error else ""))
    sys.exit(0 if all(outcome.ok for _, _, outcome in results) else 1)


def _chosen(state: State, names: tuple[str, ...]) -> list[Destination]:
    from config.errors import ConfigError

    destinations = state.config.notifications.destinations
    if not destinations:
        raise ConfigError("no notifications.destinations are configured")
    known = {d.name for d in destinations}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"unknown destination {unknown[0]!r}; configured: {', '.join(sorted(known))}"
        )
    return [d for d in destinations if not names or d.name in names]


async def _send_samples(destinations: list[Destination], state: State) -> list[Any]:
    import asyncio

    from notifiers.render import sample_alert
    from notifiers.worker import build_channels, default_renderer

    config = state.config.notifications
    channels = build_channels(config)
    renderer = default_renderer(config)
    alert = sample_alert()

    async def send(destination: Destination) -> Any:
        channel = channels[destination.name]
        message = renderer.render(
            [alert],
            family=channel.family,
            language=destination.language,
            timezone=destination.timezone,
            body_limit=channel.body_limit,
            title_limit=channel.title_limit,
            test=True,  # on-call must see at a glance that nothing happened
        )
        return destination.name, channel.safe_url, await channel.send(message)

    return list(await asyncio.gather(*(send(d) for d in destinations)))


@notify.command("status")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))  # fmt: skip
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="Most pending/failed deliveries listed.")  # fmt: skip
@pass_state
@handles_errors
def notify_status(state: State, fmt: str, limit: int) -> None:
    """Deliveries per destination and status; the pending and failed ones listed.

    Exit 0 when nothing has failed, 1 when some delivery was given up.
    """
    import json

    with existing_trail(state) as trail:
        outbox = trail.outbox
        counts = outbox.counts()
        waiting = outbox.listing(("pending", "failed"), limit=limit)
        alerts = trail.alerts_by_seq([d.alert_seq for d in waiting])
    tz = state.timezone()
    if fmt == "json":
        click.echo(json.dumps({"destinations": counts}, sort_keys=True))
        for d in waiting:
            click.echo(json.dumps(_delivery_row(d, alerts.get(d.alert_seq), tz), sort_keys=True))
    else:
        _print_status(counts, waiting, alerts, tz)
    failed = sum(c.get("failed", 0) for c in counts.values())
    sys.exit(1 if failed else 0)


def _delivery_row(delivery: Any, alert: Any, tz: Any) -> dict[str, Any]:
    from listener.model.event import format_time_ns

    return {
        "delivery": delivery.id,
        "destination": delivery.destination,
        "status": delivery.status,
        "alert": delivery.alert_id,
        "rule": alert.rule if alert else None,
        "container": alert.container if alert else None,
        "attempts": delivery.attempts,
        "queued": format_time_ns(delivery.created_ns, tz),
        "next_attempt": format_time_ns(delivery.next_ns, tz)
        if delivery.status == "pending"
        else None,
        "last_error": delivery.last_error,
    }


def _print_status(counts: Any, waiting: Any, alerts: Any, tz: Any) -> None:
    if not counts:
        click.echo("outbox empty: no alert has been queued for delivery")
        return
    click.echo(f"{'DESTINATION':20} {'PENDING':>8} {'SENT':>8} {'FAILED':>8} {'DEDUPED':>8}")
    for name, c in sorted(counts.items()):
        click.echo(
            f"{name:20} {c['pending']:>8} {c['sent']:>8} {c['failed']:>8} {c['deduplicated']:>8}"
        )
    from listener.safetext import printable

    for delivery in waiting:
        row = _delivery_row(delivery, alerts.get(delivery.alert_seq), tz)
        when = f"next {row['next_attempt']}" if row["next_attempt"] else "given up"
        line = (
            f"{row['status']:8} {row['destination']} {row['rule']} {row['container'] or '-'} "
            f"attempts {row['attempts']}, {when}"
            + (f": {row['last_error']}" if row["last_error"] else "")
        )
        click.echo(printable(line))  # container names are anyone's


@notify.command("flush")
@pass_state
@handles_errors
def notify_flush(state: State) -> None:
    """Attempt every pending delivery now (the service does this continuously).

    Exit 0 when nothing is left pending, 1 when some delivery failed again.
    """
    stats = flush_outbox(state)
    click.echo(stats.summary())
    with existing_trail(state) as trail:
        counts = trail.outbox.counts()
    pending = sum(c.get("pending", 0) for c in counts.values())
    click.echo(f"pending after flush: {pending}")
    sys.exit(1 if pending else 0)
