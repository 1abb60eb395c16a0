"""A new container's configuration from the Engine's own files, without waiting for it.

dockerd writes `config.v2.json` and `hostconfig.json` under
`<DockerRootDir>/containers/<id>/` (atomically: a temporary file renamed)
before it sends the container's `create` event. An inspect of the same
container waits for the container's lock, which a `start` in progress holds
until the start is done (`docker run` starts at once: about 100 ms here, seconds
on a loaded host), so the create, and every later event of its container, would
wait as long. These files hold the same `Config` and `HostConfig` that inspect
returns (checked against a real dockerd in tests/test_docker_files.py); the
inspect-shaped object built from them goes through the same code as an inspect.

They are used only when they can be trusted as much as the Engine itself:
the Engine is on this host (a unix socket), the container id is a plain id
(never a path), and the directories and files belong to root (or to the user
docktrail and a rootless dockerd run as) and are not writable by anyone else.
Anything else, or a file that does not read as expected, falls back to inspect.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
_MAX_FILE_BYTES = 4 << 20  # a container's config is kilobytes; a bigger file is not one
_LOCAL_PREFIXES = ("unix://", "/")


class EngineFiles:
    """Reads created containers' configurations under one Engine data root."""

    def __init__(self, data_root: Path) -> None:
        self.containers = data_root / "containers"

    @classmethod
    def for_engine(cls, engine_host: str, data_root: str) -> EngineFiles | None:
        """The files of an Engine on this host, or None when they cannot be used."""
        if not data_root or not engine_host.startswith(_LOCAL_PREFIXES):
            return None
        files = cls(Path(data_root))
        try:
            trusted = _trusted(files.containers, directory=True)
        except OSError:
            trusted = False
        if not trusted:
            log.info(
                "new containers are described by inspect only: the Engine's files under "
                f"{files.containers} are not readable here or not owned by root alone"
            )
            return None
        return files

    def created(self, container_id: str) -> dict[str, Any] | None:
        """The container as its inspect shows it (the parts docktrail reads), or None."""
        if not _CONTAINER_ID.fullmatch(container_id):
            return None
        folder = self.containers / container_id
        try:
            if not _trusted(folder, directory=True):
                return None
            saved = _read_json(folder / "config.v2.json")
            host_config = _read_json(folder / "hostconfig.json")
        except (OSError, ValueError):
            return None  # removed already, or not in the layout we know: inspect says
        return inspect_shaped(container_id, saved, host_config)


def inspect_shaped(container_id: str, saved: object, host_config: object) -> dict[str, Any] | None:
    """An inspect object from the two files' contents, or None when they are not the
    container's own (another id) or not in the layout we know."""
    if not isinstance(saved, dict) or not isinstance(host_config, dict):
        return None
    config = saved.get("Config")
    if saved.get("ID") != container_id or not isinstance(config, dict):
        return None
    points = saved.get("MountPoints") or {}
    if not isinstance(points, dict) or not all(isinstance(p, dict) for p in points.values()):
        return None
    return {
        "Id": container_id,
        "Name": saved.get("Name"),
        "Image": saved.get("Image"),
        "Config": config,
        "HostConfig": host_config,
        "Mounts": [_mount(point) for _, point in sorted(points.items())],
        "AppArmorProfile": saved.get("AppArmorProfile") or "",
    }


def _mount(point: Mapping[str, Any]) -> dict[str, Any]:
    """One of inspect's `Mounts` from a saved mount point (moby `addMountPoints`)."""
    return {
        "Type": point.get("Type"),
        "Name": point.get("Name") or "",
        "Source": point.get("Source") or "",
        "Destination": point.get("Destination") or "",
        "Driver": point.get("Driver") or "",
        "Mode": point.get("Relabel") or "",  # moby saves the mode under its old name
        "RW": bool(point.get("RW")),
        "Propagation": point.get("Propagation") or "",
    }


def _trusted(path: Path, *, directory: bool) -> bool:
    return _trusted_stat(path.lstat(), directory=directory)


def _trusted_stat(info: os.stat_result, *, directory: bool) -> bool:
    """Owned by root (or by us, for a rootless Engine) and writable by nobody else."""
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    return (
        kind(info.st_mode)
        and info.st_uid in (0, os.geteuid())
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


def _read_json(path: Path) -> object:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        if not _trusted_stat(os.fstat(file.fileno()), directory=False):
            raise ValueError(f"{path}: not owned by root alone")
        data = file.read(_MAX_FILE_BYTES + 1)
    if len(data) > _MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {_MAX_FILE_BYTES} bytes")
    return json.loads(data)
