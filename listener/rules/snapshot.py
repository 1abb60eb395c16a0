"""Saving and restoring what the rules remember, so a start reads only recent events.

The windowed rules' state (`RuleContext.state`: the container table with the
configurations judged, churn windows and learned baselines, image references,
exec and unattributed-change bookkeeping …) is folded from every event
evaluated. Rebuilding it at each start from the whole trail costs time that
grows with the trail, so the rules stage saves it now and then
(`RulesStage`), with the seq it was folded through, in the trail's
`rule_state` table; a start restores it and evaluates, without alerting, only
the events after that seq. The result is the state a never-stopped service
would hold, exactly.

The saved state is derived data, and the table can be written by whoever can
write the trail file. It is therefore trusted only with a valid MAC: HMAC-
SHA256 under a key derived from the trail's Ed25519 signing key, over the
trail id, the seq and hash of the last event folded in, a digest of the rules
configuration and of the rule set (`state_scope`), and the body. What an
attacker who can write the trail file but not read the key gains:

- a forged or edited row (e.g. a container's configuration marked as judged,
  a churn baseline raised, sprawl marked as alerted, a health check planted
  to hide an exec): nothing: its MAC fails and the state is rebuilt from the
  trail, as before this table existed;
- a deleted row, or an older valid row put back: only a slower start: the
  state is rebuilt, or folded on from that older seq, and is the same;
- a valid row of another trail or another configuration: refused (the trail
  id, the event hash and the scope are under the MAC).

Without a readable signing key nothing is saved or trusted; starts rebuild.

The body is JSON with tagged containers (tuples, sets, deques, counters,
ordered dicts) and dataclasses, which must be defined in `listener.rules`;
anything else in the state makes it unsaveable (`RuleStateError`) and the
stage falls back to rebuilding.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import importlib
import sys
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization

from config.errors import DocktrailError, RuleStateError
from config.models import RulesConfig
from sinks.signing import load_private_key
from sinks.sqlite.rulestate import SavedState

STATE_VERSION = 2
"""Of the body's format and of what the rules keep in it (2: the container table follows
reconciliations); a saved state of another version is rebuilt."""
STATE_NAME = "host-rules"
_DOMAIN = b"docktrail rule-state v1\x00"
_KEY_DOMAIN = b"docktrail rule-state key\x00"
_RULES_PACKAGE = "listener.rules."
_TAG = "$"
_TABLE_MIN_ROWS = 16
_PLAIN = frozenset({type(None), bool, int, float, str})


def state_scope(rules: RulesConfig, rule_ids: list[str], attribution_available: bool) -> str:
    """What the state depends on besides the events: configuration, rule set, format."""
    body = orjson.dumps(
        {
            "version": STATE_VERSION,
            "rules": rules.model_dump(mode="json"),
            "ids": sorted(rule_ids),
            "attribution": attribution_available,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(body).hexdigest()


def mac_key(signing_key: Path) -> bytes | None:
    """The MAC key derived from the trail's private signing key; None when unreadable."""
    try:
        key = load_private_key(signing_key)
    except (DocktrailError, OSError, ValueError):
        return None
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return hashlib.sha256(_KEY_DOMAIN + raw).digest()


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    """Where a saved state belongs: the trail, the last event folded in, the scope."""

    trail_id: str
    through_seq: int
    event_hash: str
    scope: str

    def mac(self, key: bytes, body: bytes) -> str:
        header = orjson.dumps([self.trail_id, self.through_seq, self.event_hash, self.scope])
        message = _DOMAIN + len(header).to_bytes(4, "big") + header + body
        return hmac.new(key, message, hashlib.sha256).hexdigest()


def seal(state: dict[str, Any], binding: Binding, key: bytes) -> SavedState:
    return seal_body(encode(state), binding, key)


def seal_body(body: bytes, binding: Binding, key: bytes) -> SavedState:
    return SavedState(binding.through_seq, body, binding.mac(key, body))


def authentic(saved: SavedState, binding: Binding, key: bytes) -> bool:
    """Whether `saved` was sealed for `binding` with `key`."""
    if saved.through_seq != binding.through_seq:
        return False
    return hmac.compare_digest(saved.mac, binding.mac(key, saved.body))


def open_saved(saved: SavedState, binding: Binding, key: bytes) -> dict[str, Any] | None:
    """The state in `saved` when its MAC holds for `binding`; None otherwise."""
    if not authentic(saved, binding, key):
        return None
    try:
        state = decode(saved.body)
    except (RuleStateError, ValueError, TypeError, LookupError):
        return None
    return state if isinstance(state, dict) else None


# -- the body ---------------------------------------------------------------------


def encode(state: dict[str, Any]) -> bytes:
    return orjson.dumps(_enc(state))


