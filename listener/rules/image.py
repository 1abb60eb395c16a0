"""The image trust policy: `untrusted-image` (CIS 4.x, 6.4).

References are normalised the way the Docker CLI does (`busybox` is
`docker.io/library/busybox:latest`) before they are matched against the
trusted glob patterns, so users write patterns in one canonical form.
"""

from __future__ import annotations

import fnmatch
import functools
import shlex
from collections.abc import Iterator

from config.models import UntrustedImageRule
from listener.argv import parse_docker_argv
from listener.model.catalogue import UNTRUSTED
from listener.model.event import Event
from listener.rules.base import Finding, RuleContext, finding

# Push sends an image that is already here: it was judged when it came.
IMAGE_ACTIONS = frozenset({"pull", "import", "load", "tag"})
_KNOWN_IMAGES_MAX = 50_000
_CACHED_MAX = 1_024  # references up to this long have their verdict remembered
# How long after a `docker build` call its steps may still create containers.
BUILD_WINDOW_NS = 600 * 1_000_000_000
BUILD_HOSTS_KEPT = 1024  # hosts whose last build is remembered: the latest ones
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
    # A host pulls and runs the same few images: each is judged once (a long made-up
    # reference, or an odd value, is judged afresh, and fails as it always did).
    judge = _cached_reason if type(reference) is str and len(reference) <= _CACHED_MAX else _reason
    return judge(reference, policy.require_digest, tuple(policy.trusted))


def _reason(reference: str, require_digest: bool, trusted: tuple[str, ...]) -> str | None:
    if reference.startswith("sha256:") or not reference:
        return "referenced by image id: no registry to trust"
    normal = normalize_reference(reference)
    if require_digest and "@sha256:" not in normal:
        return "not pinned by digest (require_digest)"
    if _matches_any(normal, trusted):
        return None
    return "registry/repository not in the trusted list"


_cached_reason = functools.lru_cache(maxsize=4_096)(_reason)


@functools.lru_cache(maxsize=4_096)
def _matches_any(normal: str, patterns: tuple[str, ...]) -> bool:
    """A host pulls and runs the same few images: each is matched against the globs once."""
    return any(fnmatch.fnmatchcase(normal, pattern) for pattern in patterns)


