"""What a call asks for: the container configuration of run/create and the options
of exec.
"""

from __future__ import annotations

import contextlib
import csv
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from listener.argv.calls import DockerCall
from listener.argv.specs import as_bool
from listener.model.containerconfig import ContainerConfig, Mount

# --------------------------------------------------------------------------- config


_MEMORY = re.compile(r"^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory(text: str) -> int | None:
    """docker's RAMInBytes: `64m` -> 67108864 (binary units, `b`/`ib` suffix allowed)."""
    match = _MEMORY.match(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    return int(Decimal(number) * _UNITS[(unit or "").lower()])


def container_config(call: DockerCall) -> ContainerConfig | None:
    """The ContainerConfig a run/create asks for (origin argv); None for other commands.

    Only the settings the argv states are set (`model_fields_set`), so that a
    merge with inspect data knows what argv said and what it left to defaults.
    """
    if call.command not in ("run", "create"):
        return None
    fields: dict[str, Any] = {"origin": "argv", "image": call.image}
    for handler in _CONFIG_HANDLERS:
        handler(call, fields)
    return ContainerConfig(**fields)


def _set_flags(call: DockerCall, fields: dict[str, Any]) -> None:
    for flag, key in (("privileged", "privileged"), ("read-only", "read_only_rootfs")):
        if flag in call.options:
            fields[key] = call.flag(flag)


def _set_lists(call: DockerCall, fields: dict[str, Any]) -> None:
    for flag, key in (("cap-add", "cap_add"), ("cap-drop", "cap_drop")):
        if flag in call.options:
            fields[key] = [_cap_name(v) for v in _comma_list(call.options[flag])]
    if "device" in call.options:
        fields["devices"] = list(call.options["device"])
    if "security-opt" in call.options:
        security_options(call.options["security-opt"], fields)


def _set_modes(call: DockerCall, fields: dict[str, Any]) -> None:
    modes = {"pid": "pid_mode", "ipc": "ipc_mode", "uts": "uts_mode", "userns": "userns_mode",
             "cgroupns": "cgroupns_mode"}  # fmt: skip
    for flag, key in modes.items():
        value = call.opt(flag)
        if value is not None:
            fields[key] = value
    networks = call.options.get("network", ()) + call.options.get("net", ())
    if networks:
        fields["network_mode"] = networks[0]
    if "user" in call.options:
        fields["user"] = call.opt("user")
    if "restart" in call.options:
        fields["restart_policy"] = call.opt("restart")


def _set_limits(call: DockerCall, fields: dict[str, Any]) -> None:
    memory = call.opt("memory")
    if memory is not None:
        size = parse_memory(memory)
        fields["memory_bytes"] = size or None  # 0: unlimited
    pids = call.opt("pids-limit")
    if pids is not None and _is_int(pids):
        fields["pids_limit"] = int(pids) if int(pids) > 0 else None
    cpus = call.opt("cpus")
    if cpus is not None:
        with contextlib.suppress(InvalidOperation):
            fields["nano_cpus"] = int(Decimal(cpus) * 1_000_000_000) or None
    shares = call.opt("cpu-shares")
    if shares is not None and _is_int(shares):
        fields["cpu_shares"] = int(shares)


def _set_mounts(call: DockerCall, fields: dict[str, Any]) -> None:
    mounts = [_volume_mount(v) for v in call.options.get("volume", ())]
    mounts += [m for m in map(_mount_flag, call.options.get("mount", ())) if m is not None]
    mounts += [_tmpfs_mount(v) for v in call.options.get("tmpfs", ())]
    if mounts:
        fields["mounts"] = mounts


def _set_labels(call: DockerCall, fields: dict[str, Any]) -> None:
    if "label" not in call.options:
        return
    labels: dict[str, str] = {}
    for item in call.options["label"]:
        key, _, value = item.partition("=")
        labels[key] = value
    fields["labels"] = labels


_CONFIG_HANDLERS = (_set_flags, _set_lists, _set_modes, _set_limits, _set_mounts, _set_labels)


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _comma_list(values: Iterable[str]) -> list[str]:
    # pflag StringSlice: each value is itself comma separated (--cap-add A,B).
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _cap_name(value: str) -> str:
    upper = value.upper()
    return upper.removeprefix("CAP_")


def security_options(options: Iterable[str], fields: dict[str, Any]) -> None:
    """docker CLI parseSecurityOpts: `key=value`, the old `key:value`, or no-new-privileges."""
    fields["security_opt"] = list(options)
    for option in options:
        key, value = _split_security_opt(option)
        if key == "seccomp":
            fields["seccomp"] = value
        elif key == "apparmor":
            fields["apparmor"] = value
        elif key == "label" and value == "disable":
            fields["selinux_disabled"] = True
        elif key == "no-new-privileges":
            fields["no_new_privileges"] = as_bool(value)


def _split_security_opt(option: str) -> tuple[str, str]:
    if option == "no-new-privileges":
        return option, "true"
    key, eq, value = option.partition("=")
    if not eq and ":" in option:
        key, _, value = option.partition(":")
    return key, value


_PROPAGATION = frozenset({"shared", "rshared", "slave", "rslave", "private", "rprivate"})


def _volume_mount(spec: str) -> Mount:
    """`-v SRC:DST[:OPTS]` or `-v DST` (an anonymous volume)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return Mount(type="volume", source="", destination=parts[0])
    source, destination = parts[0], parts[1]
    mode = ":".join(parts[2:])
    options = set(mode.split(",")) if mode else set()
    bind = source.startswith(("/", ".", "~"))
    propagation = next((o for o in options if o in _PROPAGATION), "")
    return Mount(
        type="bind" if bind else "volume",
        source=source,
        destination=destination,
        read_only="ro" in options,
        mode=mode,
        propagation=propagation,
    )


def _mount_flag(spec: str) -> Mount | None:
    """`--mount type=bind,source=/a,target=/b,readonly` (CSV, values may be quoted)."""
    try:
        (items,) = list(csv.reader([spec]))
    except (csv.Error, ValueError):
        return None
    values: dict[str, str] = {}
    for item in items:
        key, eq, value = item.partition("=")
        values[key.strip().lower()] = value if eq else "true"
    destination = values.get("target") or values.get("destination") or values.get("dst")
    if destination is None:
        return None
    read_only = values.get("readonly", values.get("ro"))
    return Mount(
        type=values.get("type", "volume"),
        source=values.get("source") or values.get("src") or "",
        destination=destination,
        read_only=read_only is not None and as_bool(read_only),
        propagation=values.get("bind-propagation", ""),
    )


def _tmpfs_mount(spec: str) -> Mount:
    destination, _, options = spec.partition(":")
    return Mount(
        type="tmpfs",
        destination=destination,
        mode=options,
        read_only="ro" in options.split(","),
    )


# --------------------------------------------------------------------------- exec


class ExecOptions(BaseModel):
    """`Event.config` of an exec (exec_create/exec_start) from the CLI argv."""

    model_config = ConfigDict(extra="forbid")

    origin: str = Field("argv", description="Always argv: inspect does not describe execs.")
    kind: str = Field("exec", description="Marks this as the settings of an exec.")
    user: str | None = Field(None, description="-u/--user; None means the container's user.")
    privileged: bool = Field(False, description="--privileged.")
    interactive: bool = Field(False, description="-i.")
    tty: bool = Field(False, description="-t.")
    detach: bool = Field(False, description="-d.")
    workdir: str | None = Field(None, description="-w/--workdir.")
    command: list[str] = Field(default_factory=list, description="The command run.")


def exec_options(call: DockerCall) -> ExecOptions | None:
    if call.command != "exec":
        return None
    return ExecOptions(
        user=call.opt("user"),
        privileged=call.flag("privileged"),
        interactive=call.flag("interactive"),
        tty=call.flag("tty"),
        detach=call.flag("detach"),
        workdir=call.opt("workdir"),
        command=list(call.args[1:]),
    )
