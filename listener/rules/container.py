"""Rules over a container's security configuration (`Event.config`).

They judge container `create` events (config from inspect or from the CLI
argv) and posture observations of running containers, CIS Docker Benchmark
section 5.
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Iterator, Mapping
from typing import Any

from listener.model.catalogue import (
    CONFIG_ACTIONS,
    DANGEROUS_CAPABILITY,
    HOST_NAMESPACE,
    NO_LIMITS,
    PRIVILEGED,
    RUNS_AS_ROOT,
    SECURITY_PROFILE,
    SENSITIVE_MOUNT,
    SOCKET_MOUNT,
    WRITABLE_ROOTFS,
)
from listener.model.event import Event
from listener.rules.base import Finding, RuleContext, finding

SOCKET_NAMES = ("docker.sock", "containerd.sock")
SENSITIVE_PATHS = frozenset(
    {"/", "/etc", "/proc", "/sys", "/boot", "/dev", "/lib", "/usr", "/root", "/var/lib/docker"}
)
DANGEROUS_CAPS = frozenset(
    {"SYS_ADMIN", "SYS_MODULE", "SYS_PTRACE", "SYS_RAWIO", "NET_ADMIN", "DAC_READ_SEARCH", "BPF",
     "SYS_BOOT", "ALL", "NET_RAW", "SYS_TIME", "MAC_ADMIN", "MAC_OVERRIDE", "PERFMON",
     "DAC_OVERRIDE", "SETFCAP", "LINUX_IMMUTABLE", "SYSLOG"}
)  # fmt: skip
NAMESPACES = ("network", "pid", "ipc", "uts", "userns")
_NAMESPACE_KEYS = tuple((ns, f"{ns}_mode") for ns in NAMESPACES)
# Paths up to this long are remembered (`_normpath`, `_remembered_reasons`): a host
# mounts the same few again and again; a made-up long one is only worked out.
CACHED_TEXT_MAX = 1_024
_CACHED_ITEMS = 2_048


def config_of(event: Event) -> Mapping[str, Any] | None:
    """The container configuration this event judges, or None."""
    if event.type != "container" or event.action not in CONFIG_ACTIONS or not event.config:
        return None
    return event.config


def check_privileged(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event)
    if config and config.get("privileged"):
        yield finding(PRIVILEGED, event, f"privileged container {_name(event)}")


def check_socket_mount(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event) or {}
    sources = config.get("socket_sources")
    sockets = {_normal(s) for s in sources} if sources else set()
    engines = _engine_paths(ctx.engine_sockets)
    for mount in _mounts(event):
        why = _socket_reason(mount, sockets, engines)
        if why is not None:
            yield finding(
                SOCKET_MOUNT,
                event,
                f"{mount.get('source') or '?'} mounted into {_name(event)} at "
                f"{mount.get('destination') or '?'} ({why})",
                mount=mount,
                mounts=[_mount_subject(mount)],
                matched=why,
            )


def check_sensitive_mount(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    for mount in _mounts(event):
        source = _normal(mount.get("source", ""))
        if mount.get("type", "bind") == "bind" and _is_sensitive(source):
            yield finding(
                SENSITIVE_MOUNT,
                event,
                f"host {source} mounted into {_name(event)}",
                mount=mount,
                mounts=[_mount_subject(mount)],
            )


def _socket_reason(
    mount: Mapping[str, Any], sockets: set[str], engines: frozenset[str]
) -> str | None:
    """Why this mount hands an Engine's socket (`engines`: their host paths) to the
    container, or None."""
    if mount.get("type", "bind") != "bind":
        return None
    source = _normal(str(mount.get("source") or ""))
    destination = _normal(str(mount.get("destination") or ""))
    long = len(source) + len(destination) > CACHED_TEXT_MAX
    before, after = (_path_reasons if long else _remembered_reasons)(source, destination, engines)
    if before is not None:
        return before
    return "a Unix socket" if source in sockets else after


def _path_reasons(
    source: str, destination: str, engines: frozenset[str]
) -> tuple[str | None, str | None]:
    """`_socket_reason`'s answers that depend on the paths alone, those it gives before
    and after asking the container's own sockets (which differ per container)."""
    if _host_path(source) in engines:
        return "the Engine's socket", None
    if posixpath.basename(source) in SOCKET_NAMES:
        return "a Docker or containerd socket", None
    # "/" holds everything: it alerts as sensitive-mount, not as one more socket alert.
    if source not in ("", "/") and any(_contains(_host_path(source), s) for s in engines):
        return None, "a directory holding the Engine's socket"
    if posixpath.basename(destination) in SOCKET_NAMES:
        return None, "mounted where clients look for the Docker socket"
    return None, None


