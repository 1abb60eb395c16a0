"""Who is on the other end of a Unix socket: SO_PEERCRED and /proc, read at accept.

The pid can exit or be reused after the accept. At the accept the proxy takes
the credentials and the process start time (`peer_at_accept`: no thread, no
lock of the other process); the rest (`read_details`: cmdline takes the other
process's memory lock, names may ask NSS) is read off the event loop, and
trusted only if the pid still has that start time afterwards. `gone` records
that /proc no longer had the process (or had another one under its pid).
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
    peer = peer_at_accept(sock)
    read_details(peer)
    return peer


def peer_at_accept(sock: socket.socket) -> Peer:
    """The credentials and the start time that pins the pid: cheap, fit for the event loop.

    /proc/PID/stat takes no lock of the other process's memory (cmdline does).
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    peer = Peer(pid=pid, uid=uid, gid=gid)
    if pid > 0:
        peer.start_ticks = _current_start_ticks(pid)
        peer.gone = peer.start_ticks is None
    return peer


def read_details(peer: Peer) -> None:
    """Blocking (/proc, NSS): the rest, kept only if the pid still names the same process."""
    if peer.pid > 0 and not peer.gone:
        _read_proc(peer, f"/proc/{peer.pid}")
        if _current_start_ticks(peer.pid) != peer.start_ticks:
            _forget_process(peer)  # exited, and the pid may be another process's now
    peer.read_names()


def _current_start_ticks(pid: int) -> int | None:
    try:
        return _start_ticks(_read(f"/proc/{pid}/stat"))
    except (OSError, ValueError):
        return None


def _forget_process(peer: Peer) -> None:
    peer.auid = peer.ses = peer.exe = peer.cgroup = peer.container_id = None
    peer.argv = []
    peer.gone = True


def _read_proc(peer: Peer, base: str) -> None:
    try:
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
