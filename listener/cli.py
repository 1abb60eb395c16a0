"""The `docktrail` command line.

Only click and the standard library are imported at module level so that
`docktrail --help` stays fast; every command imports what it needs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    from datetime import tzinfo

    from config.models import DocktrailConfig
    from sinks.base import EventFilter

F = TypeVar("F", bound=Callable[..., Any])

QUERY_KEYS = ("type", "action", "container", "image", "user", "source", "host", "label")
FILTER_HELP = "repeat a key for any of its values (OR); different keys must all match (AND)"
MAX_LIMIT = 2**63 - 1  # SQLite's largest integer


class State:
    """What the global options say; the configuration is loaded on first use."""

    def __init__(self, config_path: Path | None, db: Path | None) -> None:
        self.config_path = config_path
        self.db = db
        self._config: DocktrailConfig | None = None

    @property
    def config(self) -> DocktrailConfig:
        if self._config is None:
            from config.loader import load_config

            overrides: dict[str, Any] = {}
            if self.db is not None:
                overrides["trail"] = {"path": str(self.db)}
            self._config = load_config(self.config_path, overrides=overrides)
        return self._config

    def timezone(self) -> tzinfo:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from config.errors import ConfigError

        name = self.config.output.timezone
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"output.timezone: unknown time zone {name!r}") from None


def fail(message: str, code: int = 2) -> NoReturn:
    from listener.safetext import printable

    click.echo(f"docktrail: error: {printable(message)}", err=True)  # may quote hostile input
    sys.exit(code)


def handles_errors(func: F) -> F:
    """Turn our errors into one clear line on stderr and their exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from config.errors import DocktrailError

        try:
            return func(*args, **kwargs)
        except DocktrailError as exc:
            fail(str(exc), exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="DOCKTRAIL_CONFIG",
    help="Configuration file (default: ./docktrail.yaml when present).",
)
@click.option(
    "--db",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Trail database; overrides trail.path.",
)
@click.version_option(package_name="docktrail")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, db: Path | None) -> None:
    """docktrail: who did what to which container, when and why."""
    ctx.obj = State(config_path, db)


pass_state = click.make_pass_decorator(State)


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
@click.option("--listen", type=click.Path(path_type=Path), help="Socket the clients use.")
@click.option("--engine", type=click.Path(path_type=Path), help="The real Engine socket.")
@pass_state
@handles_errors
def proxy(state: State, listen: Path | None, engine: Path | None) -> None:
    """Peer-credential Docker socket proxy: every API call in the trail, with its client."""
    import asyncio

    from listener.logs import setup_logging
    from listener.proxy.service import run_proxy

    setup_logging("info")
    config = state.config
    updates = {k: v for k, v in (("listen", listen), ("engine", engine)) if v is not None}
    config.proxy = config.proxy.model_copy(update=updates)
    sys.exit(asyncio.run(run_proxy(config)))


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

    from listener.ingest import ingest_files

    if not docker_events and not audit_logs:
        raise click.UsageError("give at least one --docker-events FILE or --audit-log FILE")
    config = state.config
    with _progress_bar(docker_events, progress and bool(docker_events)) as on_progress:
        report = asyncio.run(
            ingest_files(
                config,
                docker_events=docker_events,
                audit_logs=audit_logs,
                host=host or _default_host(config),
                on_progress=on_progress,
                notify=_wants_delivery(config, notify),
            )
        )
    _report_malformed(report.malformed)
    click.echo(report.summary())


@main.command()
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help=f"Keep matching events; keys: {', '.join(QUERY_KEYS)} (label=K=V); "
                   f"{FILTER_HELP}.")  # fmt: skip
@click.option("--since", help="RFC 3339, unix seconds, or a duration before now (10m, 2h, 7d).")
@click.option("--until", help="Same forms as --since; exclusive.")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "csv"]))  # fmt: skip
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
    trail = _existing_trail(state)
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
@pass_state
@handles_errors
def verify(
    state: State,
    public_key: Path | None,
    witness: Path | None,
    trail_id: str | None,
    key_fingerprint: str | None,
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
    report = verify_file(path, public_key or state.config.signing_key_path(), pins)
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


@main.command()
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@pass_state
@handles_errors
def validate(state: State, file: Path | None) -> None:
    """Check a configuration file (default: -c FILE or ./docktrail.yaml)."""
    if file is not None:
        state.config_path = file
    notifications = state.config.notifications
    if notifications.destinations:
        from notifiers.worker import build_channels

        build_channels(notifications)  # every apprise URL must load
    if notifications.templates_dir is not None:
        from notifiers.render import check_templates

        check_templates(notifications.templates_dir)
    click.echo(f"ok: {state.config_path or 'defaults (no configuration file)'}")


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


@main.group("config")
def config_group() -> None:
    """Configuration helpers."""


@config_group.command("show")
@click.option("--defaults", is_flag=True, help="Show the built-in defaults only.")
@pass_state
@handles_errors
def config_show(state: State, defaults: bool) -> None:
    """Print the effective configuration as YAML."""
    import yaml

    from config.loader import dump_default_config

    if defaults:
        click.echo(dump_default_config(), nl=False)
        return
    data = state.config.model_dump(mode="json", by_alias=True)
    destinations = data.get("notifications", {}).get("destinations") or []
    if destinations:
        from notifiers.apprise import mask_url

        for destination in destinations:  # tokens and passwords are not for screens
            destination["url"] = mask_url(destination["url"])
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


ALERT_KEYS = ("rule", "severity", "container", "image", "user", "host")
SEVERITY_CHOICES = ["critical", "high", "medium", "low", "info"]


@main.command()
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help=f"Keep matching alerts; keys: {', '.join(ALERT_KEYS)}; "
                   f"{FILTER_HELP}.")  # fmt: skip
