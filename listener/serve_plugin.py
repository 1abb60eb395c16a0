"""Datasette hooks of `docktrail serve`: read-only connections, hidden tables, the chart page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from datasette import hookimpl as _untyped_hookimpl
from datasette.plugins import pm
from datasette.utils.asgi import Response

F = TypeVar("F", bound=Callable[..., Any])
hookimpl = cast(Callable[[F], F], _untyped_hookimpl)

_PLUGIN_NAME = "docktrail-explorer"
_settings = {"allow_sql": False}


def register(*, allow_sql: bool) -> None:
    import sys

    _settings["allow_sql"] = allow_sql
    if not pm.is_registered(sys.modules[__name__]):
        pm.register(sys.modules[__name__], name=_PLUGIN_NAME)


@hookimpl
def prepare_connection(conn: Any, database: str) -> None:
    from listener.serve_tables import DATABASE, METERING

    if database in (
        DATABASE,
        METERING,
    ):  # even a plugin's write connection must not change the trail
        conn.execute("PRAGMA query_only = 1")


@hookimpl
def permission_allowed(action: str, resource: Any) -> bool | None:
    from listener.serve_tables import DATABASE, METERING, METERING_TABLES, VISIBLE_TABLES

    if action == "execute-sql" and not _settings["allow_sql"]:
        return False
    if action == "view-table" and isinstance(resource, tuple):
        database, table = resource
        if database == DATABASE and table not in VISIBLE_TABLES:
            return False
        if database == METERING and table not in METERING_TABLES:
            return False
    if action in ("view-database-download", "create-table", "drop-table", "insert-row"):
        return False
    return None


@hookimpl
def register_routes() -> list[tuple[str, Any]]:
    return [(r"^/-/timeline$", timeline_page)]


@hookimpl
def menu_links() -> list[dict[str, str]]:
    return [{"href": "/-/timeline", "label": "Events and alerts over time"}]


async def timeline_page(datasette: Any, request: Any) -> Response:
    """The chart; `since` and `until` take the CLI's time forms (7d, RFC 3339, unix seconds)."""
    from config.errors import InputError
    from listener.serve_chart import ChartData, chart_data, render_page
    from listener.serve_tables import DATABASE
    from listener.timeparse import parse_time_ns

    since = request.args.get("since", "").strip()
    until = request.args.get("until", "").strip()
    try:
        since_ns = parse_time_ns(since) if since else None
        until_ns = parse_time_ns(until) if until else None
    except InputError as exc:
        page = render_page(ChartData(), since=since, until=until, error=str(exc))
        return Response.html(page, status=400)
    database = datasette.get_database(DATABASE)
    data = await database.execute_fn(lambda conn: chart_data(conn, since_ns, until_ns))
    return Response.html(render_page(data, since=since, until=until))
