"""What audit records say: the syscall tables, what counts as the daemon's own
housekeeping, and reading one event's ids, keys, syscall, operation and paths.
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from config.errors import InputError
from listener.sources.auditparse import (
    UNSET_ID,
    AuditEvent,
    AuditRecord,
    Malformed,
)

NS = 1_000_000_000
_AT_FDCWD = frozenset({"ffffff9c", "ffffffffffffff9c"})  # -100 as int32 or int64
# dockerd re-executes itself under these names to unpack layers chrooted into its
# data root: their absolute paths are inside the chroot.
DOCKERD_HELPERS = frozenset({"docker-untar", "docker-applyLayer", "docker-tar",
                              "docker-mountfrom"})  # fmt: skip
AUID_UNSET = frozenset({"4294967295", "-1", "unset"})
DAEMON_CONFIG_DIRS = ("/etc/docker/", "/etc/containerd/", "/etc/systemd/system/docker.service.d/",
                       "/etc/systemd/system/containerd.service.d/")  # fmt: skip
DAEMON_CONFIG_FILES = frozenset({
    "/etc/docker", "/etc/containerd", "/etc/default/docker", "/etc/sysconfig/docker",
    "/etc/docker/daemon.json", "/etc/containerd/config.toml",
})  # fmt: skip
UNIT_DIRS = ("/etc/systemd/system/", "/lib/systemd/system/", "/usr/lib/systemd/system/")
DOCKER_CLI_PATHS = frozenset({"/usr/bin/docker", "/usr/local/bin/docker"})
_O_WRITE = 0o1 | 0o2 | 0o100 | 0o1000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC

# Syscall numbers by audit arch, for logs without ENRICHED names (x86_64, aarch64).
_SYSCALLS: dict[str, dict[str, str]] = {
    "c000003e": {
        "2": "open", "257": "openat", "437": "openat2", "85": "creat", "76": "truncate",
        "77": "ftruncate", "82": "rename", "264": "renameat", "316": "renameat2",
        "87": "unlink", "263": "unlinkat", "84": "rmdir", "83": "mkdir", "258": "mkdirat",
        "86": "link", "265": "linkat", "88": "symlink", "266": "symlinkat", "90": "chmod",
        "91": "fchmod", "268": "fchmodat", "452": "fchmodat2", "92": "chown", "93": "fchown",
        "94": "lchown", "260": "fchownat", "188": "setxattr", "189": "lsetxattr",
        "190": "fsetxattr", "197": "removexattr", "198": "lremovexattr",
        "199": "fremovexattr", "132": "utime", "235": "utimes", "280": "utimensat",
        "261": "futimesat", "59": "execve", "322": "execveat", "133": "mknod",
        "259": "mknodat", "191": "getxattr", "192": "lgetxattr", "193": "fgetxattr",
        "194": "listxattr", "195": "llistxattr", "196": "flistxattr", "4": "stat", "6": "lstat",
        "21": "access", "89": "readlink", "262": "newfstatat", "267": "readlinkat",
        "269": "faccessat", "332": "statx", "439": "faccessat2",
    },
    "c00000b7": {
        "56": "openat", "437": "openat2", "45": "truncate", "46": "ftruncate",
        "38": "renameat", "276": "renameat2", "35": "unlinkat", "34": "mkdirat",
        "37": "linkat", "36": "symlinkat", "52": "fchmod", "53": "fchmodat", "55": "fchown",
        "54": "fchownat", "5": "setxattr", "6": "lsetxattr", "7": "fsetxattr",
        "14": "removexattr", "15": "lremovexattr", "16": "fremovexattr", "88": "utimensat",
        "221": "execve", "281": "execveat", "33": "mknodat", "8": "getxattr",
        "9": "lgetxattr", "10": "fgetxattr", "11": "listxattr", "12": "llistxattr",
        "13": "flistxattr", "48": "faccessat", "78": "readlinkat", "79": "newfstatat",
        "291": "statx", "439": "faccessat2",
    },
}  # fmt: skip
_OPERATIONS = {
    "execve": "exec", "execveat": "exec", "rename": "rename", "renameat": "rename",
    "renameat2": "rename", "unlink": "delete", "unlinkat": "delete", "rmdir": "delete",
    "mkdir": "create", "mkdirat": "create", "mknod": "create", "mknodat": "create",
    "link": "link", "linkat": "link", "symlink": "link", "symlinkat": "link",
    "truncate": "write", "ftruncate": "write", "creat": "write",
}  # fmt: skip
_ATTR_CALLS = ("chmod", "chown", "setxattr", "removexattr", "utime")
# Calls that only look at a file (`ls -l` reads its extended attributes): reads.
_READ_CALLS = frozenset({
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    "getxattrat", "listxattrat", "stat", "lstat", "fstat", "newfstatat", "fstatat64",
    "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "read", "pread64",
    "readv", "getdents", "getdents64", "chdir", "fchdir", "statfs", "fstatfs",
})  # fmt: skip
CLI_PROGRAMS = frozenset({"docker", "docker-compose"})
# Calls whose relative path is relative to a directory descriptor, not the cwd.
_AT_CALLS = frozenset({
    "openat", "openat2", "mkdirat", "mknodat", "unlinkat", "renameat", "renameat2", "linkat",
    "symlinkat", "fchmodat", "fchmodat2", "fchownat", "utimensat", "futimesat", "execveat",
})  # fmt: skip


def exec_with_title_only(event: AuditEvent) -> bool:
    """An exec logged without EXECVE (rules that drop it): PROCTITLE has the argv."""
    return event.first("PROCTITLE") is not None and syscall_name(event) in _EXEC_CALLS


_EXEC_CALLS = frozenset({"execve", "execveat"})
_PROCTITLE_MAX = 128  # bytes the kernel keeps of a command line in PROCTITLE


def argv_source_of(event: AuditEvent) -> dict[str, Any]:
    """Which record gave argv; PROCTITLE's may be cut by the kernel."""
    if event.first("EXECVE") is not None:
        return {"argv_source": "EXECVE"}
    title = event.proctitle or []
    cut = len("\0".join(title).encode("utf-8", "surrogateescape")) >= _PROCTITLE_MAX - 1
    return {"argv_source": "PROCTITLE", "argv_may_be_cut": cut}


