"""Audit records of the exec-session rules, written as auditd writes them (for tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

UNSET = 4294967295
EXEC_KEY = "docker-exec"


def _hex(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").hex().upper()


@dataclass
class AuditLog:
    """Builds an audit.log: each method appends one audit event (its records and EOE)."""

    start: float = 1_796_500_000.0
    serial: int = 1000
    lines: list[str] = field(default_factory=list)
    comms: dict[int, str] = field(default_factory=dict)  # pid -> its process name now

    def _stamp(self, at: float) -> str:
        self.serial += 1
        return f"audit({self.start + at:.3f}:{self.serial})"

    def _syscall(self, stamp: str, number: int, pid: int, ppid: int, comm: str, exe: str,
                 *, exit_value: int = 0, a0: str = "0", auid: int = UNSET, uid: int = 0,
                 items: int = 0, key: str = EXEC_KEY) -> str:  # fmt: skip
        return (
            f"type=SYSCALL msg={stamp}: arch=c000003e syscall={number} success=yes "
            f"exit={exit_value} a0={a0} a1=0 a2=0 a3=0 items={items} ppid={ppid} pid={pid} "
            f"auid={auid} uid={uid} gid=0 euid={uid} suid={uid} fsuid={uid} egid=0 sgid=0 "
            f'fsgid=0 tty=(none) ses=4294967295 comm="{comm}" exe="{exe}" key="{key}"'
        )

    def execve(self, at: float, pid: int, ppid: int, argv: list[str], *, cwd: str = "/",
               exe: str = "/bin/busybox", uid: int = 0, auid: int = UNSET,
               key: str = EXEC_KEY) -> None:  # fmt: skip
        stamp = self._stamp(at)
        comm = self.comms[pid] = argv[0].rsplit("/", 1)[-1][:15]
        args = " ".join(f"a{i}={_hex(arg)}" for i, arg in enumerate(argv))
        self.lines += [
            self._syscall(stamp, 59, pid, ppid, comm, exe, uid=uid, auid=auid, items=1, key=key),
            f"type=EXECVE msg={stamp}: argc={len(argv)} {args}",
            f'type=CWD msg={stamp}: cwd="{cwd}"',
            f"type=EOE msg={stamp}: ",
        ]

    def fork(self, at: float, pid: int, ppid: int) -> None:
        """`pid` (a child of `ppid`, named as it) forks."""
        stamp = self._stamp(at)
        comm = self.comms.setdefault(pid, self.comms.get(ppid, "sh"))
        self.lines += [
            self._syscall(stamp, 56, pid, ppid, comm, "/bin/busybox", exit_value=12, a0="1200011"),
            f"type=EOE msg={stamp}: ",
        ]

    def exit(self, at: float, pid: int, ppid: int, code: int = 0, comm: str | None = None) -> None:
        """`pid` ends; `comm`: the name it ends with (busybox applets run in-process)."""
        stamp = self._stamp(at)
        comm = comm or self.comms.get(pid) or self.comms.get(ppid, "sh")
        self.lines += [
            self._syscall(stamp, 231, pid, ppid, comm, "/bin/busybox", a0=f"{code:x}"),
            f"type=EOE msg={stamp}: ",
        ]

    def runc_exec(self, at: float, pid: int, shim: int, exec_id: str, container: str) -> None:
        state = f"/run/containerd/io.containerd.runtime.v2.task/moby/{container}"
        argv = ["runc", "--root", "/run/docker/runtime-runc/moby", "exec", "--process",
                "/tmp/runc-process1", "--detach", "--pid-file", f"{state}/{exec_id}.pid",
                container]  # fmt: skip
        self.execve(at, pid, shim, argv, exe="/usr/sbin/runc")

    def runc_init(self, at: float, pid: int, runc: int) -> None:
        self.execve(at, pid, runc, ["runc", "init"], exe="/usr/sbin/runc")

    def write(self, path: Path) -> Path:
        path.write_text("\n".join(self.lines) + "\n")
        return path
