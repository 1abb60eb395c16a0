"""What the Engine's inspect data says: a container's `Event.config`, an image's ids.

`container_config_from_inspect` turns `docker inspect` of a container into
the `ContainerConfig` that the live source (`docker_live`) stores in
`event.config` of each inspected container `create`/`start`: its security
settings (privileges, capabilities, mounts, namespaces, seccomp, AppArmor and
SELinux options, limits, devices, ports, …). A seccomp profile given as JSON
is kept as a digest. `_image_attributes` is what an image event records of
the image: its id, tags and digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from listener.model.containerconfig import ContainerConfig, Mount
from listener.model.event import Launch


def container_config_from_inspect(
    inspect: Mapping[str, Any], image_repo_digests: Iterable[str] = ()
) -> ContainerConfig:
    """`Event.config` of a container from its `docker inspect` object."""
    host_config: Mapping[str, Any] = inspect.get("HostConfig") or {}
    config: Mapping[str, Any] = inspect.get("Config") or {}
    security_opt = _security_opts(host_config.get("SecurityOpt"))
    parsed = _parse_security_opts(security_opt)
    if parsed.apparmor is None and inspect.get("AppArmorProfile"):
        parsed.apparmor = str(inspect["AppArmorProfile"])
    return ContainerConfig(
        origin="inspect",
        image=config.get("Image") or None,
        image_digest=inspect.get("Image") or None,
        image_repo_digests=list(image_repo_digests),
        privileged=bool(host_config.get("Privileged")),
        cap_add=_capabilities(host_config.get("CapAdd")),
        cap_drop=_capabilities(host_config.get("CapDrop")),
        mounts=_mounts(inspect.get("Mounts"), host_config.get("Tmpfs")),
        network_mode=host_config.get("NetworkMode") or None,
        pid_mode=host_config.get("PidMode") or None,
        ipc_mode=host_config.get("IpcMode") or None,
        uts_mode=host_config.get("UTSMode") or None,
        userns_mode=host_config.get("UsernsMode") or None,
        cgroupns_mode=host_config.get("CgroupnsMode") or None,
        security_opt=security_opt,
        seccomp=parsed.seccomp,
        apparmor=parsed.apparmor,
        selinux_disabled=parsed.selinux_disabled,
        no_new_privileges=parsed.no_new_privileges,
        user=config.get("User") or None,
        read_only_rootfs=bool(host_config.get("ReadonlyRootfs")),
        memory_bytes=_positive(host_config.get("Memory")),
        pids_limit=_positive(host_config.get("PidsLimit")),
        nano_cpus=_positive(host_config.get("NanoCpus")),
        cpu_shares=_positive(host_config.get("CpuShares")),
        devices=_devices(host_config.get("Devices")),
        restart_policy=_restart_policy(host_config.get("RestartPolicy")),
        labels=dict(config.get("Labels") or {}),
        ports=_ports(host_config.get("PortBindings")),
        publish_all_ports=bool(host_config.get("PublishAllPorts")),
        group_add=[str(group) for group in host_config.get("GroupAdd") or []],
        sysctls={str(k): str(v) for k, v in (host_config.get("Sysctls") or {}).items()},
        runtime=host_config.get("Runtime") or None,
        cgroup_parent=host_config.get("CgroupParent") or None,
        oom_kill_disable=bool(host_config.get("OomKillDisable")),
        healthcheck=_healthcheck(config.get("Healthcheck")),
    )


def container_launch(
    inspect: Mapping[str, Any], image: tuple[tuple[str, ...], tuple[str, ...]] | None = None
) -> Launch:
    """What the container runs (`Config.Entrypoint`, `Config.Cmd`), and its image's own
    (entrypoint, command) when known: for attribution, never stored."""
    config: Mapping[str, Any] = inspect.get("Config") or {}
    return Launch(
        entrypoint=words(config.get("Entrypoint")),
        command=words(config.get("Cmd")),
        image_entrypoint=image[0] if image is not None else None,
        image_command=image[1] if image is not None else None,
    )


def words(raw: object) -> tuple[str, ...]:
    """An Engine string list (`Cmd`, `Entrypoint`): a list, a lone string, or null."""
    if isinstance(raw, str):
        return (raw,)
    return tuple(str(word) for word in raw) if isinstance(raw, list) else ()


def _healthcheck(raw: object) -> str | None:
    """The health check's command line as its exec_start event shows it (moby health.go)."""
    test = raw.get("Test") if isinstance(raw, dict) else None
    if not isinstance(test, list) or not test or test[0] not in ("CMD", "CMD-SHELL"):
        return None
    args = [str(a) for a in test[1:]]
    if test[0] == "CMD-SHELL":
        args = ["/bin/sh", "-c", " ".join(args)]
    return " ".join(args) or None


