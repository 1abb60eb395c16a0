"""Reading the trail: `query`, `alerts`, `timeline`, `verify` and `key export`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from listener.cli.common import (
    ALERT_KEYS,
    FILTER_HELP,
    MAX_LIMIT,
    QUERY_KEYS,
    SEVERITY_CHOICES,
    State,
    existing_trail,
    grouped,
    handles_errors,
    key_values,
    main,
    parse_filters,
    pass_state,
    since_option,
    table_format_option,
    until_option,
)


@main.command()
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help=f"Keep matching events; keys: {', '.join(QUERY_KEYS)} (label=K=V); "
                   f"{FILTER_HELP}.")  # fmt: skip
@since_option
@until_option
@table_format_option
@click.option(
    "--limit", type=click.IntRange(min=1, max=MAX_LIMIT), help="At most this many events."
)
@pass_state
@handles_errors
def query(
    state: State,
    filters: Sequence[str],
    since: str | None,
    until: str | None,
    fmt: str,
    limit: int | None,
) -> None:
    """Events of the trail, oldest first."""
    from listener.output import write_events

    event_filter = parse_filters(filters, since, until, limit)
    tz = state.timezone()
    trail = existing_trail(state)
    with trail:
        write_events(trail.query(event_filter), fmt, tz)


@main.command()
@click.option("--public-key", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Auditor's copy of the public key (default: the signing key's).")  # fmt: skip
@click.option("--witness", type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Witness file of signed heads (default: trail.witness_path).")  # fmt: skip
@click.option("--trail-id", "trail_id", metavar="ID",
              help="The trail_id the file must have (printed by verify).")  # fmt: skip
@click.option("--key-fingerprint", "key_fingerprint", metavar="FP",
              help="The fingerprint the verifying key must have.")  # fmt: skip
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr (default: when stderr is a terminal).")  # fmt: skip
@pass_state
@handles_errors
def verify(
    state: State,
    public_key: Path | None,
    witness: Path | None,
    trail_id: str | None,
    key_fingerprint: str | None,
    progress: bool | None,
) -> None:
    """Check the hash chain, signed checkpoints, head seal, schema and outbox; never writes.

    Exit 0 when intact, 1 when tampered, rolled back, forked or holding foreign
    rows (naming the first bad seq), 2 on error.
    """
    from config.errors import TrailError
    from sinks.sqlite import Pins, verify_file

    path = state.config.trail.path
    if not path.exists():
        raise TrailError(f"{path}: no trail here (run `docktrail ingest` or `docktrail run`)")
    configured = state.config.trail.witness_path
    if witness is None and configured is not None and configured.exists():
        witness = configured
    pins = Pins(trail_id=trail_id, key_fingerprint=key_fingerprint, witness=witness)
    key = public_key or state.config.signing_key_path()
    with VerifyProgress(progress) as bar:
        report = verify_file(path, key, pins, on_progress=bar.advance)
    identity = f"key {report.key_fingerprint}, trail {report.trail_id or '(none)'}"
    if report.ok:
        click.echo(
            f"intact: {report.events} events, {report.alerts} alerts, "
            f"{report.checkpoints} signed checkpoints, {identity}"
            + "".join(f"; {note}" for note in report.notes)
        )
        return
    click.echo(f"{_VERDICTS.get(report.finding or '', 'TAMPERED')}: {_where(report)}", err=True)
    click.echo(identity, err=True)
    sys.exit(1)


class VerifyProgress:
    """The bar of `verify`: its length is known only once the walk has begun."""

    def __init__(self, enabled: bool | None) -> None:
        self._enabled = enabled
        self._bar: Any = None  # a listener.progress.Progress once the length is known

    def advance(self, seq: int, last: int) -> None:
        if self._bar is None:
            from listener.progress import Progress

            self._bar = Progress("verify", last, self._enabled).__enter__()
        self._bar.advance_to(seq)

    def __enter__(self) -> VerifyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.finish()
            self._bar.__exit__(*exc)


_VERDICTS = {"foreign-rows": "FOREIGN ROWS", "rolled-back": "ROLLED BACK", "forked": "FORKED"}


def _where(report: Any) -> str:
    problem = report.problem or "unknown problem"
    if report.first_bad_seq is not None:
        where = f"seq {report.first_bad_seq}: "
    elif report.first_bad_alert_seq is not None:
        where = f"alert seq {report.first_bad_alert_seq}: "
    else:
        where = ""
    return problem if problem.startswith(where) else where + problem


@main.group()
def key() -> None:
    """The checkpoint signing key."""


@key.command("export")
@pass_state
@handles_errors
def key_export(state: State) -> None:
    """Print the public key (PEM) for auditors to verify the trail with."""
    from sinks.signing import export_public_key

    click.echo(export_public_key(state.config.signing_key_path()), nl=False)


@main.command()
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help=f"Keep matching alerts; keys: {', '.join(ALERT_KEYS)}; "
                   f"{FILTER_HELP}.")  # fmt: skip
@click.option("--min-severity", type=click.Choice(SEVERITY_CHOICES),
              help="Only this severity and above.")  # fmt: skip
@since_option
@until_option
@click.option("--suppressed/--no-suppressed", default=False, show_default=True,
              help="Include matches suppressed by an exception (with its reason).")  # fmt: skip
@table_format_option
@click.option(
    "--limit", type=click.IntRange(min=1, max=MAX_LIMIT), help="At most this many alerts."
)
@pass_state
@handles_errors
def alerts(
    state: State,
    filters: Sequence[str],
    min_severity: str | None,
    since: str | None,
    until: str | None,
    suppressed: bool,
    fmt: str,
    limit: int | None,
) -> None:
    """Alerts of the trail, oldest first."""
    from listener.output import write_alerts
    from listener.timeparse import parse_time_ns
    from sinks.base import AlertFilter, values_of

    alert_filter = AlertFilter(
        min_severity=min_severity, include_suppressed=suppressed, limit=limit
    )
    for name, wanted in grouped(key_values(filters, ALERT_KEYS)).items():
        for value in values_of(wanted):
            if name == "severity" and value not in SEVERITY_CHOICES:
                raise click.BadParameter(
                    f"severity={value}: one of {', '.join(SEVERITY_CHOICES)}", param_hint="-f"
                )
        setattr(alert_filter, name, wanted)
    alert_filter.since_ns = parse_time_ns(since) if since else None
    alert_filter.until_ns = parse_time_ns(until) if until else None
    with existing_trail(state) as trail:
        write_alerts(trail.query_alerts(alert_filter), fmt, state.timezone())


@main.command()
@click.argument("container")
@click.option("--format", "fmt", default="text", show_default=True,
              type=click.Choice(["text", "json"]))  # fmt: skip
@pass_state
@handles_errors
def timeline(state: State, container: str, fmt: str) -> None:
    """One container's life: who created it and why, its config, execs, alerts, removal.

    CONTAINER is a name or an id prefix; a name used by several containers
    shows each of their lives in turn.
    """
    from config.errors import TrailError
    from listener.timeline import build_timelines, render_text, timeline_json_lines

    with existing_trail(state) as trail:
        lives = build_timelines(trail, container)
    if not lives:
        raise TrailError(f"no container {container!r} in the trail")
    tz = state.timezone()
    if fmt == "json":
        for line in timeline_json_lines(lives, tz):
            click.echo(line)
    else:
        click.echo(render_text(lives, tz), nl=False)
