"""OCSF 1.5 records, one JSON object per line.

Class choice (the issue's mapping):

* `docker-cli` executions (auditd) and execs into containers: Process
  Activity (1007);
* container start / stop / restart / die / kill / pause / unpause: Application
  Lifecycle (6002), the container being the application;
* every other change (create, destroy, rename, image pull/tag, networks,
  volumes, daemon files, gaps …): API Activity (6003) on the Docker API;
* alerts: Detection Finding (2004).

Each record carries the container profile (`container`) when it concerns a
container, and docktrail's own fields (seq, hash chain, attributes, config,
why) under `unmapped.docktrail` so nothing of the trail is lost.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

import orjson

from listener.export.commands import is_process_event, session_command
from listener.model.alert import Alert
from listener.model.event import Event, Who
from listener.sessions.records import EXEC_COMMAND

OCSF_VERSION = "1.5.0"

PROCESS_ACTIVITY = 1007
DETECTION_FINDING = 2004
APPLICATION_LIFECYCLE = 6002
API_ACTIVITY = 6003

CLASS_NAMES = {
    PROCESS_ACTIVITY: "Process Activity",
    DETECTION_FINDING: "Detection Finding",
    APPLICATION_LIFECYCLE: "Application Lifecycle",
    API_ACTIVITY: "API Activity",
}
CATEGORY_NAMES = {1: "System Activity", 2: "Findings", 6: "Application Activity"}

SEVERITY_IDS = {"info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5}
SEVERITY_NAMES = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical"}

# Application Lifecycle activity ids: 3 Start, 4 Stop, 5 Restart, 6 Enable, 7 Disable.
LIFECYCLE = {
    "start": (3, "Start"),
    "stop": (4, "Stop"),
    "die": (4, "Stop"),
    "kill": (4, "Stop"),
    "restart": (5, "Restart"),
    "unpause": (6, "Enable"),
    "pause": (7, "Disable"),
}
# API Activity activity ids: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other.
API_ACTIONS = {
    "create": (1, "Create"),
    "pull": (1, "Create"),
    "import": (1, "Create"),
    "load": (1, "Create"),
    "commit": (1, "Create"),
    "mount": (1, "Create"),
    "destroy": (4, "Delete"),
    "delete": (4, "Delete"),
    "remove": (4, "Delete"),
    "untag": (4, "Delete"),
    "prune": (4, "Delete"),
    "unmount": (4, "Delete"),
    "update": (3, "Update"),
    "rename": (3, "Update"),
    "tag": (3, "Update"),
    "connect": (3, "Update"),
    "disconnect": (3, "Update"),
    "reload": (3, "Update"),
    "write": (3, "Update"),
    "rename_file": (3, "Update"),
    "inspect": (2, "Read"),
    "save": (2, "Read"),
    "export": (2, "Read"),
}


def product_version() -> str:
    try:
        return version("docktrail")
    except PackageNotFoundError:  # running from a source tree
        return "0"


class OcsfWriter:
    def __init__(self, out: TextIO, by_class: dict[str, int]) -> None:
        self.out = out
        self.by_class = by_class
        self.metadata_product = {
            "name": "docktrail",
            "vendor_name": "docktrail",
            "version": product_version(),
        }
        self._last_event: Event | None = None

    def write_event(self, event: Event) -> None:
        self._last_event = event
        self._write(event_record(event, self.metadata_product))

    def write_alert(self, alert: Alert) -> None:
        self._write(alert_record(alert, self.metadata_product, self._last_event))

    def _write(self, record: dict[str, Any]) -> None:
        name = record["class_name"]
        self.by_class[name] = self.by_class.get(name, 0) + 1
        self.out.write(orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode() + "\n")

    def close(self) -> None:
        self.out.flush()


def event_record(event: Event, product: dict[str, str]) -> dict[str, Any]:
    """The OCSF record of one trail event."""
    verb = event.action.partition(":")[0].strip()
    if is_process_event(event.type, verb):
        class_uid, specific = PROCESS_ACTIVITY, _process_activity(event, verb)
    elif event.type == "container" and verb in LIFECYCLE:
        class_uid, specific = APPLICATION_LIFECYCLE, _lifecycle(event, verb)
    else:
        class_uid, specific = API_ACTIVITY, _api_activity(event, verb)
    record = _base(class_uid, specific.pop("activity"), event.time_ns, 1, product, event.id)
    record.update(specific)
    record["status_id"], record["status"] = 1, "Success"
    record["message"] = f"{event.type} {event.action}"
    container = _container(event)
    if container is not None:
        record["container"] = container
        record["metadata"]["profiles"] = ["container"]
    record["unmapped"] = {"docktrail": _trail_fields(event)}
    return record


def alert_record(
    alert: Alert, product: dict[str, str], event: Event | None = None
) -> dict[str, Any]:
    """The Detection Finding of one alert; its `event`, when given, names the container id."""
    severity_id = SEVERITY_IDS.get(alert.severity, 99)
    record = _base(DETECTION_FINDING, (1, "Create"), alert.time_ns, severity_id, product, alert.id)
    record["finding_info"] = {
        "uid": alert.id,
        "title": alert.summary,
        "types": [alert.rule],
        "analytic": {"name": alert.rule, "uid": alert.rule, "type_id": 1, "type": "Rule"},
        "related_events": [{"uid": alert.event_id}],
    }
    record["message"] = alert.summary
    record["status_id"], record["status"] = (3, "Suppressed") if alert.suppressed else (1, "New")
    if alert.container:
        record["container"] = {"name": alert.container, "uid": container_id(alert, event)}
        if alert.image:
            record["container"]["image"] = {"name": alert.image, "uid": alert.image}
        record["metadata"]["profiles"] = ["container"]
    resources = [{"type": "container", "name": alert.container}] if alert.container else []
    if alert.image:
        resources.append({"type": "image", "name": alert.image})
    if resources:
        record["resources"] = resources
    record["unmapped"] = {
        "docktrail": {
            "seq": alert.seq,
            "event_seq": alert.event_seq,
            "host": alert.host,
            "who": _who_fields(alert.who),
            "details": alert.details,
            "suppressed": alert.suppressed,
            "hash": alert.hash,
            "prev_hash": alert.prev_hash,
        }
    }
    return record


def container_id(alert: Alert, event: Event | None) -> str:
    """The alert's container id when its event (exported just before it) names it."""
    if event is not None and event.seq == alert.event_seq and event.type == "container":
        return event.actor.id
    return alert.container or ""


