"""What every command shares: the global options, the state they load, error handling, filters.

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
    from listener.bounds import KeptErrors
    from sinks.base import EventFilter

F = TypeVar("F", bound=Callable[..., Any])

QUERY_KEYS = ("type", "action", "container", "image", "user", "source", "host", "label", "session")
FILTER_HELP = "repeat a key for any of its values (OR); different keys must all match (AND)"
MAX_LIMIT = 2**63 - 1  # SQLite's largest integer
ALERT_KEYS = ("rule", "severity", "container", "image", "user", "host")
SEVERITY_CHOICES = ["critical", "high", "medium", "low", "info"]


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


since_option = click.option(
    "--since", help="RFC 3339, unix seconds, or a duration before now (10m, 2h, 7d)."
)
until_option = click.option("--until", help="Same forms as --since; exclusive.")
table_format_option = click.option(
    "--format", "fmt", default="table", show_default=True,
    type=click.Choice(["table", "json", "csv"]),
)  # fmt: skip


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


def key_values(items: Sequence[str], keys: Sequence[str]) -> Iterator[tuple[str, str]]:
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


def grouped(pairs: Iterable[tuple[str, str]]) -> dict[str, str | tuple[str, ...]]:
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
    for name, value in key_values(filters, QUERY_KEYS):
        if name != "label":
            fields.append((name, value))
            continue
        label, sep, label_value = value.partition("=")
        if not sep or not label:
            raise click.BadParameter(f"label={value!r}: use label=KEY=VALUE", param_hint="-f")
        labels.append((label, label_value))
    for name, wanted in grouped(fields).items():
        setattr(event_filter, name, wanted)
    event_filter.labels.update(grouped(labels))
    if since:
        event_filter.since_ns = parse_time_ns(since)
    if until:
        event_filter.until_ns = parse_time_ns(until)
    return event_filter


def existing_trail(state: State) -> Any:
    from config.errors import TrailError
    from sinks.sqlite import SQLiteTrail

    path = state.config.trail.path
    if not path.exists():
        raise TrailError(f"{path}: no trail here (run `docktrail ingest` or `docktrail run`)")
    return SQLiteTrail.from_config(state.config.trail, state.config.host_name())


def wants_delivery(config: DocktrailConfig, notify: str) -> bool:
    from config.errors import ConfigError

    if notify != "live":
        return False
    if not config.notifications.destinations:
        raise ConfigError("--notify live: no notifications.destinations are configured")
    return True


def flush_outbox(state: State) -> Any:
    """Send every pending delivery once (the CLI's side of the outbox)."""
    import asyncio

    from notifiers.worker import deliver_now

    async def flush() -> Any:
        async with existing_trail(state) as trail:
            config = state.config
            return await deliver_now(trail, config.notifications, host=config.host_name())

    return asyncio.run(flush())


def report_malformed(errors: Sequence[Exception] | KeptErrors, shown: int = 20) -> None:
    """The first `shown` errors, then how many more (`len(errors)`: all there were)."""
    from listener.safetext import printable

    for error in errors[:shown]:
        click.echo(f"malformed: {printable(str(error))}", err=True)
    if len(errors) > shown:
        click.echo(f"malformed: … and {len(errors) - shown} more", err=True)
