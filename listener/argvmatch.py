"""Whether a `docker run`/`create` argv could have made the container the Engine reports.

When two CLI calls fit a container's create equally well (the same `--name`, or
the same image without a name), the one whose argv agrees with what was
created is the cause: a call the Engine refused (no command, a name in use, a
bad flag) made nothing, and its argv says something else than the container
does. Compared: the settings the argv states (`container_config`, the way
`merge_configs` compares them with inspect) and what the container runs, its
entrypoint and command (`Launch`, from the live inspect).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from listener.argv import DockerCall, container_config
from listener.containerconfig import ContainerConfig, merge_configs
from listener.event import Launch

__all__ = ["argv_agrees"]


def argv_agrees(call: DockerCall, config: Mapping[str, Any], launch: Launch | None) -> bool:
    """False when the argv states something the created container contradicts."""
    stated = container_config(call)
    if stated is None:
        return True
    if config.get("origin") == "inspect" and not _settings_agree(config, stated):
        return False
    return launch is None or _launch_agrees(call, launch)


def _settings_agree(config: Mapping[str, Any], stated: ContainerConfig) -> bool:
    try:
        inspected = ContainerConfig.model_validate(dict(config))
    except ValueError:
        return True  # not a config we can read: no evidence either way
    before = inspected.argv_differences
    return merge_configs(inspected, stated).argv_differences == before


def _launch_agrees(call: DockerCall, launch: Launch) -> bool:
    """The Engine's rules (daemon's merge with the image config): an entrypoint given
    replaces the image's and drops its command; a command given replaces the image's."""
    command = tuple(call.args[1:])
    entrypoint = call.opt("entrypoint")
    if entrypoint == "":
        return not command or launch.command == command  # `--entrypoint=` resets it
    if entrypoint is not None:
        return launch.entrypoint == (entrypoint,) and launch.command == command
    if launch.image_entrypoint is not None and launch.entrypoint != launch.image_entrypoint:
        return False
    if command:
        return launch.command == command
    return launch.image_command is None or launch.command == launch.image_command
