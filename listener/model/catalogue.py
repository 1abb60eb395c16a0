"""The rule catalogue: every host rule's id, default severity, CIS item and description.

Rule ids are a contract (users write them in configuration; DESIGN.md lists
them). The catalogue sits in the model so that notifiers and sinks can name a
rule without importing the rules; `listener.rules` attaches a check to each.
"""

from __future__ import annotations

from collections.abc import Mapping

from listener.model.finding import RuleMeta

CONFIG_ACTIONS = frozenset({"create", "observed", "posture"})
# The types of the events the audit source makes (listener.sources.auditd.convert) but
# an exec session's commands, which only come with them: an indexed "any audit record?".
AUDIT_EVENT_TYPES = ("docker-cli", "daemon-file", "audit", "audit-rule")

# --------------------------------------------------------------------------- container

PRIVILEGED = RuleMeta(
    "privileged-container",
    "critical",
    "5.5",
    "Container runs --privileged.",
    actions=CONFIG_ACTIONS,
)

SOCKET_MOUNT = RuleMeta(
    "docker-socket-mount",
    "critical",
    "5.32",
    "The Docker or containerd socket is mounted (by its path, the Engine's real socket, a "
    "directory holding it, a source that is a socket, or onto docker.sock inside): the "
    "container controls the host.",
    actions=CONFIG_ACTIONS,
)

SENSITIVE_MOUNT = RuleMeta(
    "sensitive-mount",
    "high",
    "5.6",
    "A sensitive host directory is mounted into the container.",
    actions=CONFIG_ACTIONS,
)

DANGEROUS_CAPABILITY = RuleMeta(
    "dangerous-capability",
    "high",
    "5.4",
    "A dangerous Linux capability is added.",
    actions=CONFIG_ACTIONS,
)

HOST_NAMESPACE = RuleMeta(
    "host-namespace",
    "high",
    "5.10, 5.16, 5.17, 5.21, 5.31",
    "The container shares a namespace with the host.",
    actions=CONFIG_ACTIONS,
)

SECURITY_PROFILE = RuleMeta(
    "security-profile-disabled",
    "high",
    "5.2, 5.22",
    "seccomp, AppArmor or SELinux confinement is disabled.",
    actions=CONFIG_ACTIONS,
)

NO_LIMITS = RuleMeta(
    "no-resource-limits",
    "low",
    "5.11, 5.29",
    "No memory or pids limit is set.",
    actions=CONFIG_ACTIONS,
)

WRITABLE_ROOTFS = RuleMeta(
    "writable-rootfs",
    "low",
    "5.13",
    "The root file system is not read-only.",
    actions=CONFIG_ACTIONS,
)

RUNS_AS_ROOT = RuleMeta(
    "runs-as-root", "low", "4.1", "The container's process runs as root.", actions=CONFIG_ACTIONS
)

# --------------------------------------------------------------------------- image

UNTRUSTED = RuleMeta(
    "untrusted-image",
    "high",
    "4.2, 6.4",
    "An image outside the trusted registries is pulled, imported, loaded, tagged or run "
    "(a container created from a bare image id is judged by the names the trail or inspect "
    "gives that id; the steps of a classic build by their base and final tag).",
    types=frozenset({"image", "container"}),
    # a container's create, an image's arrivals (`listener.rules.image.IMAGE_ACTIONS`)
    actions=frozenset({"create", "pull", "import", "load", "tag"}),
)

# --------------------------------------------------------------------------- activity

EXEC = RuleMeta(
    "exec-in-container",
    "medium",
    "5.23, 5.24",
    "A process is exec'd into a running container (high when as root, privileged or a shell).",
    actions=frozenset({"exec_start"}),
)

CHURN = RuleMeta(
    "container-churn",
    "medium",
    "6.5",
    "More container creates/destroys per window than usual.",
    actions=frozenset({"create", "destroy"}),
)

SPRAWL = RuleMeta(
    "container-sprawl",
    "low",
    "6.5",
    "Stopped containers exceed running ones by the margin.",
    actions=frozenset({"die", "start", "destroy"}),
)

DAEMON_FILE = RuleMeta(
    "daemon-config-change",
    "high",
    "1.1.x",
    "A Docker daemon file (configuration, unit, binary) was changed.",
    types=frozenset({"daemon-file"}),
)

UNATTRIBUTED = RuleMeta(
    "unattributed-change", "medium", "-", "A container change that no login can be tied to."
)

ATTRIBUTION_MISMATCH = RuleMeta(
    "attribution-mismatch",
    "medium",
    "-",
    "An audit.who label claims someone other than the login auditd saw create the container.",
    actions=frozenset({"create"}),
)

# --------------------------------------------------------------------------- intent

INTENT_MISMATCH = RuleMeta(
    "intent-mismatch",
    "high",
    "-",
    "A create matching a declared intent by another login than the declared one.",
    actions=frozenset({"create"}),
)

