"""User and group names for audit ids, from the ENRICHED fields or a passwd-style file."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


# How often at most a missing id makes a file's mtime be looked at: an id that no
# file names (a container's user, a deleted login) is common, and a stat per
# event was a tenth of the cost of converting a docker CLI call.
RECHECK_SECS = 1.0


class IdNames:
    """uid/gid -> name from passwd/group files; read again when an id is missing and
    the file changed (users are added while the service runs; a change is seen
    within `RECHECK_SECS`)."""

    def __init__(self, passwd: Path | None, group: Path | None) -> None:
        self._users = _IdFile(passwd)
        self._groups = _IdFile(group)

    def user(self, uid: int | None) -> str | None:
        return self._users.name(uid)

    def group(self, gid: int | None) -> str | None:
        return self._groups.name(gid)

    def final(
        self,
        users: Iterable[tuple[int | None, str | None]],
        groups: Iterable[tuple[int | None, str | None]],
    ) -> bool:
        """Whether these (id, name) pairs are final: no id lacks a name that a later
        look-up could find (its file is there to be read again)."""
        return self._users.final(users) and self._groups.final(groups)

    @property
    def generation(self) -> tuple[int, int]:
        """Changes whenever a file is read again (a name may have changed)."""
        return self._users.reads, self._groups.reads


class _IdFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.names: dict[int, str] = {}
        self.mtime_ns: int | None = None
        self.checked: float | None = None  # time.monotonic() of the last look at the mtime
        self.reads = 0

    def name(self, number: int | None) -> str | None:
        if number is None or self.path is None:
            return None
        found = self.names.get(number)
        if found is None and self._changed():
            self.names = _read_id_file(self.path)
            self.reads += 1
            found = self.names.get(number)
        return found

    def final(self, pairs: Iterable[tuple[int | None, str | None]]) -> bool:
        return self.path is None or all(
            number is None or name is not None for number, name in pairs
        )

    def _changed(self) -> bool:
        assert self.path is not None
        now = time.monotonic()
        if self.checked is not None and now - self.checked < RECHECK_SECS:
            return False
        self.checked = now
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            mtime = -1
        changed, self.mtime_ns = mtime != self.mtime_ns, mtime
        return changed


def _read_id_file(path: Path) -> dict[int, str]:
    """`name:x:id:…` lines; the first name of an id wins (as getpwuid does)."""
    names: dict[int, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.warning("cannot read %s for user names: %s", path, exc.strerror or exc)
        return names
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names
