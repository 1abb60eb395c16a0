"""`docktrail posture [images|volumes]` and `docktrail top`.

Registered on the main group by `listener.cli`; like it, imports only click
at module level.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from listener.cli.common import State, handles_errors, main, pass_state

if TYPE_CHECKING:
    from listener.posture.report import Live

FORMATS = click.Choice(["table", "json"])
_STATUS_EXIT = {"pass": 0, "warn": 0, "fail": 1}


@contextmanager
def _live_and_trail(state: State) -> Iterator[tuple[Live, Any | None]]:
    """What the Engine says now, and the trail when there is one (read only)."""
    from listener.posture.report import Live
    from listener.sources.docker_engine import EngineClient
    from sinks.sqlite import SQLiteTrail

    config = state.config
    engine = EngineClient(config.docker.host, config.docker.timeout_secs)
    try:
        live = Live.read(engine)
    finally:
        engine.close()
    if not config.trail.path.exists():
        yield live, None
        return
    with SQLiteTrail.from_config(config.trail, config.host_name()) as trail:
        yield live, trail


def _emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[tuple[str, int]]) -> None:
    from listener.safetext import printable

    if fmt == "json":
        for row in rows:
            click.echo(json.dumps(row, ensure_ascii=False, default=str))
        return
    click.echo("  ".join(name.upper().ljust(width) for name, width in columns).rstrip())
    for row in rows:
        cells = [printable(str(row.get(name) or "-"))[:width] for name, width in columns]
        click.echo("  ".join(c.ljust(w) for c, (_, w) in zip(cells, columns, strict=True)).rstrip())


@main.group("posture", invoke_without_command=True)
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.pass_context
@handles_errors
def posture(ctx: click.Context, fmt: str) -> None:
    """Daemon, audit-rule, drift, sprawl, backup and metering checks with CIS items.

    Exit 1 when a check fails.
    """
    if ctx.invoked_subcommand is not None:
        return
    from listener.event import format_time_ns
    from listener.posture.report import build_report
    from listener.posture.wiring import metering_path

    state = ctx.find_object(State)
    assert state is not None
    tz = state.timezone()
    with _live_and_trail(state) as (live, trail):
        rows = build_report(
            state.config, live, trail, state.config.host_name(), metering_path(state.config)
        )
    shown = [
        row.as_dict(format_time_ns(row.since_ns, tz) if row.since_ns is not None else None)
        for row in rows
    ]
    columns = (("check", 20), ("cis", 6), ("status", 6), ("since", 35), ("changed_by", 24),
               ("detail", 70))  # fmt: skip
    _emit(shown, fmt, columns)
    sys.exit(max((_STATUS_EXIT[row.check.status] for row in rows), default=0))


@posture.command("images")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_state
@handles_errors
def posture_images(state: State, fmt: str) -> None:
    """Images that could go (CIS 6.4): unused beyond posture.images.unused_days, dangling."""
    from listener.event import format_time_ns
    from listener.posture.report import image_rows

    tz = state.timezone()
    with _live_and_trail(state) as (live, trail):
        candidates = image_rows(state.config, live, trail, state.config.host_name())
    rows = [
        {"image": c.names[0] if c.names else c.image_id, "id": c.image_id, "tags": list(c.names),
         "reason": c.reason, "last_used": format_time_ns(c.last_used_ns, tz), "size": c.size}
        for c in candidates
    ]  # fmt: skip
    _emit(rows, fmt, (("image", 40), ("reason", 20), ("last_used", 35), ("size", 12)))


@posture.command("volumes")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@pass_state
@handles_errors
def posture_volumes(state: State, fmt: str) -> None:
    """Volumes of running containers without a backup label (CIS 6.3)."""
    from listener.posture.sprawl import unbacked_volumes

    with _live_and_trail(state) as (live, _):
        containers, _, volumes = live.listings
    found = unbacked_volumes(containers, volumes, state.config.posture.backup_labels)
    rows = [{"volume": u.volume, "containers": ", ".join(u.containers)} for u in found]
    _emit(rows, fmt, (("volume", 66), ("containers", 60)))


@main.command("top")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--sort", type=click.Choice(["cpu", "memory", "pids"]), default="cpu",
              show_default=True)  # fmt: skip
@pass_state
@handles_errors
def top(state: State, fmt: str, sort: str) -> None:
    """The last metering snapshot of each container (CIS 6.2), from beside the trail."""
    from config.errors import TrailError
    from listener.event import format_time_ns
    from listener.posture.metering import opened
    from listener.posture.wiring import metering_path

    path = metering_path(state.config)
    if not path.exists():
        raise TrailError(f"{path}: no metering snapshots (run `docktrail run`)")
    window = int(3 * state.config.posture.metering.interval_secs * 1_000_000_000)
    with opened(path, readonly=True) as store:
        samples = store.latest(window)
    key = {"cpu": lambda s: s.cpu_percent or 0.0, "memory": lambda s: s.memory_bytes,
           "pids": lambda s: s.pids}[sort]  # fmt: skip
    tz = state.timezone()
    rows = [
        {"container": s.name, "id": s.container_id, "cpu_percent": s.cpu_percent,
         "memory_bytes": s.memory_bytes, "memory_limit": s.memory_limit or None, "pids": s.pids,
         "blkio_read": s.blkio_read, "blkio_write": s.blkio_write, "limited": s.limited,
         "time": format_time_ns(s.time_ns, tz)}
        for s in sorted(samples, key=key, reverse=True)
    ]  # fmt: skip
    columns = (("container", 30), ("cpu_percent", 11), ("memory_bytes", 12), ("memory_limit", 12),
               ("pids", 5), ("blkio_read", 11), ("blkio_write", 11), ("time", 35))  # fmt: skip
    _emit(rows, fmt, columns)