@dataclass(slots=True)
class _SecurityOpts:
    seccomp: str | None = None
    apparmor: str | None = None
    selinux_disabled: bool = False
    no_new_privileges: bool = False


def _security_opts(raw: object) -> list[str]:
    """`SecurityOpt` as given, but a seccomp profile (the CLI sends the file's JSON) as a digest."""
    opts = []
    for opt in raw if isinstance(raw, list) else []:
        key, value = _split_security_opt(str(opt))
        if key == "seccomp" and value.lstrip().startswith("{"):
            opt = f"seccomp=<profile sha256:{hashlib.sha256(value.encode()).hexdigest()[:16]}>"
        opts.append(str(opt))
    return opts


def _split_security_opt(opt: str) -> tuple[str, str]:
    # `key=value`, or the old `key:value` syntax (`seccomp:unconfined`) the Engine still takes.
    equals, colon = opt.find("="), opt.find(":")
    cut = min(i for i in (equals, colon, len(opt)) if i >= 0)
    return opt[:cut].strip(), opt[cut + 1 :].strip()


def _parse_security_opts(opts: list[str]) -> _SecurityOpts:
    parsed = _SecurityOpts()
    for opt in opts:
        key, value = _split_security_opt(opt)
        if key == "seccomp":
            parsed.seccomp = "custom" if value.startswith("<profile") else value
        elif key == "apparmor":
            parsed.apparmor = value
        elif key == "label" and value == "disable":
            parsed.selinux_disabled = True
        elif key == "no-new-privileges":
            parsed.no_new_privileges = value.lower() in ("", "true", "1")
    return parsed


def _capabilities(raw: object) -> list[str]:
    caps = raw if isinstance(raw, list) else []
    return [str(cap).upper().removeprefix("CAP_") for cap in caps]


def _mounts(raw: object, tmpfs: object) -> list[Mount]:
    mounts = []
    for item in raw if isinstance(raw, list) else []:
        type_ = str(item.get("Type") or "bind")
        source = item.get("Name") if type_ == "volume" else item.get("Source")
        mounts.append(
            Mount(
                type=type_,
                source=str(source or ""),
                destination=str(item.get("Destination") or ""),
                read_only=not item.get("RW", True),
                mode=str(item.get("Mode") or ""),
                propagation=str(item.get("Propagation") or ""),
            )
        )
    # `--tmpfs` mounts are only in HostConfig.Tmpfs, not in Mounts.
    for destination, options in (tmpfs if isinstance(tmpfs, dict) else {}).items():
        flags = str(options or "").split(",")
        mounts.append(
            Mount(type="tmpfs", destination=destination, read_only="ro" in flags, mode=options)
        )
    return mounts


def _positive(value: object) -> int | None:
    """Limits: 0, -1 and None all mean unlimited."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _devices(raw: object) -> list[str]:
    devices = []
    for item in raw if isinstance(raw, list) else []:
        perms = item.get("CgroupPermissions") or ""
        devices.append(f"{item.get('PathOnHost', '')}:{item.get('PathInContainer', '')}:{perms}")
    return devices


def _restart_policy(raw: object) -> str | None:
    if not isinstance(raw, dict):
        return None
    name = raw.get("Name") or "no"
    retries = raw.get("MaximumRetryCount") or 0
    return f"{name}:{retries}" if name == "on-failure" and retries else str(name)


def _ports(raw: object) -> list[str]:
    ports = []
    for port, bindings in sorted((raw if isinstance(raw, dict) else {}).items()):
        for binding in bindings or []:
            host_ip = binding.get("HostIp") or "0.0.0.0"
            ports.append(f"{host_ip}:{binding.get('HostPort') or ''}->{port}")
    return ports


def _image_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "image_id": str(data.get("Id") or ""),
        "repo_tags": list(data.get("RepoTags") or []),
        "repo_digests": list(data.get("RepoDigests") or []),
    }


def exec_config_from_inspect(data: Mapping[str, Any]) -> dict[str, Any]:
    """`Event.config` of an exec from `GET /exec/{id}/json`, in the shape argv gives.

    `user` stays None when the exec names none: it runs as the container's user.
    """
    process: Mapping[str, Any] = data.get("ProcessConfig") or {}
    entrypoint = process.get("entrypoint")
    arguments = process.get("arguments") or []
    command = [str(entrypoint)] if entrypoint else []
    command += [str(a) for a in arguments if isinstance(a, str)]
    return {
        "origin": "inspect",
        "kind": "exec",
        "user": str(process.get("user") or "") or None,
        "privileged": bool(process.get("privileged")),
        "interactive": bool(data.get("OpenStdin")),
        "tty": bool(process.get("tty")),
        "detach": False,
        "workdir": None,
        "command": command,
    }
