"""`docktrail serve`: a read-only Datasette explorer of the trail.

Datasette is imported only here (and in `listener.serve_plugin`), when the
command runs, so `docktrail --help` stays fast.

Read-only three times over: Datasette opens the file `mode=ro` (or
`immutable=1` with --immutable, for a copy that nothing writes), every
connection sets `PRAGMA query_only`, and no write canned query exists.
What is shown: events, alerts, checkpoints, the canned queries below and a
chart page (`/-/timeline`). What is not: the outbox's delivery tables (their
error texts may quote a destination URL: the `deliveries` canned query shows
only safe columns), source read positions, the migrations list, and
arbitrary SQL unless `--allow-sql` is given.
"""

from __future__ import annotations

import hmac
import ipaddress
from base64 import b64decode
from pathlib import Path
from typing import Any

from listener.serve_tables import DATABASE

TOKEN_ENV = "DOCKTRAIL_SERVE_TOKEN"

_TIME = "strftime('%Y-%m-%dT%H:%M:%fZ', time_ns / 1e9, 'unixepoch')"
_EVENT_COLUMNS = (
    f"seq, {_TIME} AS time, type, action, actor_name, actor_image, who_login, who_user, "
    "json_extract(body, '$.who.method') AS how, json_extract(body, '$.why.reason') AS why"
)
_ALERT_COLUMNS = (
    f"seq, {_TIME} AS time, rule, severity, container, image, who_login, "
    "json_extract(body, '$.summary') AS summary, event_seq"
)
# Times in canned queries: an empty bound is open (strftime gives NULL for '').
_SINCE = "time_ns >= coalesce(CAST(strftime('%s', nullif(:since, '')) AS INTEGER), 0) * 1000000000"
_UNTIL = (
    "time_ns < coalesce(CAST(strftime('%s', nullif(:until, '')) AS INTEGER), 9000000000) "
    "* 1000000000"
)

CANNED_QUERIES: dict[str, dict[str, Any]] = {
    "container_timeline": {
        "title": "A container's timeline",
        "description": "Every event of one container (name or id prefix), oldest first.",
        "sql": f"SELECT {_EVENT_COLUMNS} FROM events WHERE actor_name = :container "
        "OR container = :container OR (length(:container) >= 4 AND type = 'container' "
        "AND substr(actor_id, 1, length(:container)) = :container) ORDER BY seq",
    },
    "user_activity": {
        "title": "What a user did in a period",
        "description": "Events of one login or effective user; dates like 2026-12-01 "
        "(empty: unbounded).",
        "sql": f"SELECT {_EVENT_COLUMNS} FROM events WHERE (who_login = :user "
        f"OR who_user = :user) AND {_SINCE} AND {_UNTIL} ORDER BY seq",
    },
    "privileged_runs": {
        "title": "All privileged runs",
        "description": "Containers created or run with --privileged.",
        "sql": f"SELECT {_EVENT_COLUMNS} FROM events "
        "WHERE json_extract(body, '$.config.privileged') = 1 ORDER BY seq",
    },
    "untrusted_images": {
        "title": "Untrusted images",
        "description": "Alerts of the untrusted-image rule.",
        "sql": f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule = 'untrusted-image' ORDER BY seq",
    },
    "execs": {
        "title": "Execs into containers",
        "description": "docker exec sessions (exec_start events) with who ran them.",
        "sql": f"SELECT {_EVENT_COLUMNS} FROM events WHERE type = 'container' "
        "AND action LIKE 'exec_start%' ORDER BY seq",
    },
    "alerts_by_rule": {
        "title": "Alerts by rule",
        "description": "How many alerts each rule raised, by severity.",
        "sql": "SELECT rule, severity, count(*) AS alerts, "
        "strftime('%Y-%m-%dT%H:%M:%SZ', max(time_ns) / 1e9, 'unixepoch') AS latest "
        "FROM alerts GROUP BY rule, severity ORDER BY alerts DESC",
    },
    "unattributed_changes": {
        "title": "Unattributed changes",
        "description": "Container changes that no login could be tied to.",
        "sql": f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE rule = 'unattributed-change' "
        "ORDER BY seq",
    },
    "gaps": {
        "title": "Gaps",
        "description": "Where a source may have missed events (reconnects, lost audit records).",
        "sql": f"SELECT {_EVENT_COLUMNS}, json_extract(body, '$.attributes') AS details "
        "FROM events WHERE action = 'gap' ORDER BY seq",
    },
    "deliveries": {
        "title": "Alert deliveries",
        "description": "Notification outbox: destination names and status (never URLs or "
        "error texts).",
        "sql": "SELECT id, alert_seq, destination, status, attempts, "
        "strftime('%Y-%m-%dT%H:%M:%SZ', created_ns / 1e9, 'unixepoch') AS queued, "
        "strftime('%Y-%m-%dT%H:%M:%SZ', done_ns / 1e9, 'unixepoch') AS done "
        "FROM deliveries ORDER BY id",
    },
}


def metadata() -> dict[str, Any]:
    """Datasette metadata: titles, facets, sort orders and the canned queries."""
    return {
        "title": "docktrail",
        "description_html": 'Audit trail of this Docker host. <a href="/-/timeline">'
        "Events and alerts over time</a>.",
        "databases": {
            DATABASE: {
                "tables": {
                    "events": {
                        "facets": ["type", "action", "who_login", "source", "host"],
                        "sort_desc": "seq",
                        "label_column": "actor_name",
                    },
                    "alerts": {
                        "facets": ["rule", "severity", "who_login", "container"],
                        "sort_desc": "seq",
                    },
                    "checkpoints": {"sort_desc": "n"},
                },
                "queries": CANNED_QUERIES,
            }
        },
    }


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_datasette(path: Path, *, immutable: bool = False, allow_sql: bool = False) -> Any:
    from datasette.app import Datasette
    from datasette.database import Database

    from listener import serve_plugin

    serve_plugin.register(allow_sql=allow_sql)
    datasette = Datasette(
        metadata=metadata(),
        settings={
            "default_allow_sql": allow_sql,
            "allow_download": False,  # the file holds the outbox tables too
            "allow_facet": True,
            "suggest_facets": False,
        },
    )
    if "_memory" in datasette.databases:  # added when no file is given to the constructor
        datasette.remove_database("_memory")
    database = Database(datasette, path=str(path), is_mutable=not immutable)
    datasette.add_database(database, name=DATABASE)
    return datasette


class TokenGate:
    """ASGI middleware: every request needs the token, as a Bearer or Basic password.

    Basic lets a browser ask for it (any user name); Bearer suits curl and jq.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"www-authenticate", b'Basic realm="docktrail"'),
                    (b"content-type", b"text/plain; charset=utf-8"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"authentication required\n"})

    def _allowed(self, scope: dict[str, Any]) -> bool:
        headers = dict(scope.get("headers") or [])
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer":
            return hmac.compare_digest(value.strip(), self.token)
        if scheme.lower() == b"basic":
            try:
                _, _, password = b64decode(value.strip(), validate=True).partition(b":")
            except ValueError:
                return False
            return hmac.compare_digest(password, self.token)
        return False


def serve(datasette: Any, host: str, port: int, token: str | None) -> None:
    import uvicorn

    app = datasette.app()
    if token:
        app = TokenGate(app, token)
    uvicorn.run(app, host=host, port=port, log_level="warning", lifespan="on")
