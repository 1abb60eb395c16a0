"""The configuration: `validate` and `config show`."""

from __future__ import annotations

from pathlib import Path

import click

from listener.cli.common import (
    State,
    handles_errors,
    main,
    pass_state,
)


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
    import os

    from config.loader import find_config_file

    checked = find_config_file(state.config_path, os.environ)  # the file `config` loaded
    click.echo(f"ok: {checked or 'defaults (no configuration file)'}")


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
