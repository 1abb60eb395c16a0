"""Pydantic models of `docktrail.yaml`.

The nesting mirrors the file. Every model forbids unknown keys, so a typo is
an error rather than a silently ignored setting. Durations carry their unit in
the key name (`window_secs`), as in Vector's configuration.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from config.base import SEVERITIES as SEVERITIES
from config.base import Severity as Severity
from config.base import Strict as Strict
from config.exec_sessions import ExecSessionsConfig
from config.kafka import KafkaConfig as KafkaConfig
from config.kafka import KafkaConsumeConfig as KafkaConsumeConfig
from config.posture import PostureConfig
from config.proxy import ProxyConfig
from config.rules import ContainerChurnRule as ContainerChurnRule
from config.rules import ContainerSprawlRule as ContainerSprawlRule
from config.rules import FleetChurnRule as FleetChurnRule
from config.rules import FleetImageRule as FleetImageRule
from config.rules import RuleConfig as RuleConfig
from config.rules import RuleException as RuleException
from config.rules import RulesConfig as RulesConfig
from config.rules import UndeclaredDeploymentRule as UndeclaredDeploymentRule
from config.rules import UntrustedImageRule as UntrustedImageRule


class TrailConfig(Strict):
    path: Path = Field(Path("./docktrail.db"), description="SQLite file of the embedded trail.")
    durability: Literal["full", "normal"] = Field(
        "full",
        description="SQLite `synchronous` level: full survives power loss, normal only crashes.",
    )
    signing_key: Path | None = Field(
        None,
        description="Ed25519 private key (PEM) that signs checkpoints; created on first use. "
        "Default: the trail path with `.key` in place of its suffix. Keep it outside the "
        "database's backups so a rewritten database is detected.",
    )
    batch_size: int = Field(2000, ge=1, le=100_000, description="Events per write transaction.")
    flush_interval_secs: float = Field(
        0.05,
        gt=0,
        le=60,
        description="Longest wait before a partial batch is written (ingest, proxy); "
        "`run` writes a batch as soon as the write before it is done.",
    )
    checkpoint_interval_secs: float = Field(
        60.0, gt=0, description="How often the running service signs the chain head."
    )
    checkpoint_every_events: int = Field(
        10_000,
        ge=1,
        description="Also sign the chain head after this many new events (run and ingest), "
        "so a crash leaves at most this many events after the last checkpoint.",
    )
    witness_path: Path | None = Field(
        None,
        description="Witness file: every signed checkpoint is also appended to it as a JSON "
        "line. Keep it where whoever can write the trail cannot (another disk, a remote or "
        "append-only mount); `docktrail verify --witness FILE` then detects a trail rolled "
        "back to an older copy or forked from it. Default: none.",
    )
    group: str | None = Field(
        None,
        description="Group that may read the trail: the trail, its WAL/SHM and the witness "
        "are created 0640 with this group instead of 0600. The signing key stays 0600.",
    )


class DockerConfig(Strict):
    host: str = Field(
        "unix:///var/run/docker.sock",
        description="Docker Engine address; the DOCKER_HOST environment variable wins when set.",
    )
    timeout_secs: float = Field(10.0, gt=0, description="Timeout of Engine API calls.")
    reconnect_min_secs: float = Field(
        0.5, gt=0, description="First wait before reconnecting to the Engine; doubles per failure."
    )
    reconnect_max_secs: float = Field(
        30.0, gt=0, description="Longest wait between reconnection attempts."
    )
    stall_threshold_secs: float = Field(
        0.5,
        gt=0,
        description="A pause of docktrail this long (process stopped, host overloaded) is a "
        "stall: the Engine may have skipped events, so they are fetched again and compared.",
    )
    inspect_workers: int = Field(
        4, ge=1, le=64, description="Threads that inspect containers and images."
    )
    read_engine_files: bool = Field(
        True,
        description="Live: describe a new container from the Engine's own files under its "
        "data root (`config.v2.json`, `hostconfig.json`), read at once, instead of waiting "
        "for its inspect, which dockerd answers only after a start in progress. Used only "
        "for a local Engine whose files belong to root alone; otherwise, or when off, "
        'inspect as before. The event says `attributes.inspect = "engine-files"`.',
    )
    sweep_interval_secs: float = Field(
        900.0,
        ge=0,
        description="Posture sweep: after every connect and then this often, running "
        "containers are inspected and those whose security configuration was not judged yet "
        "(started before docktrail, or changed by `docker update`) are recorded as "
        "`docktrail` container `posture` events, which the container-config rules judge. "
        "A container is judged once per configuration. 0 turns the sweep off.",
    )


class MetricsConfig(Strict):
    enabled: bool = Field(
        False,
        description="Serve Prometheus `/metrics` and `/healthz` from `docktrail run` "
        "(off by default: an open port is something to choose).",
    )
    address: str = Field(
        "127.0.0.1",
        description="Address to listen on; the default keeps it on this host. The endpoints "
        "have no authentication: expose them only behind a proxy or on a private network.",
    )
    port: int = Field(9731, ge=0, le=65_535, description="TCP port; 0 picks a free one.")


# Keys that published CIS Docker Benchmark 1.1.x rule sets put on their watches.
CIS_AUDIT_KEYS = (
    "docker", "dockerd", "docker-daemon", "docker_daemon", "docker-socket", "docker-service",
    "docker-config", "containerd", "runc",
)  # fmt: skip
# The Docker daemon's own programs: their work on the data roots is housekeeping.
DAEMON_PROGRAMS = (
    "dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v1",
    "containerd-shim-runc-v2", "runc", "docker-init", "docker-proxy",
)  # fmt: skip
DAEMON_DIRS = (
    "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin", "/usr/libexec/docker",
    "/usr/lib/docker", "/bin", "/sbin",
)  # fmt: skip
DAEMON_ROOTS = (
    "/var/lib/docker", "/var/lib/containerd", "/run/docker", "/var/run/docker",
    "/run/containerd", "/var/run/containerd",
)  # fmt: skip


class AuditdConfig(Strict):
    enabled: bool = Field(True, description="Read auditd's log for attribution.")
    log_file: Path = Field(Path("/var/log/audit/audit.log"), description="auditd log to follow.")
    keys: list[str] = Field(
        default_factory=lambda: ["docker", "docker-cli"],
        description="Audit rule keys (-k) whose events are kept.",
    )
    cis_keys: list[str] = Field(
        default_factory=lambda: list(CIS_AUDIT_KEYS),
        description="Keys of CIS Docker Benchmark 1.1.x watch rule sets, kept besides `keys`.",
    )
    cli_key: str = Field(
        "docker-cli",
        description="Key of the execve rule on the docker CLI (deploy/audit/docktrail.rules).",
    )
    exec_key: str = Field(
        "docker-exec",
        description="Key of the optional process rules of exec sessions "
        "(deploy/audit/docktrail-exec.rules); see exec_sessions.",
    )
    drop_housekeeping: bool = Field(
        True,
        description="Drop the daemon's own work, recognized only by what a caller cannot "
        "choose: a process with no audit login (auid unset) whose executable is a daemon "
        "binary (daemon_dirs/daemon_programs, full path) reading or running files, or "
        "touching only paths under daemon_roots. Never drops a write to a daemon binary or "
        "configuration file, whoever makes it.",
    )
    daemon_programs: list[str] = Field(
        default_factory=lambda: list(DAEMON_PROGRAMS),
        description="Program names of the Docker daemon and its runtime; a process is the "
        "daemon's only when its executable is one of these in daemon_dirs.",
    )
    daemon_dirs: list[str] = Field(
        default_factory=lambda: list(DAEMON_DIRS),
        description="Directories the daemon's binaries are installed in (root-owned).",
    )
    daemon_roots: list[str] = Field(
        default_factory=lambda: list(DAEMON_ROOTS),
        description="Data and state directories of the daemon (its --data-root, exec roots).",
    )
    passwd_file: Path | None = Field(
        Path("/etc/passwd"),
        description="Names for uids when the log is not ENRICHED; for a log from another "
        "host, that host's copy. None: numbers only.",
    )
    group_file: Path | None = Field(
        Path("/etc/group"), description="Names for gids, like passwd_file."
    )
    cli_events: Literal["all", "changes", "none"] = Field(
        "all",
        description="Which docker CLI calls become trail events (type docker-cli): all, only "
        "those that can change something (not ps, logs, inspect …), or none.",
    )
    window_secs: float = Field(
        10.0, gt=0, description="Longest time from a CLI call to the Engine events it causes."
    )
    long_window_secs: float = Field(
        600.0,
        gt=0,
        description="The same for calls that may pull or build first (run, create, pull, "
        "build, compose up …); stop/restart/rm -f add their --time.",
    )
    hold_secs: float = Field(
        1.0,
        ge=0,
        description="Live: longest an Engine event waits for the audit log to catch up "
        "with it before it is written unattributed.",
    )
    audit_lag_secs: float = Field(
        0.1,
        ge=0,
        description="Live: how far behind the clock auditd may write a record; the log "
        "counts as caught up with time T once it was read to its end after T + this.",
    )
    poll_interval_secs: float = Field(
        0.05, gt=0, le=10, description="Live: how often the log is checked for new lines."
    )
    barrier: bool = Field(
        True,
        description="Live: after an Engine event, send an audit barrier (a USER message "
        "'docktrail-barrier nonce=… n=…', needs CAP_AUDIT_WRITE) and count the log as "
        "caught up once it is read back, instead of waiting audit_lag_secs; without "
        "CAP_AUDIT_WRITE, or when barriers are not seen in the log, the wait is as without.",
    )
    event_timeout_secs: float = Field(
        2.0,
        gt=0,
        description="An audit event without EOE is complete once a record this much newer "
        "arrives (auditd's end_of_event_timeout).",
    )
    start_at: Literal["end", "start"] = Field(
        "end",
        description="Live, without a checkpoint: read the current log from its end (only "
        "new records) or from its start.",
    )
    max_cli_calls: int = Field(
        50_000,
        ge=100,
        description="Most CLI calls kept in memory for correlation (oldest dropped first).",
    )


Format = Literal["auto", "plain", "markdown", "dingtalk", "html", "json"]


class Destination(Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name used in logs, the outbox and `notify test --destination`.",
    )
    url: str = Field(description="apprise URL of the channel (secrets are masked in logs).")
    min_severity: Severity = Field("high", description="Lowest severity sent here.")
    rules: list[str] = Field(default_factory=list, description="Only these rule ids; all if empty.")
    hosts: list[str] = Field(
        default_factory=list, description="Glob patterns of hosts sent here; all if empty."
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Only alerts whose container carries every one of these labels "
        "(value `*` matches any value).",
    )
    tags: list[str] = Field(
        default_factory=list,
        description="apprise tags given to the URL and to each send (apprise's own routing).",
    )
    format: Format = Field(
        "auto",
        description="Message family: auto picks it from the URL scheme (mailto -> html, "
        "dingtalk -> dingtalk, slack/msteams/feishu/lark/mmost/discord/wecombot -> markdown, "
        "json/form/xml -> json, others plain).",
    )
    language: Literal["en", "zh"] = Field("en", description="Message language.")
    timezone: str = Field("UTC", description="IANA time zone of times in messages.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (IANA names: Asia/Shanghai)") from None
        return name

    rate_limit_per_min: int = Field(
        20,
        ge=1,
        description="Most messages sent here per minute; alerts over it wait and go out "
        "grouped in the next message (never dropped).",
    )


class NotificationsConfig(Strict):
    destinations: list[Destination] = Field(
        default_factory=list, description="Where alerts are sent."
    )
    templates_dir: Path | None = Field(
        None,
        description="Directory of Jinja2 templates overriding the built-in ones, by the same "
        "file names (`<family>.<language>.title.j2`, `<family>.<language>.body.j2`).",
    )
    link_base_url: str | None = Field(
        None,
        description="Base URL of `docktrail serve`; messages then link to the alert "
        "instead of naming the `docktrail timeline` command.",
    )
    dedup_window_secs: float = Field(
        300.0,
        ge=0,
        description="An alert identical to one sent here within this window (same rule, "
        "container or image, and login) is not sent again; 0 turns dedup off.",
    )
    group_window_secs: float = Field(
        60.0,
        ge=0,
        description="After a message for a rule on a host, further alerts of that rule and "
        "host within this window go out together in one grouped message; 0 turns it off.",
    )
    timeout_secs: float = Field(
        10.0, gt=0, description="Longest wait for one send before it counts as failed."
    )
    retry_initial_secs: float = Field(
        2.0, gt=0, description="Wait before the first retry; doubles on every failure."
    )
    retry_max_secs: float = Field(300.0, gt=0, description="Longest wait between retries.")
    max_age_secs: float = Field(
        86_400.0,
        gt=0,
        description="A delivery still failing this long after its alert is marked failed, "
        "logged and recorded in the trail as a `docktrail/delivery-failed` event.",
    )
    poll_interval_secs: float = Field(
        1.0, gt=0, le=60, description="How often the worker looks for due retries."
    )

    @model_validator(mode="after")
    def _names_are_unique(self) -> Self:
        seen: set[str] = set()
        for destination in self.destinations:
            if destination.name in seen:
                raise ValueError(f"destination name {destination.name!r} is used twice")
            seen.add(destination.name)
        return self


class IntentApiConfig(Strict):
    enabled: bool = Field(False, description="Serve the HTTP endpoint for declaring intents.")
    listen: str = Field("127.0.0.1", description="Address the endpoint binds to.")
    port: int = Field(8787, ge=0, le=65535, description="TCP port of the endpoint (0: any).")
    token_file: Path | None = Field(
        None, description="File holding the bearer token (must not be world-readable)."
    )
    token_env: str | None = Field(
        None, description="Environment variable holding the bearer token (if no token_file)."
    )
    max_body_bytes: int = Field(
        16_384, ge=256, le=1_048_576, description="Largest request body accepted."
    )
    timeout_secs: float = Field(
        10.0, gt=0, description="Time a client has to send its whole request."
    )


class IntentsConfig(Strict):
    api: IntentApiConfig = Field(
        default_factory=IntentApiConfig, description="HTTP endpoint for CI/CD pipelines."
    )
    expiry_check_secs: float = Field(
        60.0,
        gt=0,
        description="Longest sleep of the expiry timer between checks of what expires next.",
    )


class OutputConfig(Strict):
    timezone: str = Field("UTC", description="IANA time zone for times the CLI prints.")


# Names of environment variables and build arguments whose values are secrets
# (matched as substrings, case-insensitive).
SECRET_NAME_PARTS = (
    "PASSWORD", "PASSWD", "PASS", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE", "AUTH",
    "SALT", "COOKIE", "DSN",
)  # fmt: skip


class InputConfig(Strict):
    """Bounds on what a source may hand to the trail (hostile or broken input)."""

    max_line_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024,
        description="Longest input line (Engine events file, audit log); a longer line is "
        "skipped in bounded memory and counted malformed with its number and size.",
    )
    max_field_bytes: int = Field(
        64 * 1024,
        ge=64,
        description="Longest string value (UTF-8 bytes) stored in an event; a longer one is "
        "cut, and the cap and original size are recorded in `attributes.truncated`.",
    )
    max_depth: int = Field(
        32, ge=4, le=1000, description="Deepest nesting of objects and lists in one record."
    )


class RedactionConfig(Strict):
    """Secrets on command lines and in Engine data are replaced before the trail."""

    secret_names: list[str] = Field(
        default_factory=lambda: list(SECRET_NAME_PARTS),
        description="Parts of variable names (`-e`, `--env`, `--build-arg`) whose values "
        "are secrets; case-insensitive substrings.",
    )
    key_file: Path | None = Field(
        None,
        description="HMAC key (created 0600 on first use) that fingerprints redacted values. "
        "Default: the trail path with `.redact-key` in place of its suffix.",
    )


class DocktrailConfig(Strict):
    """The whole of `docktrail.yaml`."""

    host: str | None = Field(
        None, description="Host name recorded on events; default: this machine's host name."
    )
    trail: TrailConfig = Field(default_factory=TrailConfig, description="The embedded trail.")
    docker: DockerConfig = Field(default_factory=DockerConfig, description="Docker Engine.")
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="Prometheus metrics and health endpoint."
    )
    auditd: AuditdConfig = Field(default_factory=AuditdConfig, description="auditd source.")
    rules: RulesConfig = Field(default_factory=RulesConfig, description="Detection rules.")
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig, description="Alert delivery."
    )
    kafka: KafkaConfig | None = Field(None, description="Kafka trail sink; off when absent.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="CLI output.")
    input: InputConfig = Field(
        default_factory=InputConfig, description="Bounds on input lines and fields."
    )
    redaction: RedactionConfig = Field(
        default_factory=RedactionConfig, description="Redaction of secrets before the trail."
    )
    intents: IntentsConfig = Field(
        default_factory=IntentsConfig, description="Declared deployment intents."
    )
    posture: PostureConfig = Field(
        default_factory=PostureConfig, description="Continuous CIS posture checks."
    )
    proxy: ProxyConfig = Field(
        default_factory=ProxyConfig, description="Peer-credential Docker socket proxy."
    )
    exec_sessions: ExecSessionsConfig = Field(
        default_factory=ExecSessionsConfig,
        description="Commands run inside `docker exec` sessions, tied to the session's owner.",
    )

    def signing_key_path(self) -> Path:
        if self.trail.signing_key is not None:
            return self.trail.signing_key
        return self.trail.path.with_suffix(".key")

    def host_name(self) -> str:
        """The host name events are recorded under: `host`, else this machine's name."""
        return self.host or socket.gethostname()

    def redaction_key_path(self) -> Path:
        if self.redaction.key_file is not None:
            return self.redaction.key_file
        return self.trail.path.with_suffix(".redact-key")
