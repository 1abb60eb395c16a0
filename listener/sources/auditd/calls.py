"""A docker CLI call as the audit converter parses it once per distinct EXECVE and CWD
text, with the configuration it asks for kept as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from listener.argv import DockerCall, container_config, exec_options


def call_config(call: DockerCall) -> dict[str, Any]:
    """The container or exec configuration a CLI call asks for (JSON types), else empty."""
    container = container_config(call)
    if container is not None:
        return container.as_event_config()
    options = exec_options(call)
    return {} if options is None else options.model_dump(mode="json")


class FrozenConfig:
    """The configuration a call asks for, kept as JSON: each event gets its own copy
    (loading JSON is far cheaper than building and dumping the pydantic models again).

    orjson loads about three times faster than the standard library; it is used only
    when it gives back exactly what was dumped (it refuses integers beyond 64 bits
    and lone surrogates, and writes NaN as null: such configurations stay with json).
    """

    __slots__ = ("_data", "_loads")

    def __init__(self, config: dict[str, Any]) -> None:
        self._loads: Callable[[str | bytes], Any] = json.loads
        self._data: str | bytes = json.dumps(config)
        try:
            data = orjson.dumps(config)
        except (orjson.JSONEncodeError, TypeError):
            return
        if orjson.loads(data) == json.loads(self._data):
            self._loads, self._data = orjson.loads, data

    def copy(self) -> dict[str, Any]:
        copied: dict[str, Any] = self._loads(self._data)
        return copied


class ParsedCall(NamedTuple):
    """A docker CLI call as parsed once for its EXECVE and CWD texts."""

    call: DockerCall
    cwd: str | None
    command_line: str
    config: FrozenConfig
    target: str | None  # the actor: cli_target(call)
    argv_source: dict[str, Any]  # argv_source_of(event): decided by the same texts
