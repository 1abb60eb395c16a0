"""The security-relevant configuration of a container: `Event.config`.

Two producers fill it — `docker inspect` (live, the truth) and the docker CLI
argv seen by auditd (offline, when only the audit log is at hand) — and the
rules read it. This model is the contract between them: one shape whatever
the origin, with `origin` saying which. When both exist, inspect wins and the
fields where argv said otherwise are kept in `argv_differences`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from listener.model.imageref import normalize_image_ref


class Mount(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field("bind", description="bind, volume, tmpfs, npipe.")
    source: str = Field("", description="Host path or volume name.")
    destination: str = Field(description="Path inside the container.")
    read_only: bool = Field(False, description="Mounted read-only.")
    mode: str = Field("", description="Mode string as given (ro, rw, z, Z…).")
    propagation: str = Field("", description="Bind propagation (rprivate, shared…).")


class ContainerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    origin: Literal["inspect", "argv"] = Field(description="Where these settings come from.")
    image: str | None = Field(None, description="Image reference the container was created from.")
    image_digest: str | None = Field(None, description="Image id or repo digest (inspect).")
    privileged: bool = Field(False, description="--privileged.")
    cap_add: list[str] = Field(default_factory=list, description="Added capabilities, no CAP_.")
    cap_drop: list[str] = Field(default_factory=list, description="Dropped capabilities.")
    mounts: list[Mount] = Field(default_factory=list, description="Binds, volumes, tmpfs.")
    network_mode: str | None = Field(None, description="--network (host, none, bridge, …).")
    pid_mode: str | None = Field(None, description="--pid (host, container:ID).")
    ipc_mode: str | None = Field(None, description="--ipc.")
    uts_mode: str | None = Field(None, description="--uts.")
    userns_mode: str | None = Field(None, description="--userns.")
    cgroupns_mode: str | None = Field(None, description="--cgroupns.")
    security_opt: list[str] = Field(default_factory=list, description="--security-opt as given.")
    seccomp: str | None = Field(None, description="Seccomp profile; 'unconfined' when disabled.")
    apparmor: str | None = Field(None, description="AppArmor profile; 'unconfined' when off.")
    selinux_disabled: bool = Field(False, description="label=disable.")
    no_new_privileges: bool = Field(False, description="no-new-privileges set.")
    user: str | None = Field(None, description="--user; None or '' means root.")
    read_only_rootfs: bool = Field(False, description="--read-only.")
    memory_bytes: int | None = Field(None, description="--memory; None when unlimited.")
    pids_limit: int | None = Field(None, description="--pids-limit; None when unlimited.")
    nano_cpus: int | None = Field(None, description="--cpus in units of 1e-9 CPUs.")
    cpu_shares: int | None = Field(None, description="--cpu-shares.")
    devices: list[str] = Field(default_factory=list, description="--device host:container:perm.")
    restart_policy: str | None = Field(None, description="--restart name[:max].")
    labels: dict[str, str] = Field(default_factory=dict, description="Container labels.")
    image_repo_digests: list[str] = Field(
        default_factory=list, description="repo@sha256:… digests of the image (inspect)."
    )
    image_references: list[str] = Field(
        default_factory=list,
        description="Created from a bare image id: the image's tags and digests, or those of "
        "its nearest named ancestor for a classic build's step (inspect).",
    )
    healthcheck: str | None = Field(
        None,
        description="The command line of the container's health check, as the Engine's "
        "exec_start events show it (inspect).",
    )
    socket_sources: list[str] = Field(
        default_factory=list,
        description="Host sources of bind mounts that are Unix sockets (stat at inspect).",
    )
    image_intermediate: bool = Field(
        False, description="The image is an unnamed build step of a named ancestor (inspect)."
    )
    ports: list[str] = Field(
        default_factory=list,
        description="Published ports as host_ip:host_port->port/proto (-p; CIS 5.7, 5.14).",
    )
    publish_all_ports: bool = Field(False, description="-P: every exposed port published.")
    group_add: list[str] = Field(default_factory=list, description="--group-add groups.")
    sysctls: dict[str, str] = Field(default_factory=dict, description="--sysctl settings.")
    runtime: str | None = Field(None, description="--runtime (runc, …).")
    cgroup_parent: str | None = Field(None, description="--cgroup-parent (CIS 5.24).")
    oom_kill_disable: bool = Field(False, description="--oom-kill-disable.")
    argv_differences: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings where the CLI argv disagreed with inspect: {field: argv value}.",
    )

    def as_event_config(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- merge

# Filled by inspect only, or bookkeeping: never compared.
_NOT_COMPARED = frozenset(
    {
        "origin",
        "image_digest",
        "argv_differences",
        "image_references",
        "image_intermediate",
        "socket_sources",
        "healthcheck",
    }
)


def merge_configs(inspect: ContainerConfig, argv: ContainerConfig) -> ContainerConfig:
    """Inspect wins; the settings argv stated differently go to `argv_differences`.

    Only the fields argv set explicitly (`model_fields_set`: the flags given)
    are compared, each in a normal form (image references resolved, capability
    names without CAP_, mounts by type/source/destination/read-only, labels as
    a subset, `default` network as `bridge`), so that the daemon's defaults and
    spellings are not reported as differences.
    """
    differences = dict(inspect.argv_differences)
    for name in sorted(argv.model_fields_set - _NOT_COMPARED):
        argv_value = getattr(argv, name)
        if not _same(name, getattr(inspect, name), argv_value):
            differences[name] = _jsonable(argv_value)
    return inspect.model_copy(update={"argv_differences": differences})


def _same(name: str, inspected: Any, stated: Any) -> bool:
    normal = _NORMAL_FORMS.get(name)
    if normal is not None:
        return bool(normal(inspected, stated))
    return bool(inspected == stated)


def _image(inspected: str | None, stated: str | None) -> bool:
    if inspected is None or stated is None:
        return inspected == stated
    return normalize_image_ref(inspected) == normalize_image_ref(stated)


def _caps(inspected: list[str], stated: list[str]) -> bool:
    def norm(caps: list[str]) -> set[str]:
        return {c.upper().removeprefix("CAP_") for c in caps}

    return norm(inspected) == norm(stated)


def _mounts(inspected: list[Mount], stated: list[Mount]) -> bool:
    """Every mount argv asked for is there; an anonymous volume matches by destination."""
    return all(any(_mount_matches(have, want) for have in inspected) for want in stated)


def _mount_matches(have: Mount, want: Mount) -> bool:
    if (have.type, have.destination, have.read_only) != (
        want.type,
        want.destination,
        want.read_only,
    ):
        return False
    return not want.source or have.source.rstrip("/") == want.source.rstrip("/")


def _labels(inspected: dict[str, str], stated: dict[str, str]) -> bool:
    # inspect also lists the image's labels: argv's must be a subset.
    return all(inspected.get(k) == v for k, v in stated.items())


def _network(inspected: str | None, stated: str | None) -> bool:
    def norm(mode: str | None) -> str:
        return "bridge" if mode in (None, "", "default") else mode

    return norm(inspected) == norm(stated)


def _user(inspected: str | None, stated: str | None) -> bool:
    return (inspected or "") == (stated or "")


def _restart(inspected: str | None, stated: str | None) -> bool:
    def norm(policy: str | None) -> str:
        name, _, count = (policy or "no").partition(":")
        return name if count in ("", "0") else f"{name}:{count}"

    return norm(inspected) == norm(stated)


def _as_set(inspected: list[str], stated: list[str]) -> bool:
    return set(inspected) == set(stated)


def _security_opts(inspected: list[str], stated: list[str]) -> bool:
    # The CLI replaces seccomp=PROFILE-FILE with the file's JSON; the old `key:value`
    # form is stored as `key=value`. Compare what both sides can state alike.
    def norm(options: list[str]) -> set[str]:
        out = set()
        for option in options:
            key, eq, value = option.partition("=")
            if not eq and ":" in option:
                key, _, value = option.partition(":")
            if key == "seccomp" and value != "unconfined":
                value = "profile"
            out.add(f"{key}={value}" if value else key)
        return out

    return norm(inspected) == norm(stated)


def _seccomp(inspected: str | None, stated: str | None) -> bool:
    if stated not in (None, "unconfined") and inspected not in (None, "unconfined"):
        return True  # a profile file on one side, its JSON on the other
    return inspected == stated


def _devices(inspected: list[str], stated: list[str]) -> bool:
    def norm(devices: list[str]) -> set[str]:
        out = set()
        for device in devices:
            parts = device.split(":")
            host = parts[0]
            inside = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host
            perms = parts[-1] if len(parts) > 1 and not parts[-1].startswith("/") else "rwm"
            out.add(f"{host}:{inside}:{perms}")
        return out

    return norm(inspected) == norm(stated)


_NORMAL_FORMS: dict[str, Callable[[Any, Any], bool]] = {
    "image": _image,
    "cap_add": _caps,
    "cap_drop": _caps,
    "mounts": _mounts,
    "labels": _labels,
    "network_mode": _network,
    "user": _user,
    "restart_policy": _restart,
    "security_opt": _security_opts,
    "seccomp": _seccomp,
    "devices": _devices,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
