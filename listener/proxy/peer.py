"""Who is on the other end of a Unix socket: SO_PEERCRED and /proc, read at accept.

The pid can exit or be reused after the accept, so everything is read at once,
with the process start time; `gone` records that /proc no longer had it.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

UNSET_LOGINUID = 4294967295
MAX_CMDLINE = 4096
_CONTAINER_ID = re.compile(r"(?:docker[-/]|/docker/|containerd[-/].*?)([0-9a-f]{64})")


@dataclass(slots=True)
class Peer:
    pid: int
    uid: int
    gid: int
    auid: int | None = None
    ses: int | None = None
    exe: str | None = None
    argv: list[str] = field(default_factory=list)
    cgroup: str | None = None
    container_id: str | None = None
    container_name: str | None = None
    start_ticks: int | None = None
    gone: bool = False
    group_names: set[str] | None = None  # read at accept when the policy needs them
    login_name: str | None = None  # names are read at accept, off the event loop
    user_name: str | None = None

    @property
    def login(self) -> str | None:
        return self.login_name

    @property
    def user(self) -> str | None:
        return self.user_name

    def read_names(self) -> None:
        """Blocking (NSS): the login and user names of the uids."""
        self.login_name = _user_name(self.auid) if self.auid is not None else None
        self.user_name = _user_name(self.uid)

    def groups(self) -> set[str]:
        """Group names of the login (or, without one, of the effective user)."""
        name = self.login or self.user
        if name is None:
            return set()
        found = {g.gr_name for g in grp.getgrall() if name in g.gr_mem}
        with contextlib.suppress(KeyError):
            found.add(grp.getgrgid(pwd.getpwnam(name).pw_gid).gr_name)
        return found

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self.pid, "uid": self.uid, "gid": self.gid}
        if self.container_id:
            out["container"] = {"id": self.container_id, "name": self.container_name}
        if self.cgroup:
            out["cgroup"] = self.cgroup[:512]
        if self.gone:
            out["gone"] = True
        return out


def peer_of(sock: socket.socket) -> Peer:
    """Blocking (reads /proc): call it off the event loop."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    peer = Peer(pid=pid, uid=uid, gid=gid)
    if pid > 0:
        _read_proc(peer, f"/proc/{pid}")
    peer.read_names()
    return peer


def _read_proc(peer: Peer, base: str) -> None:
    try:
        peer.start_ticks = _start_ticks(_read(f"{base}/stat"))
        loginuid = int(_read(f"{base}/loginuid").strip() or UNSET_LOGINUID)
        peer.auid = None if loginuid == UNSET_LOGINUID else loginuid
        session = int(_read(f"{base}/sessionid").strip() or UNSET_LOGINUID)
        peer.ses = None if session == UNSET_LOGINUID else session
        raw_argv = _read(f"{base}/cmdline", MAX_CMDLINE)
        peer.argv = [arg for arg in raw_argv.split("\0") if arg][:256]
        peer.cgroup = _read(f"{base}/cgroup").strip()
        match = _CONTAINER_ID.search(peer.cgroup)
        peer.container_id = match.group(1) if match else None
        peer.exe = _exe(base)
    except (FileNotFoundError, ProcessLookupError):
        peer.gone = True
    except (OSError, ValueError):
        pass  # a field we may not read (another namespace): keep what we have


def _read(path: str, limit: int = 65536) -> str:
    with open(path, "rb") as handle:
        return handle.read(limit).decode("utf-8", "replace")


def _exe(base: str) -> str | None:
    try:
        return os.readlink(f"{base}/exe")
    except OSError:
        return None


def _start_ticks(stat: str) -> int | None:
    # comm (field 2) may hold spaces and parentheses: count from the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
