"""The `posture:` section of docktrail.yaml: continuous CIS checks."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# The CIS 1.1.x watches (paths) docktrail needs; deploy/audit/docktrail.rules loads them.
REQUIRED_WATCHES = (
    "/usr/bin/dockerd", "/run/containerd", "/var/lib/docker", "/etc/docker",
    "/etc/docker/daemon.json", "/etc/containerd/config.toml", "/etc/default/docker",
    "/lib/systemd/system/docker.service", "/lib/systemd/system/docker.socket",
    "/var/run/docker.sock", "/run/containerd/containerd.sock", "/usr/bin/containerd",
    "/usr/bin/containerd-shim-runc-v2", "/usr/bin/runc",
)  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DriftConfig(_Strict):
    enabled: bool = Field(True, description="`docker diff` running containers at each sweep.")
    containers_per_sweep: int = Field(
        20, ge=1, le=10_000, description="Most containers diffed per sweep (round robin)."
    )
    time_budget_secs: float = Field(
        10.0, gt=0, description="A sweep stops diffing after this long; the rest wait their turn."
    )
    max_paths: int = Field(
        50, ge=1, le=10_000, description="Most paths recorded per drift event (the count is kept)."
    )
    read_modes: bool = Field(
        True,
        description="On overlay2, lstat changed paths in the upper directory to flag executables.",
    )
    max_stat_paths: int = Field(
        1000, ge=1, le=100_000, description="Most changed paths stat-ed per container and sweep."
    )


class ImagesConfig(_Strict):
    unused_days: float = Field(
        30.0, gt=0, description="An image no container has used for this long could go (CIS 6.4)."
    )
    max_tags: int = Field(
        10, ge=1, description="More tags than this of one repository are reported as sprawl."
    )


class MeteringConfig(_Strict):
    enabled: bool = Field(True, description="One-shot stats snapshots of running containers.")
    interval_secs: float = Field(
        300.0, gt=0, description="Least time between two snapshots of the host (CIS 6.2)."
    )
    retention_days: float = Field(
        7.0, gt=0, description="Snapshots older than this are deleted from the metering file."
    )
    host_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="A container without limits using more than this share of the host's "
        "memory or CPUs is reported.",
    )
    workers: int = Field(
        32,
        ge=1,
        le=256,
        description="Stats calls side by side (dockerd answers each at its next 1 s tick).",
    )
    path: Path | None = Field(
        None,
        description="SQLite file of the snapshots (created 0600, not in the hash chain). "
        "Default: the trail path with `.metering.db` in place of its suffix.",
    )


class PostureConfig(_Strict):
    enabled: bool = Field(True, description="Run the posture checks at every sweep.")
    daemon_config_file: Path = Field(
        Path("/etc/docker/daemon.json"),
        description="Read (when readable) for what the Engine does not show: the "
        "no-new-privileges default, default ulimits, content trust.",
    )
    audit_rules_file: Path = Field(
        Path("/etc/audit/rules.d/docktrail.rules"),
        description="Audit rules compared with the required watches when `auditctl -l` "
        "is not permitted.",
    )
    required_watches: list[str] = Field(
        default_factory=lambda: list(REQUIRED_WATCHES),
        description="Paths that must be watched by the loaded audit rules (CIS 1.1.x).",
    )
    backup_labels: list[str] = Field(
        default_factory=lambda: ["backup", "docktrail.backup"],
        description="A volume (or its container) with one of these labels has a backup (CIS 6.3).",
    )
    drift: DriftConfig = Field(default_factory=DriftConfig, description="Container drift.")
    images: ImagesConfig = Field(default_factory=ImagesConfig, description="Image sprawl.")
    metering: MeteringConfig = Field(
        default_factory=MeteringConfig, description="Resource metering (docktrail top)."
    )
