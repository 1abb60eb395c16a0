"""Reading one docker CLI call: its commands, effects, container names, image
references and compose project keys.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from listener.argv import DockerCall, normalize_image_ref
from listener.argvmatch import argv_agrees
from listener.correlate.effects import (
    BASE_EFFECTS,
    COMPOSE_AS,
    CONTAINER_TARGETS,
    RANK_HIGH,
    Candidate,
    CliCall,
    Effects,
)
from listener.model.containerconfig import ContainerConfig, merge_configs
from listener.model.event import Event, Who


def has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def remove_call(index: dict[str, list[CliCall]], key: str, cli: CliCall) -> None:
    calls = index.get(key)
    if calls is None:
        return
    try:
        calls.remove(cli)
    except ValueError:
        return
    if not calls:
        del index[key]


def is_hex(text: str) -> bool:
    return 1 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


def login_name(who: Who) -> str:
    if who.login:
        return who.login
    return f"auid {who.auid}" if who.auid is not None else "unset"


def _commands_of(call: DockerCall) -> list[str]:
    if call.compose is not None:
        return list(COMPOSE_AS.get(call.compose.subcommand, ()))
    return [call.command]


def effects_of_call(call: DockerCall) -> Effects:
    # The flags that change what a command causes; the rest do not matter here.
    flags = tuple(call.flag(f) for f in ("rm", "force", "volumes", "attach"))
    return _effects_of(tuple(_commands_of(call)), call.command, flags)


@functools.lru_cache(maxsize=512)
def _effects_of(commands: tuple[str, ...], command: str, flags: tuple[bool, ...]) -> Effects:
    """Effects of a command with those flags (a few dozen combinations: cached; bounded,
    since anyone who may run the docker binary can make up any number of subcommands)."""
    removes, force, volumes, attach = flags
    merged: dict[str, set[str]] = {}
    for name in commands:
        for kind, actions in BASE_EFFECTS.get(name, {}).items():
            merged.setdefault(kind, set()).update(actions)
    container = merged.setdefault("container", set())
    if command == "run" and removes:
        container.add("destroy")
    if command == "rm" and force:
        container.update(("kill", "die"))
        merged.setdefault("network", set()).add("disconnect")
        merged.setdefault("volume", set()).add("unmount")
    if command == "rm" and volumes:
        merged.setdefault("volume", set()).add("destroy")
    if command == "start" and attach:
        container.update(("attach", "die"))
    return {k: frozenset(v) for k, v in merged.items()}


def cli_causes(cli: CliCall, event: Event) -> bool:
    return event.action in cli.effects.get(event.type, ())


def container_names(call: DockerCall) -> list[str]:
    command, args = call.command, call.args
    if command in ("run", "create"):
        return [call.name.lstrip("/")] if call.name else []
    if command == "exec":
        return list(args[:1])
    if command == "rename":
        return list(args[:2])
    if command == "commit":
        return list(args[:1])
    if command in ("cp",):
        return [a.split(":", 1)[0] for a in args if _is_container_path(a)]
    if command in CONTAINER_TARGETS:
        return list(args)
    if command in ("network connect", "network disconnect"):
        return list(args[1:2])
    return []


def _is_container_path(arg: str) -> bool:
    head, colon, _ = arg.partition(":")
    return bool(colon and head and not head.startswith(("/", ".", "~")))


def image_refs(call: DockerCall) -> list[str]:
    command, args = call.command, call.args
    if command in ("run", "create", "pull", "push"):
        return list(args[:1])
    if command == "tag":
        return list(args[1:2])
    if command == "import":
        return list(args[1:2])
    if command in ("rmi", "save"):
        return [a for a in args if not is_hex(a)]
    if command == "commit":
        return list(args[1:2])
    if command == "build":
        return list(call.options.get("tag", ()))
    return []


def object_names(call: DockerCall) -> list[str]:
    command, args = call.command, call.args
    if command in ("network create", "volume create"):
        given = call.opt("name")
        return [given] if given else list(args[:1])
    if command in ("network rm", "volume rm"):
        return list(args)
    if command in ("network connect", "network disconnect"):
        return list(args[:1])
    return []


def hex_image_args(call: DockerCall) -> list[str]:
    return [a for a in call.args if is_hex(a)] if call.command in ("rmi", "save") else []


def project_keys(event: Event) -> Iterator[tuple[str, str, int]]:
    labels = event.attributes.get("labels")
    if isinstance(labels, dict):
        project = labels.get("com.docker.compose.project")
        if isinstance(project, str) and project:
            yield f"project:{project}", "compose-project", RANK_HIGH


def project_prefixes(name: str) -> Iterable[str]:
    """Compose names networks and volumes PROJECT_NAME: every split at `_` is a guess."""
    parts = name.split("_")
    return ("_".join(parts[:i]) for i in range(1, len(parts)))


def agreeing(event: Event, top: list[Candidate]) -> list[Candidate]:
    """Of equal candidates for a container's create, those whose argv agrees with what
    was created (a refused call made nothing); for an exec, those whose command is the
    exec's; all of them when none or all agree."""
    if len(top) < 2 or event.type != "container":
        return top
    if event.action in ("exec_create", "exec_start"):
        command = event.attributes.get("action_detail")
        agree = [c for c in top if " ".join(c.call.call.args[1:]) == command]
        return agree or top
    if event.action != "create":
        return top
    agree = [c for c in top if argv_agrees(c.call.call, event.config, event.launch)]
    return agree or top


def merged_config(current: dict[str, object], argv_config: ContainerConfig) -> dict[str, object]:
    if current.get("origin") == "inspect":
        inspect = ContainerConfig.model_validate(current)
        return merge_configs(inspect, argv_config).as_event_config()
    return argv_config.as_event_config()


# Distinct calls whose derived data is kept (a few hundred bytes each); cleared when full.
DERIVED_CAP = 1024


class DerivedCall(NamedTuple):
    """What the correlator derives from a call's parsed argv alone."""

    call: DockerCall
    names: frozenset[str]
    refs: frozenset[str]
    objects: frozenset[str]
    effects: Effects
    window_ns: int
    keys: tuple[str, ...]  # index keys (call_keys)
    hex_target: bool  # names a container or image by id


def call_keys(
    call: DockerCall, names: frozenset[str], refs: frozenset[str], objects: frozenset[str]
) -> Iterator[str]:
    for name in names:
        yield f"name:{name}"
    if call.command in ("run", "create") and not call.name:
        for ref in refs:
            yield f"run-image:{ref}"
    for ref in refs:
        yield f"ref:{ref}"
    kind = "volume" if call.command.startswith("volume") else "network"
    for name in objects:
        yield f"{kind}:{name}"
    if call.compose is not None and call.compose.project:
        yield f"project:{call.compose.project}"


def derive_call(call: DockerCall, window_ns: int) -> DerivedCall:
    names = frozenset(container_names(call))
    refs = frozenset(normalize_image_ref(r) for r in image_refs(call))
    objects = frozenset(object_names(call))
    hex_target = any(is_hex(n) for n in names) or bool(hex_image_args(call))
    keys = tuple(call_keys(call, names, refs, objects))
    effects = effects_of_call(call)
    return DerivedCall(call, names, refs, objects, effects, window_ns, keys, hex_target)
