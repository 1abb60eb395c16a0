"""Who is on the other end of a Unix socket: SO_PEERCRED, pinned at accept, and /proc.

The pid can exit or be reused after the accept. At the accept the proxy takes
the credentials and pins the process (`peer_at_accept`: a pidfd, or on
kernels without pidfds its start time; no thread, no lock of the other
process). The rest (`read_details`: cmdline takes the other process's memory
lock, names may ask NSS) is read off the event loop, before the first request
that is recorded, and kept only if the pinned process had not exited by the
end of the reads (`confirm_details`): then the pid named it all along. `gone`
records that it had (or that /proc no longer had it).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import select
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
    pidfd: int | None = None  # pins the process from the accept on (`release` closes it)
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

    def release(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None

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
    try:
        read_details(peer)
        confirm_details(peer)
    finally:
        peer.release()
    return peer


def peer_at_accept(sock: socket.socket, *, use_pidfd: bool = True) -> Peer:
    """The credentials, and the process pinned: cheap, fit for the event loop.

    Without a pidfd (`use_pidfd` False, or a kernel before 5.3) the pin is the
    start time from /proc/PID/stat, which takes no lock of the other process.
    """
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    peer = Peer(pid=pid, uid=uid, gid=gid)
    if pid > 0:
        try:
            if not use_pidfd:
                raise OSError("pidfds not used")
            peer.pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            peer.gone = True
        except (OSError, AttributeError):
            peer.start_ticks = _current_start_ticks(pid)
            peer.gone = peer.start_ticks is None
    return peer


def read_details(peer: Peer) -> None:
    """Blocking (/proc, NSS): the rest. With a pidfd, `confirm_details` must follow."""
    if peer.pid > 0 and not peer.gone:
        pinned = peer.start_ticks
        _read_proc(peer, f"/proc/{peer.pid}")
        started = _current_start_ticks(peer.pid)
        if pinned is None and peer.pidfd is not None:
            peer.start_ticks = started
        elif started != pinned:
            _forget_process(peer)  # exited, and the pid may be another process's now
    peer.read_names()


def confirm_details(peer: Peer) -> None:
    """Forgets what `read_details` read if the pinned process exited by now (the pid may
    have been another's during the reads). Non-blocking: where the pidfd is closed."""
    if peer.pidfd is not None and not peer.gone and _exited(peer.pidfd):
        _forget_process(peer)


def _exited(pidfd: int) -> bool:
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


def _current_start_ticks(pid: int) -> int | None:
    try:
        return _start_ticks(_read(f"/proc/{pid}/stat"))
    except (OSError, ValueError):
        return None


def _forget_process(peer: Peer) -> None:
    peer.auid = peer.ses = peer.exe = peer.cgroup = peer.container_id = None
    peer.start_ticks = None
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