@click.option("--min-severity", type=click.Choice(SEVERITY_CHOICES),
              help="Only this severity and above.")  # fmt: skip
@click.option("--since", help="RFC 3339, unix seconds, or a duration before now (10m, 2h, 7d).")
@click.option("--until", help="Same forms as --since; exclusive.")
@click.option("--suppressed/--no-suppressed", default=False, show_default=True,
              help="Include matches suppressed by an exception (with its reason).")  # fmt: skip
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "csv"]))  # fmt: skip
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
    for name, wanted in _grouped(_key_values(filters, ALERT_KEYS)).items():
        for value in values_of(wanted):
            if name == "severity" and value not in SEVERITY_CHOICES:
                raise click.BadParameter(
                    f"severity={value}: one of {', '.join(SEVERITY_CHOICES)}", param_hint="-f"
                )
        setattr(alert_filter, name, wanted)
    alert_filter.since_ns = parse_time_ns(since) if since else None
    alert_filter.until_ns = parse_time_ns(until) if until else None
    with _existing_trail(state) as trail:
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

    with _existing_trail(state) as trail:
        lives = build_timelines(trail, container)
    if not lives:
        raise TrailError(f"no container {container!r} in the trail")
    tz = state.timezone()
    if fmt == "json":
        for line in timeline_json_lines(lives, tz):
            click.echo(line)
    else:
        click.echo(render_text(lives, tz), nl=False)


