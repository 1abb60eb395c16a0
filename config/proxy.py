"""The `proxy:` section of docktrail.yaml: the peer-credential Docker socket proxy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ProxyPolicyConfig(_Strict):
    """Requests the proxy refuses (an authorization plugin without a plugin)."""

    enabled: bool = Field(False, description="Refuse the requests this policy names.")
    allow_logins: list[str] = Field(
        default_factory=list, description="Logins (by audit login uid) the policy never refuses."
    )
    allow_groups: list[str] = Field(
        default_factory=list, description="Members of these groups are never refused."
    )
    refuse_privileged: bool = Field(True, description="Refuse --privileged containers.")
    refuse_host_namespaces: bool = Field(
        True, description="Refuse host network, pid, ipc, uts, userns or cgroup namespaces."
    )
    refuse_sensitive_binds: bool = Field(
        True, description="Refuse binds of /, the Docker socket and sensitive host paths."
    )
    sensitive_paths: list[str] = Field(
        default_factory=lambda: [
            "/",
            "/etc",
            "/proc",
            "/sys",
            "/boot",
            "/dev",
            "/lib",
            "/usr",
            "/root",
            "/var/lib/docker",
            "/run",
            "/var/run",
        ],
        description="Host paths whose bind (or a bind of anything under them) is refused.",
    )
    trusted_images: list[str] | None = Field(
        None,
        description="Glob patterns of image references that may be created or pulled; "
        "None: any image.",
    )


class ProxyConfig(_Strict):
    enabled: bool = Field(False, description="Start the socket proxy with `docktrail run`.")
    listen: Path = Field(
        Path("/var/run/docker.sock"), description="Socket path the clients connect to."
    )
    engine: Path = Field(
        Path("/run/docktrail/engine.sock"), description="The real Engine socket (dockerd -H)."
    )
    listen_group: str | None = Field(
        "docker", description="Group owning the listening socket (None: the process's group)."
    )
    listen_mode: int = Field(0o660, ge=0, le=0o777, description="Mode of the listening socket.")
    max_body_bytes: int = Field(
        1 << 20, gt=0, description="Largest request body read for judging and recording."
    )
    on_trail_failure: Literal["forward", "refuse"] = Field(
        "forward",
        description="When an api-call cannot be recorded: forward it anyway (and say so "
        "loudly) or refuse it.",
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto",
        description="Event loop of `docktrail proxy`: uvloop (optional dependency "
        "`docktrail[fast]`) cuts the latency the proxy adds; auto takes it when installed.",
    )
    attribution_wait_secs: float = Field(
        1.0,
        ge=0,
        description="How long an Engine event waits for the response of the call in flight "
        "that may have caused it.",
    )
    policy: ProxyPolicyConfig = Field(
        default_factory=ProxyPolicyConfig, description="Optional enforcement (off by default)."
    )

    @field_validator("listen_mode", mode="before")
    @classmethod
    def _octal_text(cls, value: object) -> object:
        """`"0660"` or `"0o660"` as written in YAML or an environment variable: octal."""
        if isinstance(value, str):
            try:
                return int(value.strip().lower().removeprefix("0o"), 8)
            except ValueError:
                raise ValueError(f"not an octal mode: {value!r}") from None
        return value
