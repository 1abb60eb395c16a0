"""`docktrail serve`: a read-only Datasette explorer of the trail.

Datasette is imported only here (and in `listener.serve_plugin`), when the
command runs, so `docktrail --help` stays fast.

Read-only three times over: Datasette opens the file `mode=ro` (or
`immutable=1` with --immutable, for a copy that nothing writes), every
connection sets `PRAGMA query_only`, and no write canned query exists.
What is shown: events, alerts, checkpoints, the canned queries below and a
chart page (`/-/timeline`); when the metering snapshots file exists, its
samples too, as a second database (`metering`, read-only the same ways), with
the last snapshot's containers by memory and by CPU. What is not: the outbox's
delivery tables (their error texts may quote a destination URL: the
`deliveries` canned query shows only safe columns), source read positions,
the migrations list, and arbitrary SQL unless `--allow-sql` is given.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
from base64 import b64decode
from pathlib import Path
from typing import Any

from listener.serve_tables import DATABASE, METERING
from sinks.sqlite import actors, bucketed
from sinks.sqlite.storage import connect_read_only

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

# A container's timeline: what an event names as `:container` (its actor's name, the
# container it names, or a container's id prefix of 4 or more).
_NAMES_CONTAINER = (
    "actor_name = :container OR container = :container OR (length(:container) >= 4 "
    "AND type = 'container' AND substr(actor_id, 1, length(:container)) = :container)"
)
_TIMELINE = "SELECT {columns} FROM events WHERE {where} ORDER BY seq"
CONTAINER_TIMELINE = _TIMELINE.format(columns=_EVENT_COLUMNS, where=_NAMES_CONTAINER)
"""For a trail without the actor index (a read-only copy from before migration 0014):
the per-id indexes it still has."""


def _indexed_timeline() -> str:
    """`CONTAINER_TIMELINE` through the actor index (`sinks.sqlite.bucketed`), which
    dropped the per-id indexes (without them, a scan of every event): the actors that
    bore the name, the container's own id and the ids of the prefix, each walked
    in the buckets they have rows for; the rows past `actors_through_seq` read as they are."""
    last = "unicode(substr(:container, -1))"
    # The least text above every text starting with :container (`sqlterms.prefix_sql`);
    # none (an empty blob, above every text) when its last character is the highest.
    upper = (
        f"coalesce(CASE WHEN {last} < 1114111 THEN substr(:container, 1, "
        f"length(:container) - 1) || char({last} + 1) END, x'')"
    )
    prefix = f"length(:container) >= 4 AND {{column}} >= :container AND {{column}} < {upper}"
    named = "SELECT actor_id FROM actor_names WHERE name = :container"
    through = (
        f"coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{actors.THROUGH_KEY}' "
        "AND value GLOB '[0-9]*' AND NOT value GLOB '*[^0-9]*'), 0)"
    )
    walks = [
        _walk(f"actor_id IN ({named})", f"actor_id IN ({named}) AND actor_name = :container"),
        _walk("actor_id = :container", "container = :container", via="container"),
        _walk(
            prefix.format(column="actor_id"),
            f"{prefix.format(column='actor_id')} AND +type = 'container' "
            "AND substr(actor_id, 1, length(:container)) = :container",
        ),
        f"SELECT seq FROM events WHERE seq > {through} AND ({_NAMES_CONTAINER})",
    ]
    return _TIMELINE.format(columns=_EVENT_COLUMNS, where=f"seq IN ({' UNION ALL '.join(walks)})")


def _walk(ids: str, rows: str, via: str = "actor_id") -> str:
    """The events meeting `rows`, of the ids in `actors` meeting `ids` (through column
    `via`), in the buckets they have rows for."""
    # Named parameters: `in_buckets` repeating the condition repeats no positional one.
    return bucketed.walk(f"via = '{via}' AND {ids}", (), rows)[0]


INDEXED_CONTAINER_TIMELINE = _indexed_timeline()


_TIMELINE_QUERY = {
    "title": "A container's timeline",
    "description": "Every event of one container (name or id prefix), oldest first.",
}


def canned_queries(actor_index: bool = True) -> dict[str, dict[str, Any]]:
    """The canned queries, for a trail with the actor index or without it."""
    timeline = INDEXED_CONTAINER_TIMELINE if actor_index else CONTAINER_TIMELINE
    return {"container_timeline": {**_TIMELINE_QUERY, "sql": timeline}, **CANNED_QUERIES}


# The canned queries besides the container's timeline (`canned_queries`): the same SQL
# on either layout.
CANNED_QUERIES: dict[str, dict[str, Any]] = {
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

# The last snapshot: each container's newest sample taken in the minute before the
# newest sample of all (one snapshot's stats calls take a few seconds).
_LAST_SNAPSHOT = (
    "SELECT s.name, s.container_id, "
    "strftime('%Y-%m-%dT%H:%M:%SZ', s.time_ns / 1e9, 'unixepoch') AS time, "
    "s.memory_bytes, s.memory_limit, s.cpu_percent, s.pids, s.blkio_read, s.blkio_write, "
    "s.limited FROM samples s JOIN (SELECT container_id, max(time_ns) AS t FROM samples "
    "GROUP BY container_id) l ON s.container_id = l.container_id AND s.time_ns = l.t "
    "WHERE s.time_ns >= (SELECT max(time_ns) FROM samples) - 60000000000"
)
METERING_QUERIES: dict[str, dict[str, Any]] = {
    "top_memory": {
        "title": "Top containers by memory",
        "description": "The last snapshot's containers, most memory first (limit 0: none "
        "of its own).",
        "sql": f"{_LAST_SNAPSHOT} ORDER BY s.memory_bytes DESC, s.name",
    },
    "top_cpu": {
        "title": "Top containers by CPU",
        "description": "The last snapshot's containers, most CPU first (percent of one CPU "
        "since the container's previous snapshot).",
        "sql": f"{_LAST_SNAPSHOT} ORDER BY coalesce(s.cpu_percent, 0) DESC, s.name",
    },
    "container_usage": {
        "title": "A container's usage over time",
        "description": "Every snapshot of one container (name or id prefix), newest first.",
        "sql": "SELECT strftime('%Y-%m-%dT%H:%M:%SZ', time_ns / 1e9, 'unixepoch') AS time, "
        "name, memory_bytes, memory_limit, cpu_percent, pids, blkio_read, blkio_write "
        "FROM samples WHERE name = :container OR (length(:container) >= 4 "
        "AND substr(container_id, 1, length(:container)) = :container) ORDER BY time_ns DESC",
    },
}


def metadata(*, metering: bool = False, actor_index: bool = True) -> dict[str, Any]:
    """Datasette metadata: titles, facets, sort orders and the canned queries
    (`actor_index`: the trail has it, `has_actor_index`)."""
    found: dict[str, Any] = {
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
                "queries": canned_queries(actor_index),
            }
        },
    }
    if metering:
        found["description_html"] += (
            f' Resource snapshots: <a href="/{METERING}/top_memory">top containers by '
            f'memory</a>, <a href="/{METERING}/top_cpu">by CPU</a>.'
        )
        found["databases"][METERING] = {
            "title": "Resource snapshots (CIS 6.2)",
            "tables": {"samples": {"sort_desc": "time_ns", "facets": ["name", "limited"]}},
            "queries": METERING_QUERIES,
        }
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_datasette(
    path: Path,
    *,
    immutable: bool = False,
    allow_sql: bool = False,
    metering: Path | None = None,
) -> Any:
    """The explorer of the trail at `path`; `metering`: the snapshots file, when it exists."""
    from datasette.app import Datasette
    from datasette.database import Database

    from listener import serve_plugin

    serve_plugin.register(allow_sql=allow_sql)
    datasette = Datasette(
        metadata=metadata(metering=metering is not None, actor_index=has_actor_index(path)),
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
    if metering is not None:
        snapshots = Database(datasette, path=str(metering), is_mutable=not immutable)
        datasette.add_database(snapshots, name=METERING)
    return datasette


def has_actor_index(path: Path) -> bool:
    """Whether the trail at `path` has the actor index (migration 0014): a trail is
    served as it is, and one on read-only storage from before it has the per-id
    indexes instead, which the canned queries then use."""
    with contextlib.closing(connect_read_only(path, timeout=1.0)) as conn:
        return actors.present(conn)


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