def decode(body: bytes) -> Any:
    return _dec(orjson.loads(body))


def _items(mapping: Any) -> list[list[Any]]:
    return [[_enc(k), _enc(v)] for k, v in mapping.items()]


def _enc(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    kind = type(value)
    if kind is list:
        return [_enc(v) for v in value]
    if kind is dict or kind is OrderedDict:
        return _table(value) or {_TAG: kind.__name__, "v": _items(value)}
    if kind is tuple:
        return {_TAG: "tuple", "v": [_enc(v) for v in value]}
    if kind is set or kind is frozenset:
        return {_TAG: kind.__name__, "v": [_enc(v) for v in value]}
    if kind is deque:
        return {_TAG: "deque", "v": [_enc(v) for v in value], "max": value.maxlen}
    if kind is Counter:
        return {_TAG: kind.__name__, "v": _items(value)}
    if dataclasses.is_dataclass(value) and kind.__module__.startswith(_RULES_PACKAGE):
        fields = {f.name: _enc(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {_TAG: "class", "c": f"{kind.__module__}:{kind.__qualname__}", "v": fields}
    raise RuleStateError(f"rule state holds a {kind.__module__}.{kind.__qualname__}")


def _table(mapping: dict[Any, Any]) -> dict[str, Any] | None:
    """A big mapping of str to one state class with plain fields (the container table),
    as columns: encoding and decoding it row by row would cost most of a save."""
    if len(mapping) < _TABLE_MIN_ROWS:
        return None
    rows = list(mapping.values())
    cls = type(rows[0])
    if not (dataclasses.is_dataclass(cls) and cls.__module__.startswith(_RULES_PACKAGE)):
        return None
    keys = list(mapping)
    if any(type(row) is not cls for row in rows) or any(type(k) is not str for k in keys):
        return None
    columns = []
    for field in dataclasses.fields(cls):
        column = [getattr(row, field.name) for row in rows]
        if any(type(item) not in _PLAIN for item in column):
            return None
        columns.append([field.name, column])
    name = f"{cls.__module__}:{cls.__qualname__}"
    return {_TAG: "table", "m": type(mapping).__name__, "c": name, "k": keys, "f": columns}


def _untable(value: dict[str, Any]) -> Any:
    cls = _rules_class(str(value["c"]))
    names = [name for name, _ in value["f"]]
    if names != [field.name for field in dataclasses.fields(cls)]:
        raise RuleStateError(f"saved rule state has other fields for {value['c']!r}")
    rows = zip(*(shared_strings(column) for _, column in value["f"]), strict=True)
    keys = shared_strings(value["k"])
    return _MAPPINGS[value["m"]](zip(keys, (cls(*row) for row in rows), strict=True))


def shared_strings(column: list[Any]) -> list[Any]:
    """`column` with each string interned: a saved table's ids, names and states are held
    once for the process, not once per saved state (the known containers and the rules'
    container table) and per row (a state or an image name)."""
    intern = sys.intern
    return [intern(item) if type(item) is str else item for item in column]


_CONTAINERS: dict[str, Callable[[Any], Any]] = {
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
}
_MAPPINGS: dict[str, Callable[[Any], Any]] = {
    "dict": dict,
    "Counter": collections.Counter,
    "OrderedDict": collections.OrderedDict,
}


def _dec(value: Any) -> Any:
    if isinstance(value, list):
        return [_dec(v) for v in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(_TAG)
    if tag in _CONTAINERS:
        return _CONTAINERS[tag](_dec(v) for v in value["v"])
    if tag in _MAPPINGS:
        return _MAPPINGS[tag](dict((_dec(k), _dec(v)) for k, v in value["v"]))
    if tag == "table":
        return _untable(value)
    if tag == "deque":
        return deque((_dec(v) for v in value["v"]), maxlen=value.get("max"))
    if tag == "class":
        cls = _rules_class(str(value["c"]))
        return cls(**{name: _dec(v) for name, v in value["v"].items()})
    raise RuleStateError(f"saved rule state has an unknown item {str(tag)[:40]!r}")


def _rules_class(name: str) -> Any:
    """A dataclass of `listener.rules` by `module:qualname`; nothing else is ever built."""
    module_name, _, qualname = name.partition(":")
    if not module_name.startswith(_RULES_PACKAGE) or not qualname.isidentifier():
        raise RuleStateError(f"saved rule state names a class outside the rules: {name[:80]!r}")
    try:
        cls = getattr(importlib.import_module(module_name), qualname)
    except (ImportError, AttributeError) as exc:
        raise RuleStateError(f"saved rule state names an unknown class {name[:80]!r}") from exc
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise RuleStateError(f"saved rule state names no state class: {name[:80]!r}")
    return cls
