"""deploy/docktrail.example.yaml shows every option of the configuration model, and
validates as it is."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from config.loader import load_config
from config.models import DocktrailConfig, RulesConfig

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "docktrail.example.yaml"


def _models_in(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def option_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Every key path of the model; a rule id is written `<rule>`."""
    paths: set[str] = set()
    for name, field in model.model_fields.items():
        key = "<rule>" if model is RulesConfig else (field.alias or name)
        path = f"{prefix}{key}"
        paths.add(path)
        for inner in _models_in(field.annotation):
            paths |= option_paths(inner, path + ".")
    return paths


def set_paths(value: object, prefix: str = "") -> set[str]:
    """Key paths the loaded example sets explicitly (same naming as `option_paths`)."""
    paths: set[str] = set()
    if isinstance(value, list | tuple):
        for item in value:
            paths |= set_paths(item, prefix)
        return paths
    if not isinstance(value, BaseModel):
        return paths
    for name in value.model_fields_set:
        field = type(value).model_fields[name]
        key = "<rule>" if isinstance(value, RulesConfig) else (field.alias or name)
        paths.add(prefix + key)
        paths |= set_paths(getattr(value, name), f"{prefix}{key}.")
    return paths


def commented_keys(text: str) -> set[str]:
    """Keys shown in comments (`#   url: ...`, `# - name: ...`): optional sections kept off."""
    return set(re.findall(r"^\s*#\s*(?:-\s*)?([a-z_]+):", text, flags=re.MULTILINE))


def test_example_shows_every_option() -> None:
    config = load_config(EXAMPLE, environ={})
    shown = set_paths(config)
    commented = commented_keys(EXAMPLE.read_text())
    missing = {
        p for p in option_paths(DocktrailConfig) - shown if p.rsplit(".", 1)[-1] not in commented
    }
    assert missing == set(), "not in deploy/docktrail.example.yaml"


def test_example_names_every_rule_id() -> None:
    config = load_config(EXAMPLE, environ={})
    ids = {f.alias for f in RulesConfig.model_fields.values()}
    assert {RulesConfig.model_fields[n].alias for n in config.rules.model_fields_set} == ids


def test_the_option_walk_finds_nested_and_optional_sections() -> None:
    paths = option_paths(DocktrailConfig)
    assert {"trail.path", "kafka.topic", "notifications.destinations.url"} <= paths
    assert {"rules.<rule>.exceptions.reason", "rules.<rule>.trusted", "metrics.port"} <= paths