EXPIRED = RuleMeta(
    "expired-deployment",
    "medium",
    "-",
    "A container still running after its declared expiry (intent or audit.expires).",
    actions=frozenset({"expired"}),
)

UNDECLARED = RuleMeta(
    "undeclared-deployment",
    "medium",
    "-",
    "A create in scope that matches no intent and carries no why label.",
    actions=frozenset({"create"}),
)

PROXY_REFUSAL = RuleMeta(
    "proxy-refusal",
    "high",
    "-",
    "The socket proxy refused an API call (its policy, or a trail it could not write).",
    types=frozenset({"api-call"}),
    actions=frozenset({"refused"}),
)

# Posture: the checks run in `listener.posture`; these judge the events they record.
POSTURE = frozenset({"posture"})
DAEMON_POSTURE = RuleMeta(
    "daemon-posture",
    "high",
    "2.x",
    "A daemon security setting got worse (icc, userns, live-restore, TLS, registries …).",
    types=frozenset({"daemon"}),
    actions=POSTURE,
)

AUDIT_RULE_POSTURE = RuleMeta(
    "audit-rule-posture",
    "high",
    "1.1.x",
    "An audit watch docktrail needs on Docker's files is not loaded.",
    types=frozenset({"audit-rules"}),
    actions=POSTURE,
)

HOST_POSTURE = RuleMeta(
    "host-posture",
    "medium",
    "6.x",
    "Operations posture got worse or stays poor (daily): image sprawl (6.4), container "
    "sprawl (6.5), volumes without backups (6.3), containers without limits using much "
    "of the host (6.2).",
    types=frozenset({"host"}),
    actions=POSTURE,
)

CONTAINER_DRIFT = RuleMeta(
    "container-drift",
    "high",
    "5.13",
    "Files added or changed in a running container where binaries, libraries or "
    "configuration live (bin/, sbin/, lib/, etc/).",
    actions=frozenset({"drift"}),
)

# Exec sessions: commands run inside `docker exec` sessions (`exec-command` events).
EXEC_COMMAND_ACTIONS = frozenset({"exec-command"})
EXEC_CODE_FETCH = RuleMeta(
    "exec-code-fetch",
    "high",
    "5.23",
    "A command in an exec session fetched code and ran it (curl/wget piped to a shell, "
    "run from $(curl …), or downloaded and executed).",
    actions=EXEC_COMMAND_ACTIONS,
)
EXEC_PACKAGE_MANAGER = RuleMeta(
    "exec-package-manager",
    "medium",
    "5.23, 4.x",
    "A package manager installed or removed software in a running container (apt, apk, "
    "yum, dnf, pip, npm …): the container no longer matches its image.",
    actions=EXEC_COMMAND_ACTIONS,
)
EXEC_CREDENTIAL_READ = RuleMeta(
    "exec-credential-read",
    "high",
    "5.23",
    "A command in an exec session touched credential files (/etc/shadow, SSH keys, cloud "
    "and registry credentials, mounted secrets); medium without a terminal.",
    actions=EXEC_COMMAND_ACTIONS,
)
EXEC_BINARY_EDIT = RuleMeta(
    "exec-binary-edit",
    "high",
    "5.13",
    "A command in an exec session wrote, replaced or removed files where binaries and "
    "libraries live (drift by hand).",
    actions=EXEC_COMMAND_ACTIONS,
)
EXEC_ROOT_SHELL = RuleMeta(
    "exec-root-shell",
    "medium",
    "5.23, 5.24",
    "An interactive shell as root at a terminal inside a container (once per session).",
    actions=EXEC_COMMAND_ACTIONS,
)

# The host rules, in the order the engine applies them (`listener.rules.registry`).
HOST_RULES: tuple[RuleMeta, ...] = (
    PRIVILEGED,
    SOCKET_MOUNT,
    SENSITIVE_MOUNT,
    DANGEROUS_CAPABILITY,
    HOST_NAMESPACE,
    SECURITY_PROFILE,
    UNTRUSTED,
    EXEC,
    CHURN,
    SPRAWL,
    DAEMON_FILE,
    NO_LIMITS,
    WRITABLE_ROOTFS,
    RUNS_AS_ROOT,
    UNATTRIBUTED,
    ATTRIBUTION_MISMATCH,
    INTENT_MISMATCH,
    EXPIRED,
    UNDECLARED,
    PROXY_REFUSAL,
    DAEMON_POSTURE,
    AUDIT_RULE_POSTURE,
    CONTAINER_DRIFT,
    HOST_POSTURE,
    EXEC_CODE_FETCH,
    EXEC_PACKAGE_MANAGER,
    EXEC_CREDENTIAL_READ,
    EXEC_BINARY_EDIT,
    EXEC_ROOT_SHELL,
)
HOST_RULES_BY_ID: Mapping[str, RuleMeta] = {meta.id: meta for meta in HOST_RULES}
