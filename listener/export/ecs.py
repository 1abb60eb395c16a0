"""Elastic Common Schema (ECS 8.x) documents, one JSON object per line.

ECS fields used: `@timestamp`, `ecs.version`, `event.*` (kind, category,
type, action, id, sequence, severity, provider, dataset, module, outcome),
`host.name`, `container.*` (id, name, image.name, image.tag, labels),
`user.*` (name, id, effective.*), `process.*` (pid, command_line,
executable, name; for an exec session's command also args, working_directory,
exit_code, parent.pid, user.id inside the container, entity_id), `rule.*`
(id, name, ruleset), `message`. What ECS has no field for is kept under the
custom `docktrail.*` namespace.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from listener.export.commands import is_process_event, session_command
from listener.model.alert import Alert
from listener.model.event import Event, Who
from listener.sessions.records import EXEC_COMMAND

ECS_VERSION = "8.11.0"
SEVERITY_NUMBERS = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}

# event.type by the verb of a change (ECS allowed values).
EVENT_TYPES = {
    "create": "creation",
    "pull": "creation",
    "import": "creation",
    "load": "creation",
    "commit": "creation",
    "destroy": "deletion",
    "delete": "deletion",
    "remove": "deletion",
    "untag": "deletion",
    "prune": "deletion",
    "start": "start",
    "restart": "start",
    "unpause": "start",
    "exec_start": "start",
    "stop": "end",
    "die": "end",
    "kill": "end",
    "pause": "end",
    "exec_die": "end",
    EXEC_COMMAND: "start",
}


class EcsWriter:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last_event: Event | None = None

    def write_event(self, event: Event) -> None:
        self._last_event = event
        self._write(event_document(event))

    def write_alert(self, alert: Alert) -> None:
        self._write(alert_document(alert, self._last_event))

    def _write(self, document: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode() + "\n")

    def close(self) -> None:
        self.out.flush()


def timestamp(time_ns: int) -> str:
    """ECS dates: ISO 8601 in UTC; microseconds are what Elasticsearch keeps."""
    moment = datetime.fromtimestamp(time_ns // 1_000_000_000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{time_ns % 1_000_000_000 // 1000:06d}Z"


def event_document(event: Event) -> dict[str, Any]:
    verb = event.action.partition(":")[0].strip()
    is_process = is_process_event(event.type, verb)
    document: dict[str, Any] = {
        "@timestamp": timestamp(event.time_ns),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "event",
            "category": ["process"] if is_process else ["configuration"],
            "type": [EVENT_TYPES.get(verb, "info" if is_process else "change")],
            "action": f"{event.type}-{verb}",
            "id": event.id,
            "sequence": event.seq,
            "provider": event.source,
            "dataset": "docktrail.events",
            "module": "docktrail",
            "outcome": "success",
            "severity": 1,
        },
        "host": {"name": event.host},
        "message": f"{event.type} {event.action}",
        "docktrail": {
            "hash": event.hash,
            "prev_hash": event.prev_hash,
            "attributes": event.attributes,
            "config": event.config,
            "why": {k: v for k, v in event.why.model_dump().items() if v is not None},
            "who_method": event.who.method,
        },
    }
    if is_process and document["event"]["type"] == ["info"]:
        document["event"]["type"] = ["start"]
    container = _container(event)
    if container:
        document["container"] = container
    _add_who(document, event.who)
    if verb == EXEC_COMMAND:  # the process is the command in the container, not the CLI
        document["process"] = _session_process(event.attributes)
    return document


def _session_process(attributes: dict[str, Any]) -> dict[str, Any]:
    command = session_command(attributes)
    process: dict[str, Any] = {
        "pid": command.pid,
        "args": command.args or None,
        "command_line": command.command_line,
        "executable": command.executable,
        "name": command.name,
        "working_directory": command.cwd,
        "exit_code": command.exit_code,
        "parent": {"pid": command.ppid} if command.ppid is not None else None,
        "user": {"id": str(command.uid)} if command.uid is not None else None,
        "entity_id": command.uid_in_session,
    }
    return {key: value for key, value in process.items() if value is not None}


def alert_document(alert: Alert, event: Event | None = None) -> dict[str, Any]:
    """The ECS alert; `event`, when it is the alert's, gives the container id."""
    document: dict[str, Any] = {
        "@timestamp": timestamp(alert.time_ns),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": "alert",
            "category": ["configuration"],
            "type": ["info"],
            "action": alert.rule,
            "id": alert.id,
            "sequence": alert.seq,
            "severity": SEVERITY_NUMBERS.get(alert.severity, 0),
            "provider": "docktrail",
            "dataset": "docktrail.alerts",
            "module": "docktrail",
        },
        "rule": {"id": alert.rule, "name": alert.rule, "ruleset": "docktrail"},
        "host": {"name": alert.host},
        "message": alert.summary,
        "docktrail": {
            "severity": alert.severity,
            "event_seq": alert.event_seq,
            "event_id": alert.event_id,
            "details": alert.details,
            "suppressed": alert.suppressed,
            "hash": alert.hash,
            "prev_hash": alert.prev_hash,
        },
    }
    container: dict[str, Any] = {}
    if alert.container:
        container["name"] = alert.container
    if event is not None and event.seq == alert.event_seq and event.type == "container":
        container["id"] = event.actor.id
    if alert.image:
        container["image"] = _image(alert.image)
    if container:
        document["container"] = container
    _add_who(document, alert.who)
    return document


def _container(event: Event) -> dict[str, Any]:
    if event.type != "container":
        name = event.attributes.get("container")
        return {"name": name} if isinstance(name, str) else {}
    container: dict[str, Any] = {"id": event.actor.id}
    if event.actor.name:
        container["name"] = event.actor.name
    if event.actor.image:
        container["image"] = _image(event.actor.image)
    labels = {
        key: value
        for key, value in event.attributes.items()
        if isinstance(value, str) and key not in ("name", "image", "container")
    }
    if labels:
        container["labels"] = labels
    return container


def _image(reference: str) -> dict[str, Any]:
    """`repo:tag` (or `repo@digest`) split the way ECS wants it."""
    name, _, digest = reference.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    image: dict[str, Any] = {"name": name}
    if colon > slash:
        image["name"], image["tag"] = name[:colon], [name[colon + 1 :]]
    if digest:
        image["hash"] = {"all": [digest]}
    return image


def _add_who(document: dict[str, Any], who: Who) -> None:
    user: dict[str, Any] = {}
    if who.login is not None:
        user["name"] = who.login
    if who.auid is not None:
        user["id"] = str(who.auid)
    effective = {}
    if who.user is not None:
        effective["name"] = who.user
    if who.uid is not None:
        effective["id"] = str(who.uid)
    if effective:
        user["effective"] = effective
        user.setdefault("name", effective.get("name"))
    if user:
        document["user"] = {k: v for k, v in user.items() if v is not None}
    process: dict[str, Any] = {}
    if who.pid is not None:
        process["pid"] = who.pid
    if who.command is not None:
        process["command_line"] = who.command
    if who.exe is not None:
        process["executable"] = who.exe
        process["name"] = who.exe.rsplit("/", 1)[-1]
    if process:
        document["process"] = process
