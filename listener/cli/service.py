"""`run` (the live service) and `ingest` (the offline pipeline over captured files)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from listener.cli.common import (
    State,
    handles_errors,
    main,
    pass_state,
    report_malformed,
    wants_delivery,
)


@main.command()
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))  # fmt: skip
@pass_state
@handles_errors
def run(state: State, log_level: str) -> None:
    """Run the live service until SIGTERM or SIGINT."""
    import asyncio

    from listener.app import run_service
    from listener.logs import setup_logging

    setup_logging(log_level)
    sys.exit(asyncio.run(run_service(state.config)))


@main.command()
@click.option("--docker-events", "docker_events", multiple=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="File of raw Engine /events JSON lines (repeatable).")  # fmt: skip
@click.option("--audit-log", "audit_logs", multiple=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="auditd log, plain or .gz (repeatable; a rotated set is read oldest "
                   "first). With --docker-events: who made each change.")  # fmt: skip
@click.option("--host", help="Host name recorded on the events (default: host setting).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")  # fmt: skip
@click.option("--notify", default="none", show_default=True, type=click.Choice(["none", "live"]),
              help="live: queue the new alerts for the configured destinations and send "
                   "them before exiting (historical files notify nobody by default).")  # fmt: skip
@pass_state
@handles_errors
def ingest(
    state: State,
    docker_events: Sequence[Path],
    audit_logs: Sequence[Path],
    host: str | None,
    progress: bool | None,
    notify: str,
) -> None:
    """Store captured files in the trail, through the same pipeline as `run`.

    Ingest is idempotent: reading the same file again stores nothing new.
    """
    import asyncio

    from listener.app import tuned_runtime
    from listener.ingest import ingest_files

    if not docker_events and not audit_logs:
        raise click.UsageError("give at least one --docker-events FILE or --audit-log FILE")
    config = state.config
    # the GC and thread switching as `run` tunes them (the default collector's full
    # passes cost a sixth of a parse)
    showing = progress and bool(docker_events)
    with tuned_runtime(), _progress_bar(docker_events, showing) as on_progress:
        report = asyncio.run(
            ingest_files(
                config,
                docker_events=docker_events,
                audit_logs=audit_logs,
                host=host or config.host_name(),
                on_progress=on_progress,
                notify=wants_delivery(config, notify),
            )
        )
    report_malformed(report.malformed)
    click.echo(report.summary())


class _progress_bar:
    """A byte-based progress bar on stderr, only when it is a terminal."""

    def __init__(self, paths: Sequence[Path], enabled: bool | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total = sum(path.stat().st_size for path in paths)
        self._last = 0
        self._bar: Any = None

    def __enter__(self) -> Callable[[int], None] | None:
        if not self.enabled:
            return None
        self._bar = click.progressbar(length=self.total, label="ingest", file=sys.stderr)
        self._bar.__enter__()
        return self._advance

    def _advance(self, consumed: int) -> None:
        """`consumed` counts bytes of the current file; a smaller value means a new file."""
        if consumed < self._last:
            self._last = 0
        self._bar.update(consumed - self._last)
        self._last = consumed

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
