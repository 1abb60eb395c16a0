"""`docktrail posture`: one row per check, from the Engine now and the trail.

The Engine at `docker.host` says how things are; the trail says since when
(the first record of the current status) and who last changed it (for the
daemon: the login auditd saw change one of its files before that).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.models import DocktrailConfig
from listener.model.event import Event
from listener.posture import metering, sprawl
from listener.posture.audit import audit_rule_checks, read_loaded_rules
from listener.posture.check import Check
from listener.posture.daemon import daemon_checks
from listener.posture.runner import host_checks, read_daemon, read_daemon_json, read_host
from sinks.base import EventFilter

_NS = 1_000_000_000
_CHANGE_WINDOW_NS = 86_400 * _NS  # a daemon file change this long before counts as the cause
_USED_ACTIONS = ("create", "start", "observed", "posture")


@dataclass(frozen=True, slots=True)
class Row:
    family: str
    check: Check
    since_ns: int | None = None
    changed_by: str | None = None

    def as_dict(self, since: str | None) -> dict[str, Any]:
        return {
            "check": self.check.check, "cis": self.check.cis, "status": self.check.status,
            "detail": self.check.detail, "since": since, "changed_by": self.changed_by,
            "family": self.family, "items": list(self.check.items),
        }  # fmt: skip


@dataclass(slots=True)
class Live:
    """What the Engine (and the host's files) say now."""

    info: dict[str, Any]
    bridge: dict[str, Any] | None
    listings: tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]

    @classmethod
    def read(cls, engine: Any) -> Live:
        info, bridge = read_daemon(engine)
        return cls(info, bridge, read_host(engine))


def images_last_used(trail: Any, host: str, images: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Image id -> the last container event of the trail that used it (by id or name)."""
    by_name: dict[str, int] = {}
    wanted = EventFilter(type="container", action=_USED_ACTIONS, host=host)
    for event in trail.query(wanted):
        for name in (event.actor.image, str(event.attributes.get("image") or "")):
            if name:
                by_name[name] = max(by_name.get(name, 0), event.time_ns)
    used = {}
    for image in images:
        image_id = str(image.get("Id") or "")
        names = [image_id, image_id.removeprefix("sha256:"), *(image.get("RepoTags") or [])]
        times = [by_name[n] for n in names if n in by_name]
        if times:
            used[image_id] = max(times)
    return used


def posture_history(trail: Any, host: str) -> dict[tuple[str, str], list[Event]]:
    """This host's posture events per (family, check), in seq order."""
    found: dict[tuple[str, str], list[Event]] = {}
    wanted = EventFilter(type=("daemon", "audit-rules", "host"), action="posture", host=host)
    for event in trail.query(wanted):
        found.setdefault((event.type, str(event.attributes.get("check"))), []).append(event)
    return found


def _since(history: Sequence[Event], status: str) -> Event | None:
    """The first event of the last run of `status` (None: the trail has not seen it)."""
    first = None
    for event in reversed(history):
        if event.attributes.get("status") != status:
            break
        first = event
    return first


def _changed_by(daemon_files: Sequence[Event], at_ns: int) -> str | None:
    before = [e for e in daemon_files if at_ns - _CHANGE_WINDOW_NS <= e.time_ns <= at_ns]
    if not before:
        return None
    who = before[-1].who
    path = before[-1].actor.name or before[-1].attributes.get("path") or "?"
    return f"{who.login or who.user or 'unknown'} ({path})"


def drift_check(trail: Any, host: str, containers: Sequence[Mapping[str, Any]]) -> Row:
    running = {str(c.get("Id")) for c in containers if str(c.get("State")) == "running"}
    latest: dict[str, Event] = {}
    for event in trail.query(EventFilter(type="container", action="drift", host=host)):
        if event.actor.id in running:
            latest[event.actor.id] = event
    drifted = [e for e in latest.values() if e.attributes.get("count")]
    critical = [e for e in drifted if e.attributes.get("critical")]
    names = tuple(e.actor.name or e.actor.id[:12] for e in drifted)
    since = min((e.time_ns for e in drifted), default=None)
    if critical:
        detail = f"{len(critical)} container(s) changed bin/, lib/ or etc/"
        return Row("drift", Check("container-drift", "5.13", "fail", detail, None, names), since)
    if drifted:
        detail = f"{len(drifted)} container(s) changed outside volumes"
        return Row("drift", Check("container-drift", "5.13", "warn", detail, None, names), since)
    detail = f"no drift recorded in {len(running)} running container(s)"
    return Row("drift", Check("container-drift", "5.13", "pass", detail))


def build_report(
    config: DocktrailConfig, live: Live, trail: Any | None, host: str, metering_file: Path
) -> list[Row]:
    """Every check's row; without a trail, no since, who or drift."""
    samples: list[metering.Sample] = []
    if metering_file.exists():
        with metering.opened(metering_file, readonly=True) as store:
            samples = store.latest(int(3 * config.posture.metering.interval_secs * _NS))
    images = live.listings[1]
    used = images_last_used(trail, host, images) if trail is not None else {}
    checks = [("daemon", c) for c in daemon_checks(
        live.info, live.bridge, read_daemon_json(config.posture.daemon_config_file)
    )]  # fmt: skip
    text, origin = read_loaded_rules(config.posture.audit_rules_file)
    checks += [("audit-rules", c) for c in audit_rule_checks(
        config.posture.required_watches, text, origin
    )]  # fmt: skip
    checks += [("host", c) for c in host_checks(
        config.posture, live.listings, used, samples, live.info,
        config.rules.container_sprawl.margin,
    )]  # fmt: skip
    if trail is None:
        return [Row(family, check) for family, check in checks]
    return [*_with_history(trail, host, checks), drift_check(trail, host, live.listings[0])]


def _with_history(trail: Any, host: str, checks: list[tuple[str, Check]]) -> list[Row]:
    history = posture_history(trail, host)
    daemon_files = list(trail.query(EventFilter(type="daemon-file", host=host)))
    rows = []
    for family, check in checks:
        first = _since(history.get((family, check.check), []), check.status)
        since = first.time_ns if first is not None else None
        by = _changed_by(daemon_files, since) if since is not None and family == "daemon" else None
        rows.append(Row(family, check, since, by))
    return rows


def image_rows(
    config: DocktrailConfig, live: Live, trail: Any | None, host: str
) -> list[sprawl.Candidate]:
    images, containers = live.listings[1], live.listings[0]
    used = images_last_used(trail, host, images) if trail is not None else {}
    return sprawl.image_candidates(
        images, containers, used, time.time_ns(), config.posture.images.unused_days
    )
