"""What an inspect adds to an Engine event of the live source (`docker_live`): `Enrichment`.

Each container `create`/`start` gets its security settings in `event.config`
(`container_config_from_inspect`; `attributes.inspect = "gone"` when the
container was removed first; a container made from a bare image id also gets
the names of that image or of its nearest named ancestor, `image_references`,
and bind sources that are Unix sockets, `socket_sources`), each image event
its id, tags and digests, and each `exec_start` the exec's user, privilege,
terminal and command from `GET /exec/{id}/json` (`exec_config_from_inspect`).

`Inspector` makes those calls. Every one of its calls but `needed` blocks on
the Engine and runs on one of the source's worker threads, started as soon as
the event is read: a `--rm` job is gone soon. A new container's config is read
from the Engine's own files when they can be (`docker_files`), at once, since
dockerd answers its inspect only after any start in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from config.errors import InputError, SourceError
from listener import redact
from listener.bounds import bound_event
from listener.model.containerconfig import ContainerConfig
from listener.model.event import Event, Launch
from listener.sources.docker_engine import Engine
from listener.sources.docker_files import EngineFiles
from listener.sources.docker_inspect import (
    _image_attributes,
    container_config_from_inspect,
    container_launch,
    exec_config_from_inspect,
    words,
)

# The name the live source has always logged under (it was part of `docker`).
log = logging.getLogger("listener.sources.docker")

_IMAGE_RESOLVE_ACTIONS = frozenset({"pull", "push", "tag", "untag", "import", "load", "save"})
_EXEC_ACTIONS = frozenset({"exec_start"})  # what exec-in-container judges
_MAX_IMAGE_ANCESTRY = 128  # classic builds have a step per instruction


@dataclass(slots=True)
class Enrichment:
    """What an inspect adds to an event: `config`, and attributes (or why there is none)."""

    config: dict[str, Any] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    launch: Launch | None = None  # for attribution only, never stored

    def apply(self, event: Event) -> None:
        if self.config is not None:
            event.config = self.config
        if self.launch is not None:
            event.note_launch(self.launch)
        event.attributes.update(self.attributes)


def bound_enriched(event: Event) -> None:
    """What inspect added is Engine data too: redacted and bounded like the event.

    A value that cannot be stored drops the configuration, not the event.
    """
    redact.active().event(event)
    try:
        bound_event(event, surrogates="escape")
    except InputError as exc:
        log.warning(f"dropped the inspect data of {event.type} {event.action}: {exc}")
        event.config = {}
        event.attributes["inspect"] = "failed"
        event.attributes["inspect_error"] = str(exc)[:200]
        bound_event(event, surrogates="escape")  # the event itself was bounded already


def enrichment_result(future: asyncio.Future[Enrichment]) -> Enrichment:
    """The outcome of a finished inspect; a failure of ours must not lose the event."""
    if future.cancelled():
        return Enrichment(attributes={"inspect": "failed", "inspect_error": "cancelled"})
    error = future.exception()
    if error is not None:
        log.error("inspect failed", exc_info=error)
        return Enrichment(attributes={"inspect": "failed", "inspect_error": repr(error)})
    return future.result()


class Inspector:
    """The live source's inspect calls, each made on a worker thread, each to an `Enrichment`.

    `files` tells where new containers are read at once (the source's
    `EngineFiles`, known after it connects). The image data a container's
    config needs is kept for the next containers of the same image.
    """

    def __init__(self, engine: Engine, files: Callable[[], EngineFiles | None]) -> None:
        self.engine = engine
        self._files = files
        self._image_digests: dict[str, list[str]] = {}
        self._image_launch: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}

    def needed(self, event: Event) -> tuple[Callable[[str], Enrichment], str] | None:
        """The inspect an event needs and what it inspects; None when it needs none."""
        if event.type == "container" and event.action == "create":
            return self.describe_created, event.actor.id
        if event.type == "container" and event.action == "start":
            return self.inspect_container, event.actor.id
        if event.type == "image" and event.action in _IMAGE_RESOLVE_ACTIONS and event.actor.id:
            return self.resolve_image, event.actor.id
        exec_id = event.attributes.get("execID")
        if event.type == "container" and event.action in _EXEC_ACTIONS and exec_id:
            return self.inspect_exec, str(exec_id)
        return None

    def inspect_exec(self, exec_id: str) -> Enrichment:
        """Worker thread: who an exec runs as and how, from the Engine alone."""
        inspect = getattr(self.engine, "inspect_exec", None)
        if inspect is None:
            return Enrichment()
        try:
            data = inspect(exec_id)
        except SourceError as exc:
            return Enrichment(attributes={"inspect": "failed", "inspect_error": str(exc)})
        if data is None:
            return Enrichment(attributes={"inspect": "gone"})
        pid = data.get("Pid")  # the exec's first process on the host: its session's root
        attributes = {"exec_pid": pid} if isinstance(pid, int) and pid > 0 else {}
        return Enrichment(config=exec_config_from_inspect(data), attributes=attributes)

    def describe_created(self, container_id: str) -> Enrichment:
        """Worker thread: a new container's config from the Engine's files when they can
        be read (at once), else from its inspect (after any start in progress)."""
        files = self._files()
        data = files.created(container_id) if files is not None else None
        if data is None:
            return self.inspect_container(container_id)
        try:
            enrichment = self._enrichment(data)
        except SourceError:  # the image's inspect: the container's then says it all
            return self.inspect_container(container_id)
        enrichment.attributes["inspect"] = "engine-files"
        return enrichment

    def inspect_container(self, container_id: str) -> Enrichment:
        """Worker thread: the container's config, or why there is none."""
        return self.inspect_with_config(container_id)[1]

    def inspect_with_config(self, container_id: str) -> tuple[dict[str, Any] | None, Enrichment]:
        """Worker thread: inspect data (None when gone or failed) and what it adds to an event."""
        try:
            data = self.engine.inspect_container(container_id)
            if data is None:
                return None, Enrichment(attributes={"inspect": "gone"})
            return data, self._enrichment(data)
        except SourceError as exc:
            return None, Enrichment(attributes={"inspect": "failed", "inspect_error": str(exc)})

    def resolve_image(self, reference: str) -> Enrichment:
        """Worker thread: an image event's id, tags and digests."""
        try:
            data = self.engine.inspect_image(reference)
        except SourceError as exc:
            return Enrichment(attributes={"inspect": "failed", "inspect_error": str(exc)})
        if data is None:
            return Enrichment(attributes={"inspect": "gone"})
        return Enrichment(attributes=_image_attributes(data))

    def _enrichment(self, data: Mapping[str, Any]) -> Enrichment:
        """Worker thread: what a container's inspect data adds to its event."""
        digests = self._repo_digests(str(data.get("Image") or ""))
        config = container_config_from_inspect(data, digests)
        config.socket_sources = _socket_sources(config)
        if config.image and _is_image_id(config.image):
            with contextlib.suppress(SourceError):  # then judged by the id alone
                config.image_references, config.image_intermediate = self._image_names(config.image)
        launch = container_launch(data, self._image_launch.get(str(data.get("Image") or "")))
        return Enrichment(config=config.as_event_config(), launch=launch)

    def _image_names(self, image_id: str) -> tuple[list[str], bool]:
        """Worker thread: the tags and digests of an image given by id; for an unnamed
        classic build step, those of its nearest named ancestor (intermediate: True)."""
        current, steps = image_id, 0
        while current and steps < _MAX_IMAGE_ANCESTRY:
            data = self.engine.inspect_image(current) or {}
            names = [*(data.get("RepoTags") or []), *(data.get("RepoDigests") or [])]
            names = [str(n) for n in names if n and not str(n).startswith("<none>")]
            if names:
                return names, steps > 0
            current, steps = str(data.get("Parent") or ""), steps + 1
        return [], False

    def _repo_digests(self, image_id: str) -> list[str]:
        if not image_id:
            return []
        if image_id not in self._image_digests:
            data = self.engine.inspect_image(image_id)
            if len(self._image_digests) > 1024:
                self._image_digests.clear()
                self._image_launch.clear()
            self._image_digests[image_id] = list((data or {}).get("RepoDigests") or [])
            if data is not None:
                image_config = data.get("Config") or {}
                self._image_launch[image_id] = (
                    words(image_config.get("Entrypoint")),
                    words(image_config.get("Cmd")),
                )
        return self._image_digests[image_id]


def _is_image_id(reference: str) -> bool:
    bare = reference.removeprefix("sha256:")
    return reference.startswith("sha256:") or (
        len(bare) == 64 and all(c in "0123456789abcdef" for c in bare)
    )


def _socket_sources(config: ContainerConfig) -> list[str]:
    """Bind sources that are Unix sockets on this host (any name: an Engine's socket)."""
    found = []
    for mount in config.mounts:
        if mount.type != "bind" or not mount.source.startswith("/"):
            continue
        try:
            if stat.S_ISSOCK(os.stat(mount.source).st_mode):
                found.append(mount.source)
        except OSError:
            continue  # gone, or not visible from here: judged by its path
    return found
