"""Image sprawl (CIS 6.4), container sprawl (6.5) and unbacked volumes (6.3).

Pure functions over the Engine's listings (and, for when an image was last
used, what the trail recorded): what could go, and a check row for each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from listener.posture.check import Check, Status

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
Listing = Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An image that could go, and why."""

    image_id: str
    names: tuple[str, ...]
    reason: str
    last_used_ns: int
    size: int


def _names(image: Mapping[str, Any]) -> tuple[str, ...]:
    tags = image.get("RepoTags") or []
    return tuple(str(t) for t in tags if t and not str(t).startswith("<none>"))


def image_candidates(
    images: Listing,
    containers: Listing,
    last_used_ns: Mapping[str, int],
    now_ns: int,
    unused_days: float,
) -> list[Candidate]:
    """Images no container uses whose last use (or creation) is older than `unused_days`,
    and dangling images. `last_used_ns` maps image ids to the last container event seen."""
    in_use = {str(c.get("ImageID") or "") for c in containers}
    horizon = now_ns - int(unused_days * _DAY_NS)
    found = []
    for image in images:
        image_id = str(image.get("Id") or "")
        if image_id in in_use:
            continue
        names = _names(image)
        created = int(image.get("Created") or 0) * _NS
        last = max(last_used_ns.get(image_id, 0), created)
        reason = "dangling" if not names else f"unused for {(now_ns - last) // _DAY_NS} days"
        if not names or last < horizon:
            found.append(Candidate(image_id, names, reason, last, int(image.get("Size") or 0)))
    return sorted(found, key=lambda c: c.last_used_ns)


def tag_sprawl(images: Listing, max_tags: int) -> dict[str, int]:
    """Repositories with more than `max_tags` tags: repository -> count."""
    counts = Counter(name.rsplit(":", 1)[0] for image in images for name in _names(image))
    return {repo: n for repo, n in sorted(counts.items()) if n > max_tags}


def image_check(candidates: Sequence[Candidate], sprawl: Mapping[str, int]) -> Check:
    if not candidates and not sprawl:
        return Check("image-sprawl", "6.4", "pass", "no unused or dangling images", 0)
    dangling = sum(c.reason == "dangling" for c in candidates)
    parts = [f"{len(candidates)} image(s) could go ({dangling} dangling)"]
    parts += [f"{repo}: {n} tags" for repo, n in sprawl.items()]
    items = tuple(c.names[0] if c.names else c.image_id[:19] for c in candidates)
    return Check("image-sprawl", "6.4", "warn", "; ".join(parts), len(candidates), items)


def container_check(containers: Listing, margin: int) -> Check:
    running = sum(str(c.get("State")) == "running" for c in containers)
    stopped = len(containers) - running
    detail = f"{running} running, {stopped} not running (margin {margin})"
    status: Status = "warn" if stopped > running + margin else "pass"
    return Check("container-sprawl", "6.5", status, detail, stopped - running)


@dataclass(frozen=True, slots=True)
class Unbacked:
    volume: str
    containers: tuple[str, ...]


def unbacked_volumes(
    containers: Listing, volumes: Iterable[Mapping[str, Any]], backup_labels: Sequence[str]
) -> list[Unbacked]:
    """Volumes of running containers with no backup label on the volume or the container."""
    labelled = {
        str(v.get("Name"))
        for v in volumes
        if any(label in (v.get("Labels") or {}) for label in backup_labels)
    }
    users: dict[str, list[str]] = {}
    for container in containers:
        if str(container.get("State")) != "running":
            continue
        if any(label in (container.get("Labels") or {}) for label in backup_labels):
            continue
        name = str((container.get("Names") or ["?"])[0]).lstrip("/")
        for mount in container.get("Mounts") or []:
            volume = str(mount.get("Name") or "")
            if mount.get("Type") == "volume" and volume and volume not in labelled:
                users.setdefault(volume, []).append(name)
    return [Unbacked(v, tuple(sorted(names))) for v, names in sorted(users.items())]


def backup_check(unbacked: Sequence[Unbacked]) -> Check:
    if not unbacked:
        return Check("volume-backups", "6.3", "pass", "every volume in use has a backup label", 0)
    detail = f"{len(unbacked)} volume(s) in use without a backup label"
    items = tuple(u.volume for u in unbacked)
    return Check("volume-backups", "6.3", "warn", detail, len(unbacked), items)
