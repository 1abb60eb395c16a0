"""What a request is: does it change state, what does it name, what does it ask for.

Paths carry an optional API version prefix (`/v1.47/containers/create`); it is
stripped before matching. Bodies are read only for the endpoints whose body
is security-relevant, and only what matters is kept (secrets redacted).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from config.proxy import ProxyPolicyConfig
from listener import redact
from listener.proxy.framing import Request
from listener.proxy.peer import Peer

_VERSION = re.compile(r"^/v[0-9.]+(?=/)")  # as the Engine's router matches it
_HIJACK_GET = re.compile(r"^/(containers/[^/]+/attach(/ws)?|exec/[^/]+/start)$")
# endpoints whose body we read: container create, exec create, plugin, secret, config, etc.
_BODY_PATHS = re.compile(
    r"^/(containers/create|containers/[^/]+/exec|secrets/create|configs/create|"
    r"plugins/pull|volumes/create|networks/create|services/create|services/[^/]+/update)$"
)
_KINDS = {
    "containers": "container", "exec": "exec", "images": "image", "build": "image",
    "volumes": "volume", "networks": "network", "plugins": "plugin", "secrets": "secret",
    "configs": "config", "services": "service",
}  # fmt: skip
_NAMED = ("containers", "exec", "volumes", "networks", "plugins")
_IMAGE_PATHS = ("/containers/create", "/images/create")
SOCKET_NAMES = ("docker.sock", "containerd.sock", "engine.sock")


def api_path(request: Request) -> str:
    """The path as the Engine routes it: percent-decoded, without the version prefix."""
    return _VERSION.sub("", unquote(request.path), count=1)


def changes_state(request: Request) -> bool:
    if request.method in ("POST", "PUT", "DELETE", "PATCH"):
        return True
    return (
        request.method == "GET"
        and _may_be_stream(request.target)
        and bool(_HIJACK_GET.match(api_path(request)))
    )


def _may_be_stream(target: str) -> bool:
    """False only when no decoding of `target` can name an attach or exec start: most
    reads, without percent-decoding and a regular expression on each."""
    return "%" in target or "attach" in target or "start" in target


_HIJACK_POST = re.compile(r"^/(containers/[^/]+/attach|exec/[^/]+/start)$")


def may_hijack(request: Request) -> bool:
    """Attach and exec start switch to raw bytes, with or without `Connection: Upgrade`."""
    if request.head.wants_upgrade:
        return True
    return request.method == "POST" and bool(_HIJACK_POST.match(api_path(request)))


def wants_body(request: Request) -> bool:
    return request.method == "POST" and bool(_BODY_PATHS.match(api_path(request)))


@dataclass(slots=True)
class Call:
    """What a state-changing request names and asks for."""

    path: str
    kind: str = ""  # the Engine's object type the call acts on: container, image, exec…
    names: list[str] = field(default_factory=list)
    image: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    body_error: str | None = None


def describe(request: Request, body: bytes | None, body_truncated: bool) -> Call:
    path = api_path(request)
    parts = [p for p in path.split("/") if p]
    call = Call(path, _KINDS.get(parts[0], "") if parts else "")
    query = request.query
    if len(parts) >= 2 and parts[0] in _NAMED and parts[1] not in ("create", "prune", "pull"):
        call.names.append(parts[1])
    if path == "/containers/create" and query.get("name"):
        call.names.append(query["name"][0].lstrip("/"))
    if len(parts) >= 2 and parts[0] == "images" and parts[1] not in ("create", "load", "prune"):
        call.image = "/".join(parts[1:-1] if len(parts) > 2 else parts[1:])
    if path == "/images/create":
        image, tag = (query.get("fromImage") or [""])[0], (query.get("tag") or [""])[0]
        call.image = f"{image}:{tag}" if image and tag and "@" not in image else image or None
    if body_truncated:
        call.body_error = "body over proxy.max_body_bytes or chunked: not judged"
    elif body is not None:
        _read_body(call, body)
    return call


def _read_body(call: Call, body: bytes) -> None:
    try:
        data = _folded(json.loads(body or b"{}"))
    except ValueError:
        call.body_error = "body is not JSON"
        return
    if not isinstance(data, dict):
        call.body_error = "body is not a JSON object"
        return
    call.body = security_view(call.path, data)
    if call.path == "/containers/create" and isinstance(data.get("Image"), str):
        call.image = data["Image"]
    if isinstance(data.get("Name"), str):
        call.names.append(data["Name"])


def _folded(value: Any, depth: int = 0) -> Any:
    """Keys in their canonical case: the Engine (Go's encoding/json) matches them in any
    case, the last one written winning, so `"privileged": true` counts as Privileged."""
    if depth > 32:
        return value
    if isinstance(value, list):
        return [_folded(v, depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    folded: dict[str, Any] = {}
    for key, item in value.items():
        canonical = _CANONICAL.get(str(key).lower(), str(key))
        folded.pop(canonical, None)  # keep document order: the last spelling wins
        folded[canonical] = _folded(item, depth + 1)
    return folded


_HOST_KEYS = (
    "Privileged", "Binds", "Mounts", "NetworkMode", "PidMode", "IpcMode", "UTSMode",
    "UsernsMode", "CgroupnsMode", "CapAdd", "SecurityOpt", "Devices", "ReadonlyRootfs",
    "Memory", "PidsLimit",
)  # fmt: skip


_CANONICAL = {
    key.lower(): key
    for key in (
        *_HOST_KEYS, "Image", "User", "Cmd", "Entrypoint", "Tty", "Name", "Driver", "Env",
        "HostConfig", "Type", "Source", "Target", "Data",
    )
}  # fmt: skip


def security_view(path: str, data: dict[str, Any]) -> dict[str, Any]:
    """The security-relevant part of a body, secrets redacted, values bounded."""
    redactor = redact.active()
    view: dict[str, Any] = {}
    for key in ("Image", "User", "Cmd", "Entrypoint", "Privileged", "Tty", "Name", "Driver"):
        if key in data:
            view[key] = data[key]
    if isinstance(env := data.get("Env"), list):
        view["Env"] = redactor.argv([e for e in env if isinstance(e, str)])
    host = data.get("HostConfig")
    if isinstance(host, dict):
        view["HostConfig"] = {k: host[k] for k in _HOST_KEYS if host.get(k) not in (None, "", [])}
    if path in ("/secrets/create", "/configs/create"):
        view.pop("Data", None)  # never the secret itself
        view["Name"] = data.get("Name")
    if isinstance(cmd := view.get("Cmd"), list):
        view["Cmd"] = redactor.argv([str(c) for c in cmd])
    bounded: dict[str, Any] = _bounded(view)
    return bounded


def _bounded(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return "…"
    if isinstance(value, str):
        return value[:1024]
    if isinstance(value, list):
        return [_bounded(v, depth + 1) for v in value[:64]]
    if isinstance(value, dict):
        return {str(k)[:128]: _bounded(v, depth + 1) for k, v in list(value.items())[:64]}
    return value


# ---------------------------------------------------------------------------- policy


def refusal(policy: ProxyPolicyConfig, call: Call, peer: Peer) -> str | None:
    """Why the policy refuses this call, or None."""
    if not policy.enabled or _allowed(policy, peer):
        return None
    if call.body_error and (call.path == "/containers/create" or call.path.endswith("/exec")):
        return f"docktrail policy: {call.body_error}"
    host = call.body.get("HostConfig") or {}
    reasons: list[str] = []
    if policy.refuse_privileged and (host.get("Privileged") or call.body.get("Privileged")):
        reasons.append("privileged containers are not allowed")
    if policy.refuse_host_namespaces:
        reasons += _host_namespaces(host)
    if policy.refuse_sensitive_binds:
        reasons += [f"bind of {p} is not allowed" for p in _sensitive_binds(policy, host)]
    if (
        policy.trusted_images is not None
        and call.image
        and call.path
        in (
            "/containers/create",
            "/images/create",
        )
    ) and not any(fnmatch.fnmatchcase(call.image, p) for p in policy.trusted_images):
        reasons.append(f"image {call.image} is outside the trusted registries")
    if not reasons:
        return None
    who = peer.login or peer.user or f"uid {peer.uid}"
    return f"docktrail policy refused this request for {who}: " + "; ".join(reasons)


def _untrusted(policy: ProxyPolicyConfig, call: Call) -> bool:
    trusted = policy.trusted_images
    if trusted is None or not call.image or call.path not in _IMAGE_PATHS:
        return False
    return not any(fnmatch.fnmatchcase(call.image, pattern) for pattern in trusted)


def _allowed(policy: ProxyPolicyConfig, peer: Peer) -> bool:
    if peer.login is not None and peer.login in policy.allow_logins:
        return True
    if not policy.allow_groups:
        return False
    groups = peer.group_names if peer.group_names is not None else peer.groups()
    return bool(groups & set(policy.allow_groups))


def _host_namespaces(host: dict[str, Any]) -> list[str]:
    found = []
    for key in ("NetworkMode", "PidMode", "IpcMode", "UTSMode", "UsernsMode", "CgroupnsMode"):
        if str(host.get(key, "")).lower() == "host":
            found.append(f"{key} host is not allowed")
    return found


def _sensitive_binds(policy: ProxyPolicyConfig, host: dict[str, Any]) -> list[str]:
    sources: list[str] = []
    for bind in host.get("Binds") or []:
        if isinstance(bind, str) and bind.startswith("/"):
            sources.append(bind.split(":", 1)[0])
    for mount in host.get("Mounts") or []:
        if isinstance(mount, dict) and mount.get("Type", "bind") == "bind":
            sources.append(str(mount.get("Source", "")))
    return [s for s in sources if _is_sensitive(policy, s)]


def _is_sensitive(policy: ProxyPolicyConfig, source: str) -> bool:
    path = "/" + source.strip("/")
    if path.rsplit("/", 1)[-1] in SOCKET_NAMES:
        return True
    for sensitive in policy.sensitive_paths:
        base = "/" + sensitive.strip("/")
        if path == base or (base != "/" and path.startswith(base + "/")):
            return True
    return False