def _base(
    class_uid: int,
    activity: tuple[int, str],
    time_ns: int,
    severity_id: int,
    product: dict[str, str],
    uid: str,
) -> dict[str, Any]:
    category_uid = class_uid // 1000
    activity_id, activity_name = activity
    return {
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": category_uid,
        "category_name": CATEGORY_NAMES[category_uid],
        "class_uid": class_uid,
        "class_name": CLASS_NAMES[class_uid],
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{CLASS_NAMES[class_uid]}: {activity_name}",
        "severity_id": severity_id,
        "severity": SEVERITY_NAMES.get(severity_id, "Other"),
        "time": time_ns // 1_000_000,
        "metadata": {"version": OCSF_VERSION, "product": dict(product), "uid": uid},
    }


def _process_activity(event: Event, verb: str) -> dict[str, Any]:
    activity = (2, "Terminate") if verb == "exec_die" else (1, "Launch")
    process: dict[str, Any] = {}
    if event.type == "docker-cli":
        who = event.who
        process = {"pid": who.pid, "cmd_line": who.command, "name": "docker"}
        if who.exe:
            process["file"] = {"path": who.exe, "name": who.exe.rsplit("/", 1)[-1], "type_id": 1}
        if who.user is not None or who.uid is not None:
            process["user"] = _user(who.user, who.uid)
    elif verb == EXEC_COMMAND:
        process = _session_command(event.attributes)
    else:
        command = event.action.partition(":")[2].strip() or event.attributes.get("execCommand")
        process = {"cmd_line": command if isinstance(command, str) else None}
        exec_id = event.attributes.get("execID")
        if isinstance(exec_id, str):
            process["uid"] = exec_id
    return {
        "activity": activity,
        "actor": _actor(event.who),
        "device": {"hostname": event.host, "name": event.host, "type_id": 1, "type": "Server"},
        "process": {key: value for key, value in process.items() if value is not None},
    }


