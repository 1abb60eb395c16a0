"""Container drift: files added or changed in running containers (golden images).

A periodic `docker diff`, budgeted: at most `containers_per_sweep` containers
per sweep, round robin, and no new diff after `time_budget_secs`. Paths under
a declared mount (volume, bind, tmpfs) are the container's data, not drift.
A container's drift is recorded when its set of changed paths differs from
the last one recorded; the event id derives from that set, so a restart of
docktrail stores the same drift once.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from config.errors import SourceError
from config.posture import DriftConfig
from listener.bounds import bound_event
from listener.model.event import Actor, Event, natural_id
from listener.posture.upperdir import ExecScan, executables, upper_dir

log = logging.getLogger(__name__)

DRIFT_ACTION = "drift"
_KINDS = {0: "changed", 1: "added", 2: "deleted"}
# Changes here alter what runs: binaries, libraries, configuration.
CRITICAL_PREFIXES = (
    "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/etc/", "/usr/bin/",
    "/usr/sbin/", "/usr/lib/", "/usr/lib64/", "/usr/local/bin/", "/usr/local/sbin/",
    "/usr/local/lib/",
)  # fmt: skip


def _under(path: str, directory: str) -> bool:
    directory = directory.rstrip("/")
    return path == directory or path.startswith(directory + "/")


def drifted(
    changes: Iterable[Mapping[str, Any]], mount_points: Sequence[str]
) -> list[tuple[str, str]]:
    """(kind, path) of the changes outside the declared mounts, sorted by path.

    A directory whose only change is a file below it (`C /usr/bin` for
    `A /usr/bin/x`) says nothing more and is left out.
    """
    found = [
        (_KINDS.get(int(change.get("Kind", 0)), "changed"), str(change.get("Path") or ""))
        for change in changes
    ]
    found = [(k, p) for k, p in found if p and not any(_under(p, m) for m in mount_points)]
    paths = {p for _, p in found}
    return sorted(
        (
            (k, p)
            for k, p in found
            if not (k == "changed" and any(_under(o, p) and o != p for o in paths))
        ),
        key=lambda item: item[1],
    )


def critical(found: Iterable[tuple[str, str]]) -> list[str]:
    """Paths added or changed where binaries, libraries and configuration live."""
    return [
        path
        for kind, path in found
        if kind != "deleted" and any(_under(path, prefix) for prefix in CRITICAL_PREFIXES)
    ]


class DriftWatch:
    """Round-robin, budgeted diffs of running containers."""

    def __init__(self, config: DriftConfig, host: str) -> None:
        self.config = config
        self.host = host
        self._last: dict[str, str] = {}  # container id -> fingerprint recorded
        self._next = 0  # where the round robin resumes

    def sweep(self, engine: Any, listed: Sequence[Mapping[str, Any]], reason: str) -> list[Event]:
        """Blocking: diffs the next running containers within the budget; their events."""
        # Removed containers' fingerprints go (a CI host removes thousands); stopped ones
        # stay listed, so a restarted container's drift is not recorded again.
        present = {str(c["Id"]) for c in listed}
        self._last = {cid: mark for cid, mark in self._last.items() if cid in present}
        running = sorted(
            (c for c in listed if str(c.get("State")) == "running"), key=lambda c: str(c["Id"])
        )
        if not running or not self.config.enabled:
            return []
        deadline = time.monotonic() + self.config.time_budget_secs
        events = []
        count = min(self.config.containers_per_sweep, len(running))
        start = self._next
        for step in range(count):
            if time.monotonic() > deadline:
                break
            item = running[(start + step) % len(running)]
            try:
                event = self._check(engine, item, reason, deadline)
            except SourceError as exc:
                # A container removed since the listing (an `--rm` that exited) is
                # gone, not a reason to lose the other containers' drift.
                log.warning(f"container drift of {str(item['Id'])[:12]} skipped: {exc}")
                event = None
            if event is not None:
                events.append(event)
            self._next = (start + step + 1) % len(running)
        return events

    def _check(
        self, engine: Any, item: Mapping[str, Any], reason: str, deadline: float
    ) -> Event | None:
        cid = str(item["Id"])
        changes = engine.api(f"cannot diff {cid[:12]}", lambda client: client.diff(cid)) or []
        mounts = [str(m.get("Destination") or "") for m in item.get("Mounts") or []]
        found = drifted(changes, [m for m in mounts if m])
        scan = self._scan(engine, cid, found, deadline)
        # Without executables the id is what it was before modes were read.
        keyed: object = (found, scan.executables) if scan.executables else found
        fingerprint = hashlib.sha256(repr(keyed).encode()).hexdigest()[:16]
        previous = self._last.get(cid)
        if previous == fingerprint or (previous is None and not found):
            return None
        self._last[cid] = fingerprint
        return self._event(item, found, fingerprint, reason, scan)

    def _scan(
        self, engine: Any, cid: str, found: list[tuple[str, str]], deadline: float
    ) -> ExecScan:
        """Which added or changed paths are executable files, from the overlay2 upper dir."""
        written = [path for kind, path in found if kind != "deleted"]
        if not written or not self.config.read_modes:
            return ExecScan("not read")
        try:
            inspect = engine.inspect_container(cid)
        except SourceError as exc:  # the diff stands without modes
            return ExecScan(f"not read: {exc}")
        upper, why = upper_dir(inspect)
        if upper is None:
            return ExecScan(why)
        return executables(upper, written, self.config.max_stat_paths, deadline)

    def _event(
        self,
        item: Mapping[str, Any],
        found: list[tuple[str, str]],
        fingerprint: str,
        reason: str,
        scan: ExecScan,
    ) -> Event:
        cid = str(item["Id"])
        cap = self.config.max_paths
        names = item.get("Names") or []
        # Paths are named inside the container, by whoever controls it: bounded.
        return bound_event(
            Event(
                id=natural_id("docktrail", self.host, "container", DRIFT_ACTION, cid, fingerprint),
                time_ns=time.time_ns(),
                source="docktrail",
                host=self.host,
                type="container",
                action=DRIFT_ACTION,
                actor=Actor(
                    id=cid,
                    name=str(names[0]).lstrip("/") if names else None,
                    image=str(item.get("Image") or "") or None,
                ),
                attributes={
                    "paths": [f"{kind} {path}" for kind, path in found[:cap]],
                    "count": len(found),
                    "critical": critical(found)[:cap],
                    "executables": list(scan.executables[:cap]),
                    "modes": scan.scan + (" (truncated)" if scan.truncated else ""),
                    "fingerprint": fingerprint,
                    "reason": reason,
                },
            ),
            surrogates="escape",
        )
