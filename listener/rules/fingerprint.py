"""The fingerprint of a container's security configuration (`config_fingerprint`).

The container table (`listener.rules.activity`) remembers the fingerprint of
the last configuration the container-config rules judged, so that the engine
does not repeat their findings for a configuration already judged; the
reconciliation (`listener.sources.docker_state`) stores it in the trail. Stored
fingerprints must stay valid: any faster implementation gives the same digests
(tests/test_rules.py pins them).
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Mapping
from typing import Any

import orjson

# Settings of a container that say nothing about its own security configuration:
# where they came from, what the CLI said otherwise, the image's names elsewhere.
_NOT_FINGERPRINTED = frozenset(
    {
        "origin",
        "argv_differences",
        "image_repo_digests",
        "image_references",
        "image_intermediate",
        "socket_sources",
        "healthcheck",
    }
)
_SCALARS = frozenset({str, int, float, bool, type(None)})
# The value of an item, for `filter`: a configuration's falsy settings (most of its
# forty-odd) are passed over without a step of the interpreter each.
_VALUE = operator.itemgetter(1)


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """A digest of a container's security configuration (`Event.config`).

    Canonical: keys sorted, lists in a fixed order (inspect lists mounts in no
    particular order), bookkeeping left out (`origin`, `argv_differences`,
    `image_repo_digests`), so that the same configuration read by inspect at
    create time and by a later sweep has the same fingerprint. Unset settings
    (None, 0, false, empty) are left out too: a setting added to the model later
    does not change the fingerprint of the containers that do not use it.
    """
    # `config` holds JSON values (`ContainerConfig.as_event_config`, or a stored body):
    # the falsy ones are exactly the unset settings (None, 0, false, "", [], {}).
    canonical = {
        k: v if type(v) in _SCALARS else _canonical(v)
        for k, v in filter(_VALUE, config.items())
        if k not in _NOT_FINGERPRINTED
    }
    body = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:32]


def _canonical(value: Any) -> Any:
    # Exact lists and dicts first: most values, and no abstract-class check for them.
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is list:
        return _ordered([v if type(v) in _SCALARS else _canonical(v) for v in value])
    if kind is dict or isinstance(value, Mapping):
        return {
            k if type(k) is str else str(k): v if type(v) in _SCALARS else _canonical(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return _ordered([_canonical(v) for v in value])
    return value


def _ordered(items: list[Any]) -> list[Any]:
    if len(items) < 2:
        return items
    return sorted(items, key=_sort_key)


def _sort_key(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
