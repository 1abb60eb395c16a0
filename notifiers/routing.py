"""Which destinations an alert goes to, and the keys that merge its messages.

Pure and fast: it runs inside the transaction that stores the alert (the
outbox rows are written with it), once per new alert.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence

from config.models import Destination, NotificationsConfig
from listener.model.alert import Alert
from notifiers.subject import alert_subject
from sinks.base import SEVERITY_RANK
from sinks.outbox import Route

_NS = 1_000_000_000
_SEP = "\x1f"


class Routing:
    """The configured destinations' routing rules."""

    def __init__(self, config: NotificationsConfig) -> None:
        self._destinations = list(config.destinations)
        self._dedup_window_ns = int(config.dedup_window_secs * _NS)

    def __bool__(self) -> bool:
        return bool(self._destinations)

    def routes(self, alert: Alert, labels: Mapping[str, str] | None = None) -> list[Route]:
        """One route per destination that wants `alert`; none for a suppressed alert.

        Suppressed alerts are kept in the trail for auditors; a configured
        exception means nobody is to be called about them.
        """
        if alert.suppressed is not None:
            return []
        return [
            self._route(destination.name, alert)
            for destination in self._destinations
            if wants(destination, alert, labels or {})
        ]

    def _route(self, destination: str, alert: Alert) -> Route:
        return Route(
            destination=destination,
            group_key=group_key(alert),
            dedup_key=dedup_key(alert),
            dedup_window_ns=self._dedup_window_ns,
        )


def wants(destination: Destination, alert: Alert, labels: Mapping[str, str]) -> bool:
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[destination.min_severity]:
        return False
    if destination.rules and alert.rule not in destination.rules:
        return False
    if destination.hosts and not _any_glob(destination.hosts, alert.host):
        return False
    return all(
        key in labels and (value == "*" or labels[key] == value)
        for key, value in destination.labels.items()
    )


def _any_glob(patterns: Sequence[str], value: str) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


def group_key(alert: Alert) -> str:
    """Alerts of one rule on one host may share a message."""
    return f"{alert.rule}{_SEP}{alert.host}"


def dedup_key(alert: Alert) -> str:
    """Identical alerts: same rule, host, subject (`alert_subject`) and login."""
    return _SEP.join((alert.rule, alert.host, alert_subject(alert), alert.who.login or ""))
