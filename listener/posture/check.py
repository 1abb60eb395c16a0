"""What one posture check found: the row of `docktrail posture`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "warn", "fail"]
STATUS_RANK: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class Check:
    """One check's outcome; `value` is what was seen (compared between sweeps)."""

    check: str
    cis: str
    status: Status
    detail: str
    value: Any = None
    items: tuple[str, ...] = field(default=())  # the subjects (paths, images, volumes)

    def worse_than(self, previous_status: str | None) -> bool:
        """Whether this outcome is worse than `previous_status` (None: never seen)."""
        if previous_status is None:
            return self.status == "fail"
        return STATUS_RANK[self.status] > STATUS_RANK.get(previous_status, 0)
