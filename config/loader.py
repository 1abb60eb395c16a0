"""Loading `docktrail.yaml`, environment overrides and command-line overrides.

Precedence, lowest first: defaults, the YAML file, `DOCKTRAIL_…` environment
variables (nested keys joined by `__`, e.g. `DOCKTRAIL_TRAIL__PATH`), then
command-line options such as `--db`. `DOCKER_HOST` wins over `docker.host`.

Every problem is reported as one `ConfigError` whose message names where the
bad value came from (file and line, or the environment variable), the key path
and what is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from config.errors import ConfigError
from config.models import DocktrailConfig, RulesConfig

ENV_PREFIX = "DOCKTRAIL_"
ENV_DELIMITER = "__"
DEFAULT_FILE = Path("docktrail.yaml")


class _EnvReader(DocktrailConfig, BaseSettings):
    """Only used to read `DOCKTRAIL_…` variables into a nested dict."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        populate_by_name=True,
    )


def find_config_file(explicit: Path | None, environ: Mapping[str, str]) -> Path | None:
    """`-c FILE`, else `$DOCKTRAIL_CONFIG`, else `./docktrail.yaml` when it exists."""
    if explicit is not None:
        return explicit
    from_env = environ.get(ENV_PREFIX + "CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def load_config(
    path: Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> DocktrailConfig:
    environ = os.environ if environ is None else environ
    path = find_config_file(path, environ)
    file_data, nodes = _read_yaml(path) if path is not None else ({}, None)
    env_data = _read_env(environ)
    merged = _deep_merge(_deep_merge(file_data, env_data), dict(overrides or {}))
    try:
        config = DocktrailConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, nodes, env_data)) from None
    docker_host = environ.get("DOCKER_HOST")
    if docker_host:
        config.docker.host = docker_host
    return config


def _read_yaml(path: Path) -> tuple[dict[str, Any], yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}, None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of settings")
    return data, node


def _read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    source = EnvSettingsSource(_EnvReader)
    source.env_vars = {k.lower(): v for k, v in environ.items()}
    try:
        return source()
    except Exception as exc:  # pydantic-settings raises SettingsError on bad JSON values
        raise ConfigError(f"environment variables {ENV_PREFIX}…: {exc}") from None


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        alias = _matching_key(merged, key)
        if isinstance(value, dict) and isinstance(merged.get(alias), dict):
            merged[alias] = _deep_merge(merged[alias], value)
        else:
            merged[alias] = value
    return merged


def _matching_key(mapping: Mapping[str, Any], key: str) -> str:
    """Env names use `_` where the YAML uses the rule id's `-`: treat them as one key."""
    if key in mapping:
        return key
    dashed = key.replace("_", "-")
    return dashed if dashed in mapping else key


def _describe(
    exc: ValidationError,
    path: Path | None,
    nodes: yaml.Node | None,
    env_data: Mapping[str, Any],
    *,
    model: type[BaseModel] = DocktrailConfig,
) -> str:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key_path = ".".join(loc) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1], model)
            message = "unknown setting" + (
                f"; expected one of: {', '.join(known)}" if known else ""
            )
        problems.append(f"{_origin(loc, path, nodes, env_data)}: {key_path}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(problems)


def _known_keys(loc: list[str], root: type[BaseModel] = DocktrailConfig) -> list[str]:
    """The keys the model at `loc` accepts, as they are written in the file."""
    model: type[BaseModel] | None = root
    for part in loc:
        if model is None:
            return []
        if part.isdigit():
            continue  # an item of a list: same model as the list's
        field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
        model = _model_of(field.annotation) if field is not None else None
    if model is None:
        return []
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _origin(
    loc: list[str], path: Path | None, nodes: yaml.Node | None, env_data: Mapping[str, Any]
) -> str:
    if _has_path(env_data, loc):
        return (
            "environment variable " + ENV_PREFIX + ENV_DELIMITER.join(loc).upper().replace("-", "_")
        )
    if path is None:
        return "defaults"
    line = _yaml_line(nodes, loc)
    return f"{path}:{line}" if line else str(path)


def _has_path(data: Any, loc: list[str]) -> bool:
    for part in loc:
        if isinstance(data, dict):
            key = _matching_key(data, part.replace("-", "_"))
            if key not in data and part not in data:
                return False
            data = data.get(part, data.get(key))
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return False
    return True


def _yaml_line(node: yaml.Node | None, loc: list[str]) -> int | None:
    """Line of the deepest YAML node along `loc` (1-based)."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next(((k, v) for k, v in node.value if k.value == part), None)
            if child is None:
                break
            line = child[0].start_mark.line + 1
            node = child[1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def dump_default_config() -> str:
    """The default configuration as YAML, for `docktrail config show`."""
    data = DocktrailConfig().model_dump(mode="json", by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def load_rules_file(path: Path) -> RulesConfig:
    """A rules file for `replay --rules` / `rules test`: a `rules:` section or its content."""
    data, nodes = _read_yaml(path)
    if "rules" in data and isinstance(data["rules"], dict):
        data = data["rules"]
        nodes = _child(nodes, "rules")
    try:
        return RulesConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, nodes, {}, model=RulesConfig)) from None


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == key), None)
    return None
