"""The image trust policy: `untrusted-image` (CIS 4.x, 6.4).

References are normalised the way the Docker CLI does (`busybox` is
`docker.io/library/busybox:latest`) before they are matched against the
trusted glob patterns, so users write patterns in one canonical form.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Iterator

from config.models import UntrustedImageRule
from listener.argv import parse_docker_argv
from listener.event import Event
from listener.rules.base import Finding, RuleContext, RuleMeta, finding

UNTRUSTED = RuleMeta(
    "untrusted-image",
    "high",
    "4.2, 6.4",
    "An image outside the trusted registries is pulled, imported, loaded, tagged or run.",
    types=frozenset({"image", "container"}),
)

IMAGE_ACTIONS = frozenset({"pull", "import", "load", "tag", "push"})
DEFAULT_REGISTRY = "docker.io"


def normalize_reference(reference: str) -> str:
    """`busybox` → `docker.io/library/busybox:latest`; ids are returned unchanged."""
    if reference.startswith("sha256:"):
        return reference
    name, at, digest = reference.partition("@")
    first, slash, _ = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        name = f"{DEFAULT_REGISTRY}/{name}" if slash else f"{DEFAULT_REGISTRY}/library/{name}"
    last = name.rpartition("/")[2]
    if ":" not in last and not at:
        name += ":latest"
    return name + (at + digest if at else "")


def untrusted_reason(reference: str, policy: UntrustedImageRule) -> str | None:
    """Why `reference` is outside the policy, or None when it is trusted."""
    if reference.startswith("sha256:") or not reference:
        return "referenced by image id: no registry to trust"
    normal = normalize_reference(reference)
    if policy.require_digest and "@sha256:" not in normal:
        return "not pinned by digest (require_digest)"
    if any(fnmatch.fnmatchcase(normal, pattern) for pattern in policy.trusted):
        return None
    return "registry/repository not in the trusted list"


def check_untrusted_image(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    reference = _reference(event)
    if reference is None:
        return
    reason = untrusted_reason(reference, ctx.rules.untrusted_image)
    if reason is None:
        return
    verb = _container_verb(event) if event.type == "container" else event.action
    yield finding(
        UNTRUSTED,
        event,
        f"untrusted image {reference} ({verb})",
        reference=reference,
        normalized=normalize_reference(reference),
        reason=reason,
    )


def _container_verb(event: Event) -> str:
    """`run`, `create`, `compose up` … as the CLI call behind the create said; a create
    with no CLI call behind it (the raw API, an SDK) is just a create."""
    if event.who.method != "auditd-cli" or not event.who.command:
        return "create"
    try:
        argv = shlex.split(event.who.command)
    except ValueError:
        return "create"
    return parse_docker_argv(argv).command or "create"


def _reference(event: Event) -> str | None:
    if event.type == "image" and event.action in IMAGE_ACTIONS:
        name = event.actor.name or ""
        # An import names only the new image id; the tag that follows carries the reference.
        return None if name.startswith("sha256:") or not name else name
    if event.type == "container" and event.action == "create":
        return event.actor.image or str(event.config.get("image") or "") or None
    return None