def _session_command(attributes: dict[str, Any]) -> dict[str, Any]:
    """One command of an exec session: the process in the container (its uid is the
    container's), its parent by pid; the exec's owner is the actor."""
    command = session_command(attributes)
    process: dict[str, Any] = {"pid": command.pid, "cmd_line": command.command_line}
    if command.executable:
        file = {"path": command.executable, "name": command.name, "type_id": 1}
        process |= {"name": command.name, "file": file}
    if command.uid is not None:
        process["user"] = _user(None, command.uid)
    if command.ppid is not None:
        process["parent_process"] = {"pid": command.ppid}
    if command.uid_in_session:
        process["uid"] = command.uid_in_session
    return process


def _lifecycle(event: Event, verb: str) -> dict[str, Any]:
    app = {"name": event.actor.name or event.actor.id[:12], "uid": event.actor.id}
    return {"activity": LIFECYCLE[verb], "app": {**app, "vendor_name": "docker"}}


def _api_activity(event: Event, verb: str) -> dict[str, Any]:
    activity = API_ACTIONS.get(verb, (99, verb or "Other"))
    service = "auditd" if event.source == "auditd" else "docker"
    return {
        "activity": activity,
        "actor": _actor(event.who),
        "api": {"operation": f"{event.type}.{verb}", "service": {"name": service}},
        "src_endpoint": {"hostname": event.host},
    }


def _actor(who: Who) -> dict[str, Any]:
    """The OCSF actor; an unattributed change is the daemon's, user unknown."""
    if who.login is None and who.auid is None and who.user is None:
        return {"app_name": "dockerd"}
    name = who.login if who.login is not None else who.user
    uid = who.auid if who.auid is not None else who.uid
    actor: dict[str, Any] = {"user": _user(name, uid)}
    if who.pid is not None:
        actor["process"] = {"pid": who.pid, "cmd_line": who.command}
    if who.ses is not None:
        actor["session"] = {"uid": str(who.ses)}
    return actor


def _user(name: str | None, uid: int | None) -> dict[str, Any]:
    user: dict[str, Any] = {"type_id": 1, "type": "User"}
    if name is not None:
        user["name"] = name
    if uid is not None:
        user["uid"] = str(uid)
    return user


def _container(event: Event) -> dict[str, Any] | None:
    container_id = event.actor.id if event.type == "container" else None
    name = event.actor.name if event.type == "container" else None
    attribute = event.attributes.get("container")
    if container_id is None and isinstance(attribute, str):
        name = attribute
    if not container_id and not name:
        return None
    container: dict[str, Any] = {
        "uid": container_id or name,
        "name": name or (container_id or "")[:12],
    }
    image = event.actor.image if event.type == "container" else None
    if image:
        container["image"] = {"name": image, "uid": image}
    return container


def _who_fields(who: Who) -> dict[str, Any]:
    return {key: value for key, value in who.model_dump().items() if value is not None}


def _trail_fields(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "source": event.source,
        "type": event.type,
        "action": event.action,
        "who": _who_fields(event.who),
        "why": {k: v for k, v in event.why.model_dump().items() if v is not None},
        "attributes": event.attributes,
        "config": event.config,
        "hash": event.hash,
        "prev_hash": event.prev_hash,
    }
