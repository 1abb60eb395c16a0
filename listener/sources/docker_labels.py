"""Labels in Docker Engine events: told apart from the Engine's own keys, and read
for the who and why they declare.

* Every attribute is kept. The Engine builds container event attributes by
  copying the container's labels, then the action's own attributes, then
  `image` and `name` on top (daemon/events.go). Labels therefore sit beside
  engine keys and cannot be told apart by name alone. We keep the engine keys
  top-level and move everything else to `attributes.labels`, using the keys
  each action is known to add (`_CONTAINER_ENGINE_KEYS`, checked against
  dockerd 20.10 / API 1.41 and the moby source up to API 1.52). The table is
  per action so that a label named like another action's key (`signal` on a
  `create`) is still a label. Limits, from the Engine itself: a label called
  `image` or `name` is overwritten and lost; a label named like the action's
  own key (`exitCode` on `die`) overwrites the real value, which we then
  report as the engine key. Seen on dockerd 20.10 (API 1.41): every container
  event has `image` and `name`; `exec_*` add `execID`, `exec_die` and `die`
  `exitCode`, `kill` `signal`, `rename` `oldName`, `commit` `comment`,
  `imageID` and `imageRef`. Keys such as `container`, `driver`,
  `destination`, `propagation`, `read/write` and `type` belong to volume and
  network events and are never set by the Engine on container events: on a
  container they are labels.
  Image events get the same treatment: the Engine copies the image's labels
  and sets `name` (the reference). Volume, network, daemon, plugin and swarm
  events carry no labels, so their attributes stay flat.
* Label `audit.who` is a claim (`who.claimed`), never the login: anyone can
  set a label. `audit.why` / `audit.ticket` / `audit.expires` are the declared
  why (`why.source` = `label`) of whoever the evidence says made the change.

Normalisation (`docker`) calls these once per event, and reconciliation and the
posture sweeps (`docker_reconcile`, `docker_sweep`) for the events they make.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from listener.model.event import Who, Why
from listener.model.trusted import defaults, trusted

# Keys the Engine adds to every container event (after the labels).
_CONTAINER_COMMON_KEYS = frozenset({"image", "name"})
# Keys a container action adds on top of the common ones (moby daemon/*.go).
_CONTAINER_ENGINE_KEYS: Mapping[str, frozenset[str]] = {
    "die": frozenset({"exitCode", "execDuration"}),  # execDuration: API >= 1.42
    "exec_create": frozenset({"execID"}),
    "exec_start": frozenset({"execID"}),
    "exec_detach": frozenset({"execID"}),
    "exec_die": frozenset({"execID", "exitCode"}),
    "kill": frozenset({"signal"}),
    "rename": frozenset({"oldName"}),
    "resize": frozenset({"height", "width"}),
    "commit": frozenset({"comment", "imageID", "imageRef"}),
    "prune": frozenset({"reclaimed"}),
}
# Keys the Engine adds to image events (after the image's labels).
_IMAGE_ENGINE_KEYS: Mapping[str, frozenset[str]] = {"prune": frozenset({"reclaimed"})}
_IMAGE_COMMON_KEYS = frozenset({"name"})
# engine_keys() of every known action, made once: the union is asked for on every event.
_CONTAINER_KEYS = {
    action: _CONTAINER_COMMON_KEYS | keys for action, keys in _CONTAINER_ENGINE_KEYS.items()
}
_IMAGE_KEYS = {action: _IMAGE_COMMON_KEYS | keys for action, keys in _IMAGE_ENGINE_KEYS.items()}

_WHO = defaults(Who)
_WHY = defaults(Why)
_WHY_GIVEN = frozenset(_WHY)


def engine_keys(type_: str, action: str) -> frozenset[str]:
    """Attribute keys the Engine itself sets on a `type_` event with base `action`.

    Only container and image events mix labels into their attributes; other
    types raise `ValueError` (every key of theirs is the Engine's).
    """
    if type_ == "container":
        return _CONTAINER_KEYS.get(action, _CONTAINER_COMMON_KEYS)
    if type_ == "image":
        return _IMAGE_KEYS.get(action, _IMAGE_COMMON_KEYS)
    raise ValueError(f"{type_} events carry no labels")


def split_labels(type_: str, action: str, attrs: dict[str, str]) -> dict[str, Any]:
    """Engine keys stay top-level; for containers and images the rest are labels."""
    if type_ not in ("container", "image"):
        return dict(attrs)
    keys = engine_keys(type_, action)
    attributes: dict[str, Any] = {k: v for k, v in attrs.items() if k in keys}
    attributes["labels"] = {k: v for k, v in attrs.items() if k not in keys}
    return attributes


def _label(labels: Mapping[str, str], key: str) -> str | None:
    value = labels.get(key, "").strip()
    return value or None


def who_from_labels(labels: Mapping[str, str]) -> Who:
    # Anyone who can create a container can set a label: a claim, never the login.
    claimed = _label(labels, "audit.who")
    values = dict(_WHO)
    if not claimed:
        return trusted(Who, values, set())
    values["claimed"] = claimed
    return trusted(Who, values, {"claimed"})


def why_from_labels(labels: Mapping[str, str]) -> Why:
    reason = _label(labels, "audit.why")
    ticket = _label(labels, "audit.ticket")
    expires = _label(labels, "audit.expires")
    if reason is None and ticket is None and expires is None:
        return trusted(Why, dict(_WHY), set())
    values = {"reason": reason, "ticket": ticket, "expires": expires, "source": "label"}
    return trusted(Why, values, set(_WHY_GIVEN))
