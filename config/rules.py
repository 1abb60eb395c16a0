"""The `rules:` section of docktrail.yaml: each rule's switch, severity and exceptions,
and the settings of the rules that take more."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Severity, Strict


class RuleException(Strict):
    image: str | None = Field(None, description="Glob of image references it applies to.")
    container: str | None = Field(None, description="Glob of container names it applies to.")
    label: str | None = Field(None, description="`key=value` label the container must carry.")
    user: str | None = Field(None, description="Login the exception applies to.")
    reason: str = Field(description="Why this is allowed; stored with every suppressed match.")


class RuleConfig(Strict):
    enabled: bool = Field(True, description="Evaluate this rule.")
    severity: Severity | None = Field(None, description="Override the rule's default severity.")
    exceptions: list[RuleException] = Field(
        default_factory=list, description="Matches that are suppressed, with a reason."
    )


class UntrustedImageRule(RuleConfig):
    trusted: list[str] = Field(
        default_factory=lambda: ["docker.io/library/*"],
        description="Glob patterns of trusted image references.",
    )
    require_digest: bool = Field(False, description="Only digest-pinned references are trusted.")


class ContainerChurnRule(RuleConfig):
    threshold: int = Field(
        20,
        ge=1,
        description="Creates/destroys per window above which the rule fires; with a learned "
        "baseline, the lowest threshold.",
    )
    window_secs: int = Field(60, ge=1, description="Sliding window length.")
    baseline: Literal["learn", "fixed"] = Field(
        "learn",
        description="learn: once a scope (host, image or user) has baseline_min_windows "
        "windows with creates/destroys in the trail's history, its threshold is the higher of "
        "`threshold` and the learned one (baseline_percentile of its per-window counts times "
        "baseline_factor), learned at start from the trail and from every event since. "
        "fixed: `threshold` only.",
    )
    baseline_min_windows: int = Field(
        24,
        ge=1,
        description="Windows with creates/destroys a scope's history needs before its learned "
        "threshold applies.",
    )
    baseline_percentile: float = Field(
        99.0,
        gt=0,
        le=100,
        description="Percentile of the per-window counts in a scope's history that its "
        "learned threshold starts from.",
    )
    baseline_factor: float = Field(
        1.5, ge=1, description="Head room: the learned threshold is the percentile times this."
    )


class ContainerSprawlRule(RuleConfig):
    margin: int = Field(25, ge=0, description="Stopped containers allowed beyond running ones.")


class FleetChurnRule(RuleConfig):
    threshold: int = Field(
        100, ge=1, description="Creates/destroys across the fleet per window above which it fires."
    )
    min_hosts: int = Field(3, ge=1, description="Only when at least this many hosts took part.")
    window_secs: int = Field(60, ge=1, description="Sliding window length.")


class FleetImageRule(RuleConfig):
    min_hosts: int = Field(
        3, ge=2, description="Fires when one untrusted image reaches this many hosts."
    )
    window_secs: int = Field(3600, ge=1, description="Within this many seconds.")


class UndeclaredDeploymentRule(RuleConfig):
    enabled: bool = Field(
        False, description="Evaluate this rule (off by default: a policy, not a default)."
    )
    images: list[str] = Field(
        default_factory=list,
        description="Glob patterns of image references in scope; empty: every image.",
    )
    names: list[str] = Field(
        default_factory=list,
        description="Glob patterns of container names in scope; empty: every name.",
    )


class RulesConfig(Strict):
    privileged_container: RuleConfig = Field(
        default_factory=RuleConfig, alias="privileged-container", description="CIS 5.5."
    )
    docker_socket_mount: RuleConfig = Field(
        default_factory=RuleConfig, alias="docker-socket-mount", description="CIS 5.32."
    )
    sensitive_mount: RuleConfig = Field(
        default_factory=RuleConfig, alias="sensitive-mount", description="CIS 5.6."
    )
    dangerous_capability: RuleConfig = Field(
        default_factory=RuleConfig, alias="dangerous-capability", description="CIS 5.4."
    )
    host_namespace: RuleConfig = Field(
        default_factory=RuleConfig, alias="host-namespace", description="CIS 5.10/5.16/5.17/5.21."
    )
    security_profile_disabled: RuleConfig = Field(
        default_factory=RuleConfig, alias="security-profile-disabled", description="CIS 5.2/5.22."
    )
    untrusted_image: UntrustedImageRule = Field(
        default_factory=UntrustedImageRule, alias="untrusted-image", description="CIS 4.x, 6.4."
    )
    exec_in_container: RuleConfig = Field(
        default_factory=RuleConfig, alias="exec-in-container", description="CIS 5.23/5.24."
    )
    container_churn: ContainerChurnRule = Field(
        default_factory=ContainerChurnRule, alias="container-churn", description="CIS 6.5."
    )
    container_sprawl: ContainerSprawlRule = Field(
        default_factory=ContainerSprawlRule, alias="container-sprawl", description="CIS 6.5."
    )
    daemon_config_change: RuleConfig = Field(
        default_factory=RuleConfig, alias="daemon-config-change", description="CIS 1.1.x."
    )
    no_resource_limits: RuleConfig = Field(
        default_factory=RuleConfig, alias="no-resource-limits", description="CIS 5.11/5.29."
    )
    writable_rootfs: RuleConfig = Field(
        default_factory=RuleConfig, alias="writable-rootfs", description="CIS 5.13."
    )
    runs_as_root: RuleConfig = Field(
        default_factory=RuleConfig, alias="runs-as-root", description="CIS 4.1."
    )
    unattributed_change: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="unattributed-change",
        description="A container change no login can be tied to.",
    )
    attribution_mismatch: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="attribution-mismatch",
        description="An audit.who label claims someone other than the login auditd saw.",
    )
    # Fleet rules: evaluated by `docktrail consume` on the central trail only.
    host_chain_broken: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="host-chain-broken",
        description="Fleet: a host's published chain has a gap, fork, rewind or bad signature.",
    )
    fleet_churn: FleetChurnRule = Field(
        default_factory=lambda: FleetChurnRule(),
        alias="fleet-churn",
        description="Fleet: container churn across hosts. CIS 6.5.",
    )
    fleet_untrusted_image: FleetImageRule = Field(
        default_factory=lambda: FleetImageRule(),
        alias="fleet-untrusted-image",
        description="Fleet: the same untrusted image on many hosts. CIS 4.2, 6.4.",
    )
    intent_mismatch: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="intent-mismatch",
        description="A create matching a declared intent by another login than the declared one.",
    )
    expired_deployment: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="expired-deployment",
        description="A container still running after its expiry (intent or audit.expires).",
    )
    undeclared_deployment: UndeclaredDeploymentRule = Field(
        default_factory=UndeclaredDeploymentRule,
        alias="undeclared-deployment",
        description="A create with no matching intent and no why label (policy, off by default).",
    )
    proxy_refusal: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="proxy-refusal",
        description="The socket proxy refused an API call (policy or an unwritable trail).",
    )
    daemon_posture: RuleConfig = Field(
        default_factory=RuleConfig, alias="daemon-posture", description="CIS 2.x."
    )
    audit_rule_posture: RuleConfig = Field(
        default_factory=RuleConfig, alias="audit-rule-posture", description="CIS 1.1.x."
    )
    container_drift: RuleConfig = Field(
        default_factory=RuleConfig, alias="container-drift", description="CIS 5.13 (drift)."
    )
    host_posture: RuleConfig = Field(
        default_factory=RuleConfig, alias="host-posture", description="CIS 6.2/6.3/6.4/6.5."
    )
    exec_code_fetch: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="exec-code-fetch",
        description="Exec session: code fetched and run (curl|sh).",
    )
    exec_package_manager: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="exec-package-manager",
        description="Exec session: a package manager in a running container.",
    )
    exec_credential_read: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="exec-credential-read",
        description="Exec session: credential files touched.",
    )
    exec_binary_edit: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="exec-binary-edit",
        description="Exec session: binaries or libraries changed by hand.",
    )
    exec_root_shell: RuleConfig = Field(
        default_factory=RuleConfig,
        alias="exec-root-shell",
        description="Exec session: an interactive root shell at a terminal.",
    )
