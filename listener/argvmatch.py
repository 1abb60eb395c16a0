"""Whether a `docker run`/`create` argv could have made the container the Engine reports.

When two CLI calls fit a container's create equally well (the same `--name`, or
the same image without a name), the one whose argv agrees with what was
created is the cause: a call the Engine refused (no command, a name in use, a
bad flag) made nothing, and its argv says something else than the container
does. Compared: the settings the argv states (`container_config`, the way
`merge_configs` compares them with inspect, minus spellings the Engine
resolves), the settings only a call can set (privileged, capabilities, devices,
binds, network and pid modes, memory: the container must not have them unless
the argv asked), and what the container runs, its entrypoint and command
(`Launch`, from the live inspect, with the image's defaults).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from listener.argv import DockerCall, container_config
from listener.model.containerconfig import ContainerConfig, Mount, merge_configs
from listener.model.event import Launch

__all__ = ["argv_agrees"]


def argv_agrees(call: DockerCall, config: Mapping[str, Any], launch: Launch | None) -> bool:
    """False when the argv states something the created container contradicts."""
    stated = container_config(call)
    if stated is None:
        return True
    # --volumes-from copies another container's mounts, binds included.
    stated_names = stated.model_fields_set | (
        {"mounts"} if "volumes-from" in call.options else set()
    )
    if config.get("origin") == "inspect" and not _settings_agree(config, stated, stated_names):
        return False
    return launch is None or _launch_agrees(call, launch)


def _settings_agree(config: Mapping[str, Any], stated: ContainerConfig, names: set[str]) -> bool:
    try:
        inspected = ContainerConfig.model_validate(dict(config))
    except ValueError:
        return True  # not a config we can read: no evidence either way
    before = inspected.argv_differences
    if merge_configs(inspected, _comparable(stated)).argv_differences != before:
        return False
    return _unstated_at_defaults(inspected, names)


# Settings that only the CLI call sets (no image, no daemon default changes them): a
# container that has one the argv did not state was made by another call.
_ENGINE_DEFAULTS: dict[str, Callable[[Any], bool]] = {
    "privileged": lambda v: not v,
    "read_only_rootfs": lambda v: not v,
    "cap_add": lambda v: not v,
    "devices": lambda v: not v,
    "memory_bytes": lambda v: v is None,
    "pid_mode": lambda v: v in (None, ""),
    "network_mode": lambda v: v in (None, "", "default", "bridge"),
    "mounts": lambda v: not any(m.type == "bind" for m in v),  # an image has volumes only
}


def _unstated_at_defaults(inspected: ContainerConfig, stated: set[str]) -> bool:
    return all(
        at_default(getattr(inspected, name))
        for name, at_default in _ENGINE_DEFAULTS.items()
        if name not in stated
    )


_MODES = ("network_mode", "pid_mode", "ipc_mode", "uts_mode", "cgroupns_mode")


def _comparable(stated: ContainerConfig) -> ContainerConfig:
    """What the argv says in the Engine's terms, leaving out what the Engine resolves
    and the argv cannot say the same way: a relative bind source (the CLI makes it
    absolute from its working directory) and `container:NAME` (the Engine keeps the id).
    A call must not lose to one that states less only because of its spelling."""
    values = {name: getattr(stated, name) for name in stated.model_fields_set}
    if "mounts" in values:
        values["mounts"] = [_any_relative_source(m) for m in stated.mounts]
    for mode in _MODES:
        if str(values.get(mode) or "").startswith("container:"):
            del values[mode]
    return ContainerConfig(**values)  # only these are stated: merge_configs compares them


def _any_relative_source(mount: Mount) -> Mount:
    if mount.type != "bind" or mount.source.startswith("/"):
        return mount
    return mount.model_copy(update={"source": ""})  # an empty source matches any


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
