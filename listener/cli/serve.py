"""`docktrail serve`: registered on the main group like the other command modules."""

from __future__ import annotations

import os

import click

from listener.cli.common import State, handles_errors, main, pass_state


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs a token "
                   "(DOCKTRAIL_SERVE_TOKEN) or --behind-proxy.")  # fmt: skip
@click.option("--port", default=8001, show_default=True, type=click.IntRange(0, 65535))
@click.option("--immutable", is_flag=True,
              help="The file is a copy nothing writes (faster; counts are cached). "
                   "Implied on read-only storage.")  # fmt: skip
@click.option("--allow-sql", is_flag=True, help="Let visitors run arbitrary read-only SQL.")
@click.option("--behind-proxy", is_flag=True,
              help="An authenticating reverse proxy is in front: allow a non-loopback "
                   "address without a token.")  # fmt: skip
@pass_state
@handles_errors
def serve(
    state: State, host: str, port: int, immutable: bool, allow_sql: bool, behind_proxy: bool
) -> None:
    """Read-only web explorer of the trail (Datasette): tables, facets, canned queries, JSON.

    Set DOCKTRAIL_SERVE_TOKEN to require that token (HTTP Basic password, any
    user, or `Authorization: Bearer TOKEN`).
    """
    from config.errors import ConfigError, TrailError
    from listener.posture.wiring import metering_path
    from listener.serve import TOKEN_ENV, is_loopback, make_datasette
    from listener.serve import serve as run_server
    from sinks.sqlite.storage import connect_read_only, on_read_only_storage

    path = state.config.trail.path
    if not path.exists():
        raise TrailError(f"{path}: no trail here (run `docktrail ingest` or `docktrail run`)")
    token = os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and token is None and not behind_proxy:
        raise ConfigError(
            f"--host {host}: not a loopback address; set {TOKEN_ENV} or put an "
            "authenticating reverse proxy in front and pass --behind-proxy"
        )
    if not immutable and on_read_only_storage(path):  # SQLite cannot create the WAL index
        connect_read_only(path, timeout=1.0).close()  # refuses a log it would not read
        immutable = True
    snapshots = metering_path(state.config)
    metering = snapshots if snapshots.is_file() else None
    datasette = make_datasette(path, immutable=immutable, allow_sql=allow_sql, metering=metering)
    shown = f"{path} and {metering}" if metering else str(path)
    click.echo(f"serving {shown} read-only on http://{host}:{port}/", err=True)
    run_server(datasette, host, port, token)