@main.command()
@click.option("--rules", "rules_file",
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Rules file (a `rules:` section); default: the configured rules.")  # fmt: skip
@click.option("--since", help="Report findings on events from this time (state is rebuilt "
              "from everything before).")  # fmt: skip
@click.option("--until", help="Same forms as --since; exclusive.")
@click.option("--notify", default="none", show_default=True,
              type=click.Choice(["none", "dry", "live"]),
              help="none: store nothing; dry: store the new alerts; live: store them and "
                   "send them to the configured destinations.")  # fmt: skip
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json", "csv"]))  # fmt: skip
@pass_state
@handles_errors
def replay(
    state: State,
    rules_file: Path | None,
    since: str | None,
    until: str | None,
    notify: str,
    fmt: str,
) -> None:
    """Re-evaluate the rules over stored events and report what fires.

    Only findings the trail does not hold yet are listed (a stricter rules
    file shows what it would add). With --notify none nothing is stored.
    """
    from config.loader import load_rules_file
    from listener.output import write_alerts
    from listener.rules.engine import replay_trail, store_alerts
    from listener.timeparse import parse_time_ns

    rules = load_rules_file(rules_file) if rules_file else state.config.rules
    since_ns = parse_time_ns(since) if since else None
    until_ns = parse_time_ns(until) if until else None
    live = _wants_delivery(state.config, notify)
    with _existing_trail(state) as trail:
        found = replay_trail(trail, rules, since_ns=since_ns, until_ns=until_ns)
        if notify != "none" and found:
            store_alerts(trail, found, state.config.notifications if live else None)
    write_alerts(found, fmt, state.timezone())
    stored = "; stored" if notify != "none" and found else ""
    click.echo(f"replay: {len(found)} new findings{stored}", err=True)
    if live:
        stats = _flush_outbox(state)
        click.echo("notifications: " + stats.summary(), err=True)


@main.group()
def rules() -> None:
    """The detection rules."""


@rules.command("list")
@click.option("--format", "fmt", default="table", show_default=True,
              type=click.Choice(["table", "json"]))  # fmt: skip
@pass_state
@handles_errors
def rules_list(state: State, fmt: str) -> None:
    """Every rule: id, severity (with configured overrides), CIS item, enabled."""
    import json

    from listener.rules.fleet import FLEET_RULES
    from listener.rules.registry import RULES

    configured = state.config.rules
    for index, rule in enumerate((*RULES, *FLEET_RULES)):
        settings = rule.settings(configured)
        row = {
            "rule": rule.meta.id,
            "severity": settings.severity or rule.meta.severity,
            "cis": rule.meta.cis,
            "enabled": settings.enabled,
            "exceptions": len(settings.exceptions),
            "description": rule.meta.description,
        }
        if fmt == "json":
            click.echo(json.dumps(row, ensure_ascii=False))
            continue
        if index == 0:
            click.echo(f"{'RULE':27} {'SEVERITY':9} {'CIS':29} {'ON':3} DESCRIPTION")
        on = "yes" if row["enabled"] else "no"
        click.echo(f"{row['rule']:27} {row['severity']:9} {row['cis']:29} {on:3} "
                   f"{row['description']}")  # fmt: skip


@rules.command("test")
@click.argument("cases_file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@pass_state
@handles_errors
def rules_test(state: State, cases_file: Path) -> None:
    """Check table-driven expectations: each case is an event and the rules it must fire.

    Exit 0 when every case passes, 1 otherwise (each failure is explained).
    """
    from listener.rules.cases import run_cases

    results = run_cases(cases_file, state.config.rules)
    for result in results:
        mark = "ok  " if result.passed else "FAIL"
        click.echo(f"{mark} {result.name}" + ("" if result.passed else f": {result.problem}"))
    failed = sum(not r.passed for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def _key_values(items: Sequence[str], keys: Sequence[str]) -> Iterator[tuple[str, str]]:
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in keys:
            raise click.BadParameter(
                f"{item!r}: use KEY=VALUE with KEY one of {', '.join(keys)}",
                param_hint="-f/--filter",
            )
        if not value.strip():
            # An empty value would select everything: surely not what was meant.
            raise click.BadParameter(f"{item!r}: {name} needs a value", param_hint="-f/--filter")
        yield name, value


def _grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, str | tuple[str, ...]]:
    """Values by key: one value as itself, a repeated key as the tuple of its values (OR)."""
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        values = grouped.setdefault(name, [])
        if value not in values:
            values.append(value)
    return {name: v[0] if len(v) == 1 else tuple(v) for name, v in grouped.items()}


def parse_filters(
    filters: Sequence[str], since: str | None, until: str | None, limit: int | None
) -> EventFilter:
    from listener.timeparse import parse_time_ns
    from sinks.base import EventFilter

    event_filter = EventFilter(limit=limit)
    labels: list[tuple[str, str]] = []
    fields: list[tuple[str, str]] = []
    for name, value in _key_values(filters, QUERY_KEYS):
        if name != "label":
            fields.append((name, value))
            continue
        label, sep, label_value = value.partition("=")
        if not sep or not label:
            raise click.BadParameter(f"label={value!r}: use label=KEY=VALUE", param_hint="-f")
        labels.append((label, label_value))
    for name, wanted in _grouped(fields).items():
        setattr(event_filter, name, wanted)
    event_filter.labels.update(_grouped(labels))
    if since:
        event_filter.since_ns = parse_time_ns(since)
    if until:
        event_filter.until_ns = parse_time_ns(until)
    return event_filter


def _existing_trail(state: State) -> Any:
    from config.errors import TrailError
    from sinks.sqlite import SQLiteTrail

    path = state.config.trail.path
    if not path.exists():
        raise TrailError(f"{path}: no trail here (run `docktrail ingest` or `docktrail run`)")
    return SQLiteTrail.from_config(state.config.trail)


def _wants_delivery(config: DocktrailConfig, notify: str) -> bool:
    from config.errors import ConfigError

    if notify != "live":
        return False
    if not config.notifications.destinations:
        raise ConfigError("--notify live: no notifications.destinations are configured")
    return True


def _flush_outbox(state: State) -> Any:
    """Send every pending delivery once (the CLI's side of the outbox)."""
    import asyncio

    from notifiers.worker import deliver_now

    async def flush() -> Any:
        async with _existing_trail(state) as trail:
            config = state.config
            return await deliver_now(trail, config.notifications, host=_default_host(config))

    return asyncio.run(flush())


def _default_host(config: DocktrailConfig) -> str:
    import socket

    return config.host or socket.gethostname()


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


def _report_malformed(errors: Sequence[Exception], shown: int = 20) -> None:
    from listener.safetext import printable

    for error in errors[:shown]:
        click.echo(f"malformed: {printable(str(error))}", err=True)
    if len(errors) > shown:
        click.echo(f"malformed: … and {len(errors) - shown} more", err=True)


# Command groups kept in their own modules register themselves on `main`.
from listener import (  # noqa: E402, F401
    consume_cli,
    export_cli,
    intent_cli,
    notify_cli,
    redact_cli,
    serve_cli,
)