_remembered_reasons = functools.lru_cache(maxsize=_CACHED_ITEMS)(_path_reasons)


def _engine_paths(sockets: tuple[str, ...]) -> frozenset[str]:
    """The host paths of the Engines' sockets (the context's, the same all along)."""
    if type(sockets) is tuple:
        return _engine_paths_of(sockets)
    return frozenset(_host_path(s) for s in sockets)


@functools.lru_cache(maxsize=16)
def _engine_paths_of(sockets: tuple[str, ...]) -> frozenset[str]:
    return frozenset(_host_path(s) for s in sockets)


def _host_path(path: str) -> str:
    """/var/run is a symlink to /run on every current distribution."""
    if path == "/var/run" or path.startswith("/var/run/"):
        return "/run" + path[len("/var/run") :]
    return path


def _contains(directory: str, path: str) -> bool:
    return path.startswith(directory.rstrip("/") + "/")


def _mount_subject(mount: Mapping[str, Any]) -> str:
    """The mount as the channel names it (and dedups on): source:destination."""
    return f"{mount.get('source') or ''}:{mount.get('destination') or ''}"


def check_dangerous_capability(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event)
    if not config:
        return
    caps = config.get("cap_add")
    if not caps:  # most containers: no set to build
        return
    added = sorted({_cap(c) for c in caps} & DANGEROUS_CAPS)
    if added:
        yield finding(
            DANGEROUS_CAPABILITY,
            event,
            f"{_name(event)} adds {', '.join(added)}",
            capabilities=added,
        )


def check_host_namespace(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event)
    if not config:
        return
    shared = [ns for ns, key in _NAMESPACE_KEYS if config.get(key) == "host"]
    if shared:
        yield finding(
            HOST_NAMESPACE,
            event,
            f"{_name(event)} shares the host's {', '.join(shared)} namespace",
            namespaces=shared,
        )


def check_security_profile(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event)
    if not config:
        return
    disabled = [
        name
        for name, off in (
            ("seccomp", config.get("seccomp") == "unconfined"),
            ("apparmor", config.get("apparmor") == "unconfined"),
            ("selinux", bool(config.get("selinux_disabled")) and not _engine_unlabels(config)),
        )
        if off
    ]
    if disabled:
        yield finding(
            SECURITY_PROFILE,
            event,
            f"{_name(event)} runs without {', '.join(disabled)}",
            disabled=disabled,
        )


def check_no_limits(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event)
    if not config:
        return
    missing = [
        limit
        for limit, key in (("memory", "memory_bytes"), ("pids", "pids_limit"))
        if not config.get(key)
    ]
    if missing:
        yield finding(
            NO_LIMITS, event, f"{_name(event)} has no {' or '.join(missing)} limit", missing=missing
        )


def check_writable_rootfs(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event)
    if config and not config.get("read_only_rootfs"):
        yield finding(WRITABLE_ROOTFS, event, f"{_name(event)} has a writable root file system")


def check_runs_as_root(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    config = config_of(event)
    if config and is_root_user(config.get("user")):
        yield finding(RUNS_AS_ROOT, event, f"{_name(event)} runs as root", user=config.get("user"))


def _engine_unlabels(config: Mapping[str, Any]) -> bool:
    """Whether the Engine itself set label=disable (moby's generateSecurityOpt).

    dockerd adds it to every --privileged, --pid host or --ipc host container
    that names no label option, so inspect shows it although nobody asked for
    it; those containers already alert under their own rules.
    """
    host_ns = "host" in (config.get("pid_mode"), config.get("ipc_mode"))
    return bool(config.get("privileged")) or host_ns


def is_root_user(user: str | None) -> bool:
    name = (user or "").partition(":")[0]
    return name in ("", "0", "root")


def _mounts(event: Event) -> list[dict[str, Any]]:
    config = config_of(event)
    return list(config.get("mounts") or []) if config else []


def _name(event: Event) -> str:
    return event.actor.name or event.actor.id[:12] or "container"


def _cap(name: str) -> str:
    return name.upper().removeprefix("CAP_")


def _base(path: str) -> str:
    return posixpath.basename(_normal(path))


def _normal(path: str) -> str:
    if type(path) is str and len(path) <= CACHED_TEXT_MAX:
        return _normpath(path) if path else ""
    return posixpath.normpath(path) if path else ""  # odd values fail here as they always did


_normpath = functools.lru_cache(maxsize=_CACHED_ITEMS)(posixpath.normpath)


def _is_sensitive(source: str) -> bool:
    if source in SENSITIVE_PATHS:
        return True
    return source.startswith("/var/lib/docker/") or source.startswith(("/proc/", "/sys/"))
