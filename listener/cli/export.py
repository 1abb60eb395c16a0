"""`docktrail export`: registered on the main group like the other command modules."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import click

from listener.cli.common import (
    State,
    existing_trail,
    handles_errors,
    main,
    pass_state,
    since_option,
    until_option,
)

FORMAT_CHOICES = ["jsonl", "ocsf", "ecs", "csv"]


@main.command("export")
@click.option("--format", "fmt", required=True, type=click.Choice(FORMAT_CHOICES),
              help="jsonl: the trail's own objects; ocsf: OCSF 1.5 classes; ecs: Elastic "
                   "Common Schema; csv: one row per event or alert.")  # fmt: skip
@since_option
@until_option
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False),
              help="Write here (created mode 0600) instead of stdout.")  # fmt: skip
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")  # fmt: skip
@pass_state
@handles_errors
def export(
    state: State,
    fmt: str,
    since: str | None,
    until: str | None,
    output: Path | None,
    progress: bool | None,
) -> None:
    """Events and alerts of the trail for SIEMs, oldest first; a summary on stderr."""
    from listener.export import count_records, export_trail
    from listener.timeparse import parse_time_ns

    since_ns = parse_time_ns(since) if since else None
    until_ns = parse_time_ns(until) if until else None
    show = sys.stderr.isatty() if progress is None else progress
    with existing_trail(state) as trail, _destination(output) as out:
        total = count_records(trail, since_ns, until_ns) if show else 0
        with _progress(total, show) as advance:
            summary = export_trail(
                trail, fmt, out, since_ns=since_ns, until_ns=until_ns, on_record=advance
            )
    click.echo(summary.summary() + (f" to {output}" if output else ""), err=True)


@contextmanager
def _destination(output: Path | None) -> Iterator[TextIO]:
    if output is None:
        yield sys.stdout
        return
    from config.errors import DocktrailError

    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise DocktrailError(f"{output}: cannot write: {exc.strerror}") from exc
    with open(fd, "w", encoding="utf-8", newline="") as out:
        yield out


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[], None] | None]:
    if not enabled:
        yield None
        return
    with click.progressbar(length=total, label="export", file=sys.stderr) as bar:
        yield lambda: bar.update(1)
