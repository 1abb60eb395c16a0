"""Checks an OCSF record against tests/data/ocsf/classes-1.5.json (required fields, types)."""

from __future__ import annotations

import json
from typing import Any

from tests.shared_data import DATA

SCHEMA: dict[str, Any] = json.loads((DATA / "ocsf" / "classes-1.5.json").read_text())
_SCALARS = {
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "timestamp": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
}


def problems(record: dict[str, Any]) -> list[str]:
    """Every way `record` breaks the schema; empty when it conforms."""
    found: list[str] = []
    klass = SCHEMA["classes"].get(str(record.get("class_uid")))
    if klass is None:
        return [f"class_uid {record.get('class_uid')!r} is not an exported class"]
    base = SCHEMA["base"]
    required = {**base["required"], **klass["required"]}
    optional = {**base["optional"], **klass.get("optional", {})}
    found += _check("record", record, required, optional, strict=False)
    if record.get("category_uid") != klass["category_uid"]:
        found.append(f"category_uid {record.get('category_uid')} for class {klass['name']}")
    if record.get("activity_id") not in klass["activity_ids"]:
        found.append(f"activity_id {record.get('activity_id')} not in {klass['name']}")
    if record.get("type_uid") != record.get("class_uid", 0) * 100 + record.get("activity_id", 0):
        found.append("type_uid is not class_uid * 100 + activity_id")
    if record.get("severity_id") not in SCHEMA["severity_ids"]:
        found.append(f"severity_id {record.get('severity_id')}")
    if "status_id" in record and record["status_id"] not in SCHEMA["status_ids"]:
        found.append(f"status_id {record['status_id']}")
    return found


def _check(
    where: str, value: Any, required: dict[str, str], optional: dict[str, str], strict: bool
) -> list[str]:
    found = [f"{where}.{name}: missing" for name in required if name not in value]
    for name, item in value.items():
        kind = required.get(name) or optional.get(name)
        if kind is None:
            if strict:
                found.append(f"{where}.{name}: not an attribute of this object")
            continue
        found += _typed(f"{where}.{name}", item, kind)
    return found


def _typed(where: str, value: Any, kind: str) -> list[str]:
    if kind in _SCALARS:
        return [] if _SCALARS[kind](value) else [f"{where}: {value!r} is not {kind}"]
    if not isinstance(value, dict):
        return [f"{where}: {value!r} is not a {kind} object"]
    spec = SCHEMA["objects"][kind]
    found = _check(where, value, spec["required"], spec.get("optional", {}), strict=True)
    wanted = spec.get("at_least_one")
    if wanted and not any(name in value for name in wanted):
        found.append(f"{where}: needs one of {', '.join(wanted)}")
    return found
