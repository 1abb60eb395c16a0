"""What an alert is about: the subject that decides which alerts are the same.

Dedup folds only alerts that are truly the same: one rule, one host, one
login and one subject. The subject is what the rule judged: the file of a
daemon-file change, the user and privilege of an exec, the mount, the
capabilities, the namespaces; for untrusted-image the image itself, not the
container that ran it (thirty runs of one image by one login are one alert
with a count). Subject fields come from the alert's details, as the rules
write them; a field a rule does not write simply takes no part.
"""

from __future__ import annotations

import json
from typing import Any

from listener.model.alert import Alert

SUBJECT_DETAILS = (
    "path",  # daemon-config-change: the file
    "operation",
    "user",  # exec-in-container: as whom, how privileged, with which risks
    "privileged",
    "risks",
    "mounts",  # socket and sensitive mounts
    "mount",
    "capabilities",
    "namespaces",
    "disabled",
    "missing",
    "action",  # unattributed-change: create, start, destroy …
)
"""Details that name what an alert is about; any one that differs makes a different alert."""

IMAGE_SUBJECT_RULES = frozenset({"untrusted-image"})
"""Rules about an image: the containers that ran it are not the subject."""

_SEP = "\x1f"


def alert_subject(alert: Alert) -> str:
    """The alert's subject as one stable string (equal for alerts about the same thing)."""
    parts = [_target(alert)]
    parts += [
        f"{name}={_canonical(alert.details[name])}"
        for name in SUBJECT_DETAILS
        if alert.details.get(name) not in (None, [], {})
    ]
    return _SEP.join(parts)


def _target(alert: Alert) -> str:
    if alert.rule in IMAGE_SUBJECT_RULES:
        details = alert.details
        return str(details.get("normalized") or alert.image or details.get("reference") or "")
    return alert.container or alert.image or ""


def _canonical(value: Any) -> str:
    """The same value written the same way: lists compared as sets, keys sorted."""
    if isinstance(value, list):
        return json.dumps(sorted(_canonical(item) for item in value))
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
