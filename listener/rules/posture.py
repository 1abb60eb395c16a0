"""Posture rules: a daemon setting or the audit watches got worse (CIS 2.x, 1.1.x).

The checks themselves run in `listener.posture`; these rules only read the
`posture` events they record, so replay judges them the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

from config.models import Severity
from listener.model.catalogue import (
    AUDIT_RULE_POSTURE,
    CONTAINER_DRIFT,
    DAEMON_POSTURE,
    HOST_POSTURE,
)
from listener.model.event import Event
from listener.model.finding import RuleMeta
from listener.rules.base import Finding, RuleContext, finding


def _worse(meta: RuleMeta, event: Event) -> Iterator[Finding]:
    attributes = event.attributes
    summary = bool(attributes.get("summary")) and not attributes.get("worse")
    if not attributes.get("worse") and not summary:
        return
    status = str(attributes.get("status"))
    was = attributes.get("previous_status") or "not seen"
    check, cis = attributes.get("check"), attributes.get("cis")
    change = f"still {status}, daily summary" if summary else f"{was} → {status}"
    yield finding(
        meta,
        event,
        f"{check} ({change}, CIS {cis}): {attributes.get('detail')}",
        severity=_severity(summary, status, attributes.get("previous_status")),
        check=check,
        cis=cis,
        status=status,
        previous_status=attributes.get("previous_status"),
        items=attributes.get("items") or [],
    )


def check_host_posture(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    return _worse(HOST_POSTURE, event)


def check_daemon_posture(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    return _worse(DAEMON_POSTURE, event)


def check_audit_rule_posture(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    return _worse(AUDIT_RULE_POSTURE, event)


def check_container_drift(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    paths = [str(path) for path in event.attributes.get("critical") or []]
    # A new or changed executable anywhere (/tmp, /root) runs as well as one in bin/.
    execs = [str(path) for path in event.attributes.get("executables") or []]
    paths += [path for path in execs if path not in paths]
    if not paths:
        return
    shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
    yield finding(
        CONTAINER_DRIFT,
        event,
        f"{event.actor.name or event.actor.id[:12]}: drift outside volumes: {shown}",
        paths=paths,
        count=event.attributes.get("count"),
        executables=execs,
    )


def _severity(summary: bool, status: str, previous: object) -> Severity | None:
    """A daily reminder is low; a setting that turned to `fail` is the rule's own (high);
    a `fail` seen for the first time (a host as docktrail found it, as docker-bench would
    report it) and any `warn` are medium: an install raises no wall of HIGHs."""
    if summary:
        return "low"
    return None if status == "fail" and previous is not None else "medium"