def check_untrusted_image(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    judged = _judged_references(event, ctx)
    if judged is None:
        return
    references, how = judged
    policy = ctx.rules.untrusted_image
    reasons = [untrusted_reason(ref, policy) for ref in references]
    if not references or None in reasons:
        return  # trusted under one of its names, or a build step of a trusted base
    reference, reason = references[0], reasons[0]
    shown = event.actor.image or reference if event.type == "container" else reference
    verb = _container_verb(event) if event.type == "container" else event.action
    found = finding(
        UNTRUSTED,
        event,
        f"untrusted image {shown} ({verb})",
        reference=reference,
        normalized=normalize_reference(reference),
        reason=reason,
        resolved_by=how,
    )
    found.image = shown  # the subject the channel dedups on: the image as the user named it
    yield found


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


# The event types `track_image` learns from: the engine does not call it for the others.
TRACKED_TYPES = ("image", "docker-cli")


def track_image(event: Event, ctx: RuleContext) -> None:
    """Remember the references of image ids (for containers created from a bare id), and
    when a `docker build` ran on each host (its steps' containers come from bare ids)."""
    if event.type == "docker-cli" and event.action == "build":
        builds: dict[str, int] = ctx.state.setdefault("builds", {})
        builds.pop(event.host, None)  # to the end: the least recent host is first
        builds[event.host] = event.time_ns
        if len(builds) > BUILD_HOSTS_KEPT:  # a log's made-up node= names
            del builds[next(iter(builds))]
        return
    if event.type != "image":
        return
    known: dict[str, set[str]] = ctx.state.setdefault("image-refs", {})
    image_id = str(event.attributes.get("image_id") or "")
    if not image_id and event.actor.id.startswith("sha256:"):
        image_id = event.actor.id
    if not image_id:
        return
    if event.action == "delete":
        known.pop(image_id, None)
        return
    refs = {r for r in event.attributes.get("repo_tags") or [] if isinstance(r, str)}
    refs |= {r for r in event.attributes.get("repo_digests") or [] if isinstance(r, str)}
    refs |= {r for r in (_image_reference(event),) if r}
    if refs:
        known.setdefault(image_id, set()).update(refs)
        if len(known) > _KNOWN_IMAGES_MAX:
            known.pop(next(iter(known)))


def _judged_references(event: Event, ctx: RuleContext) -> tuple[list[str], str] | None:
    """The references an event's image goes by, and how they were found; None: not judged."""
    if event.type == "image" and event.action in IMAGE_ACTIONS:
        reference = _image_reference(event)
        return ([reference], "event") if reference else None
    if event.type != "container" or event.action != "create":
        return None
    reference = event.actor.image or str(event.config.get("image") or "") or None
    if reference is None:
        return None
    if not _is_image_id(reference) and not _names_id_prefix(reference, event):
        return [reference], "event"
    return _resolve_id(reference, event, ctx)


def _names_id_prefix(reference: str, event: Event) -> bool:
    """`docker run 3f4a9c0b1d2e`: a short image id (inspect says which image it was), not a
    Docker Hub repository that would be trusted as docker.io/library/3f4a9c0b1d2e."""
    digest = str(event.config.get("image_digest") or "")
    if not digest.startswith(f"sha256:{reference}"):  # most creates: no digest to compare
        return False
    return len(reference) >= 4 and all(c in "0123456789abcdef" for c in reference)


def _resolve_id(image_id: str, event: Event, ctx: RuleContext) -> tuple[list[str], str] | None:
    """A container created from a bare image id: the names the trail or inspect knows."""
    config = event.config
    resolved = [str(r) for r in config.get("image_references") or []]
    if resolved:
        return resolved, "inspect"
    digests = [str(r) for r in config.get("image_repo_digests") or []]
    if digests:
        return digests, "inspect"
    known = ctx.state.get("image-refs", {})
    full = str(config.get("image_digest") or "") if not _is_image_id(image_id) else image_id
    full = full if full.startswith("sha256:") else f"sha256:{full}"
    refs = known.get(full) or next((v for k, v in known.items() if k.startswith(full)), None)
    if refs:
        return sorted(refs), "trail"
    if is_build_step(event, ctx):
        return [], "build-step"  # a classic build's step: judged at its base and its tag
    return [full], "none"


def is_build_step(event: Event, ctx: RuleContext) -> bool:
    """A container of a classic `docker build` step: created from a bare image id, and
    inspect says the image is an unnamed step, or attribution saw a `docker build` call
    at work (`attributes.build_call`), or one ran on the host lately."""
    if event.type != "container":
        return False
    image = event.actor.image or str(event.config.get("image") or "")
    if not image or not (_is_image_id(image) or _names_id_prefix(image, event)):
        return False
    if event.config.get("image_intermediate") or event.attributes.get("build_call"):
        return True
    last = ctx.state.get("builds", {}).get(event.host)
    return last is not None and 0 <= event.time_ns - last <= BUILD_WINDOW_NS


def named_reference(event: Event) -> str | None:
    """The image reference an event names itself (no resolution of bare ids): what the
    fleet view compares across hosts."""
    if event.type == "image" and event.action in IMAGE_ACTIONS:
        return _image_reference(event)
    if event.type == "container" and event.action == "create":
        reference = event.actor.image or str(event.config.get("image") or "")
        return reference if reference and not _is_image_id(reference) else None
    return None


def _image_reference(event: Event) -> str | None:
    """An image event's reference: `Actor.ID` names it on pull and push (with its tag or
    digest; `Attributes.name` is the bare repository), `name` on tag, load and import."""
    for candidate in (event.actor.id, event.actor.name):
        if candidate and not _is_image_id(candidate):
            return candidate
    return None


def _is_image_id(text: str) -> bool:
    bare = text.removeprefix("sha256:")
    return text.startswith("sha256:") or (
        len(bare) == 64 and all(c in "0123456789abcdef" for c in bare)
    )