def event_field(event: AuditEvent, syscall: AuditRecord | None, name: str) -> str | None:
    """``event.field(name)`` when its SYSCALL record is at hand."""
    if syscall is not None and (value := syscall.get(name)) is not None:
        return value
    return event.field(name)


def id_number(value: str | None) -> int | None:
    """An id field as int; None when absent, garbled, unset ((u32)-1) or beyond 64 bits."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return None if number == UNSET_ID or number >= 1 << 63 else number


def id_name(value: str | None) -> str | None:
    """An ENRICHED name; auditd writes "unset" and "unknown(N)" when it has none."""
    if value is None or value in ("unset", "?", "") or value.startswith("unknown("):
        return None
    return value


def event_audit_id(event: AuditEvent) -> str:
    return f"{event.node} {event.id}" if event.node else event.id


def event_keys(event: AuditEvent) -> frozenset[str]:
    """Keys of every record (a CONFIG_CHANGE carries its key, its SYSCALL none)."""
    return event.all_keys()


def event_title(event: AuditEvent) -> str | None:
    title = event.proctitle
    return shlex.join(title) if title else event.comm


def cli_target(call: Any) -> str | None:
    if call.command == "import":  # `import FILE|URL|- [REPOSITORY[:TAG]]`: the image made
        return str(call.image) if call.image else None
    if call.name:
        return str(call.name)
    if call.compose is not None:
        return str(call.compose.project) if call.compose.project else None
    return str(call.args[0]) if call.args else None


def syscall_name(event: AuditEvent) -> str:
    name = event.enriched_field("SYSCALL")
    if name:
        return name
    number = event.field("syscall") or "?"
    return _SYSCALLS.get(event.field("arch") or "", {}).get(number, f"syscall {number}")


def event_operation(event: AuditEvent, syscall: str) -> str:
    created = any(p.get("nametype") == "CREATE" for p in event.paths)
    if syscall in ("open", "openat", "openat2"):
        flags = event.field("a1" if syscall == "open" else "a2") or ""
        if syscall == "openat2" or not flags:
            return "create" if created else "open"
        try:
            writes = int(flags, 16) & _O_WRITE
        except ValueError:
            return "open"
        if not writes:
            return "read"
        return "create" if created else "write"
    operation = _OPERATIONS.get(syscall)
    if operation is not None:
        return operation
    if syscall in _READ_CALLS:
        return "read"
    if any(part in syscall for part in _ATTR_CALLS):
        return "attr"
    return syscall


def event_paths(event: AuditEvent, syscall: str) -> list[dict[str, Any]]:
    """PATH items; `resolved` is False for a name relative to a directory descriptor
    (the kernel then logs the PARENT as "/", which means nothing either)."""
    cwd = event.cwd or ""
    records = [
        r.fields for r in event.all("PATH") if r.fields.get("name", "") not in ("", "(null)")
    ]
    dirfd = syscall in _AT_CALLS and event.field("a0") not in _AT_FDCWD
    dirfd = dirfd and any(not f["name"].startswith("/") for f in records)
    items = []
    for fields in records:
        name = fields["name"]
        resolved = not dirfd and (name.startswith("/") or cwd.startswith("/"))
        if resolved and not name.startswith("/"):
            name = posixpath.normpath(posixpath.join(cwd, name))
        items.append(
            {
                "name": name,
                "resolved": resolved,
                "nametype": fields.get("nametype"),
                "inode": fields.get("inode"),
                "mode": fields.get("mode"),
                "ouid": fields.get("ouid"),
            }
        )
    return items


def primary_path(paths: list[dict[str, Any]]) -> str | None:
    """The object of the operation: the first item that is not a parent directory."""
    for item in paths:
        if item["nametype"] != "PARENT":
            return str(item["name"])
    return str(paths[0]["name"]) if paths else None


def malformed_error(bad: Malformed, path: str | None = None, line: int | None = None) -> InputError:
    where = path if path is not None else bad.path
    return InputError(bad.reason, path=where, line=line if line is not None else bad.line)
