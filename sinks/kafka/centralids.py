"""The ids a central trail gives the rows it stores from hosts' records.

A central id derives from the host row's (trail_id, seq, hash), so a record
received again (a publisher that crashed before storing its position, a
consumer that crashed before committing its offsets) finds its row stored and
is dropped. Two ways of making one, chosen once per central trail and kept in
its `source_state` (`IDS_STATE`):

- ``host-seq`` (central trails created since this module): the first 6 hex
  digits name the host trail (a digest of its trail_id), the next 10 are the
  host seq, the last 16 are the first digits of the digest below. One host's
  rows follow each other in the trail's unique id index, so a commit of many
  hosts' records dirties the last leaf of each host's run instead of one
  random leaf per row: the id index of a central trail of 10M events grows at
  its hosts' edges, as a host trail's time-ordered ids do
  (docs/trail-index-cost.md). The digest's 64 bits keep ids of different rows
  apart: a host that chose a trail_id whose first digits are another's would
  still have to match a digest of a row it has not seen.
- ``digest`` (central trails from before): `natural_id` of the same key, 128
  random bits. A trail that holds rows and no `IDS_STATE` has these ids, and
  keeps making them: a row stored under one scheme is not found under the
  other, and its record received again would be stored twice as a ``fork``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from config.errors import TrailError
from listener.model.event import natural_id

IDS_STATE = "fleet.ids"
Scheme = Literal["host-seq", "digest"]
_SCHEMES: tuple[Scheme, ...] = ("host-seq", "digest")
_SEQ_DIGITS = 10  # 40 bits: a trillion rows per host trail before the run wraps
_SEQ_MASK = (1 << (4 * _SEQ_DIGITS)) - 1


@dataclass(frozen=True, slots=True)
class CentralIds:
    """How this central trail names host rows (`scheme`, see the module docstring)."""

    scheme: Scheme

    @classmethod
    def of_trail(cls, states: Mapping[str, Mapping[str, Any]], *, empty: bool) -> CentralIds:
        """The scheme the trail's `source_state` records; for a trail without one, `host-seq`
        when it is `empty`, else `digest` (it was filled before schemes were recorded)."""
        state = states.get(IDS_STATE)
        if state is None:
            return cls("host-seq" if empty else "digest")
        scheme = state.get("scheme") if isinstance(state, Mapping) else state
        for known in _SCHEMES:
            if scheme == known:
                return cls(known)
        raise TrailError(f"source_state {IDS_STATE}: unknown id scheme {scheme!r}")

    def state(self) -> dict[str, str]:
        """What `of_trail` reads back: stored before the first row under this scheme."""
        return {"scheme": self.scheme}

    def event(self, trail_id: str, seq: int, digest: str) -> str:
        """The central id of the host event at `seq` with hash `digest`."""
        return self._id("fleet-event", trail_id, seq, digest)

    def alert(self, trail_id: str, seq: int, digest: str) -> str:
        """The central id of the host alert at `seq` with hash `digest`."""
        return self._id("fleet-alert", trail_id, seq, digest)

    def _id(self, kind: str, trail_id: str, seq: int, digest: str) -> str:
        random_id = natural_id(kind, trail_id, seq, digest)
        if self.scheme == "digest":
            return random_id
        return f"{_host_run(kind, trail_id)}{seq & _SEQ_MASK:0{_SEQ_DIGITS}x}{random_id[:16]}"


@lru_cache(maxsize=16_384)  # hosts a consumer hears from (`consume.max_hosts`: 10,000)
def _host_run(kind: str, trail_id: str) -> str:
    return natural_id(kind, trail_id)[:6]


HOST_ORDERED = CentralIds("host-seq")
"""The scheme of a new central trail."""
