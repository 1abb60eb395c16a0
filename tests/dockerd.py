"""A private Docker daemon for tests: real dockerd, temporary everything.

`Dockerd` runs `containerd` and `dockerd` as root on a temporary unix socket,
data root, exec root, pidfile and config file, so that it never touches (or
is disturbed by) a system daemon, another test run, or a previous one that
crashed. Why our own containerd: dockerd 20.10 silently uses
/run/containerd/containerd.sock when something listens there instead of
starting its own, which would share containers with that daemon.

No bridge and no iptables (`--bridge=none --iptables=false --ip6tables=false`):
tests must not change the host's network. User-defined networks still work.

`stop()` leaves nothing behind: processes, mounts under the roots (overlay,
netns, the data root's own bind mount) and directories. After `kill()` (a
crash) a `restart()` brings the same daemon back on the same state.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

BUSYBOX_REF = "registry.internal/base/busybox:1.36"
BUSYBOX_APPLETS = ("sh", "sleep", "echo", "cat", "ls", "id", "true")
_BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")

_MNT_DETACH = 2
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
# Unix socket paths are limited to 108 bytes; containerd's ttrpc socket is the longest.
_MAX_SOCKET_PATH = 100


class DockerdError(RuntimeError):
    """The private daemon could not be started or stopped."""


def unavailable_reason() -> str | None:
    """Why a private dockerd cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "a private dockerd needs root"
    for binary in ("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker"):
        if shutil.which(binary) is None:
            return f"`{binary}` is not installed (Debian: docker.io)"
    if busybox_path() is None:
        return "a static busybox is not installed (Debian: busybox-static)"
    return None


def busybox_path() -> Path | None:
    """A statically linked busybox (a dynamic one cannot run in an empty rootfs)."""
    for candidate in _BUSYBOX_CANDIDATES:
        path = Path(candidate)
        if path.is_file() and _is_static_elf(path):
            return path
    return None


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit little-endian ELF without a PT_INTERP (dynamic loader)."""
    with open(path, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    types = (struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum))
    return 3 not in types  # PT_INTERP


def busybox_rootfs_tar() -> bytes:
    """A root file system with the static busybox and its applets as symlinks."""
    busybox = busybox_path()
    if busybox is None:
        raise DockerdError("no static busybox found")
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    applets = sorted(set(listed.stdout.split()) | set(BUSYBOX_APPLETS))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
            tar.addfile(
                _tar_entry(directory, tarfile.DIRTYPE, mode=0o1777 if directory == "tmp" else 0o755)
            )
        tar.add(str(busybox), arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                tar.addfile(_tar_entry(f"bin/{applet}", tarfile.SYMTYPE, link="busybox"))
        _add_file(tar, "etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
        _add_file(tar, "etc/group", "root:x:0:\n")
    return buffer.getvalue()


def _tar_entry(name: str, kind: bytes, *, mode: int = 0o777, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.mtime = int(time.time())
    return info


def _add_file(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = _tar_entry(name, tarfile.REGTYPE, mode=0o644)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = str(socket_path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._socket_path)
        self.sock = sock


class Dockerd:
    """One private containerd + dockerd pair; see the module docstring."""

    def __init__(
        self,
        *,
        start_timeout: float = 60.0,
        stop_timeout: float = 30.0,
        extra_args: tuple[str, ...] = (),
        launcher: tuple[str, ...] = (),
    ) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_args = extra_args
        self.launcher = launcher  # e.g. `unshare --net`: dockerd in a network namespace of its own
        self.root = Path(tempfile.mkdtemp(prefix="dtd-", dir=_short_tmp()))
        self._dockerd: subprocess.Popen[bytes] | None = None
        self._containerd: subprocess.Popen[bytes] | None = None
        self._prepare_dirs()

    # ------------------------------------------------------------------ paths

    @property
    def socket_path(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def containerd_socket(self) -> Path:
        return self.root / "containerd" / "containerd.sock"

    @property
    def env(self) -> dict[str, str]:
        """The environment for the real `docker` CLI (and docker-py) against this daemon."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        env["DOCKER_HOST"] = self.host
        env["DOCKER_CONFIG"] = str(self.root / "cli-config")  # not the user's contexts
        return env

    @property
    def pid(self) -> int | None:
        return self._dockerd.pid if self._dockerd is not None else None

    def _prepare_dirs(self) -> None:
        for sub in ("data", "exec", "containerd/root", "containerd/state", "cli-config"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        # `{}` plus, for dockerd < 23, the trust key path: its default is /etc/docker/key.json.
        config: dict[str, str] = {}
        if _dockerd_major() < 23:
            config["deprecated-key-path"] = str(self.root / "key.json")
        (self.root / "daemon.json").write_text(json.dumps(config))
        (self.root / "containerd" / "config.toml").write_text(self._containerd_config())
        if len(str(self.containerd_socket)) + len(".ttrpc") > _MAX_SOCKET_PATH:
            raise DockerdError(f"{self.root} is too long a path for unix sockets")

    def _containerd_config(self) -> str:
        base = self.root / "containerd"
        return "\n".join(
            [
                "version = 2",
                f'root = "{base / "root"}"',
                f'state = "{base / "state"}"',
                'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                "[grpc]",
                f'  address = "{self.containerd_socket}"',
                "[ttrpc]",
                f'  address = "{self.containerd_socket}.ttrpc"',
                "[debug]",
                '  address = ""',  # the default is /run/containerd/debug.sock: shared
                "[metrics]",
                '  address = ""',
                "",
            ]
        )

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Starts containerd (if not running) and dockerd; returns when /_ping answers."""
        if self._dockerd is not None and self._dockerd.poll() is None:
            raise DockerdError("dockerd is already running")
        if self._containerd is None or self._containerd.poll() is not None:
            self._start_containerd()
        self._start_dockerd()

    def stop(self) -> None:
        """Stops both daemons and removes every trace: processes, mounts, directories."""
        try:
            self._kill_running_containers()
            bridges = self._network_bridges()
            self._stop_dockerd()
            _delete_links(bridges)  # dockerd leaves them behind; the address pools run out
            self._kill_leftover_tasks()
            self._terminate(self._containerd, "containerd")
            self._containerd = None
            self._kill_leftover_tasks()
        finally:
            unmount_under(self.root)
            shutil.rmtree(self.root, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILLs dockerd (a crash): containerd, containers and mounts stay."""
        if self._dockerd is not None:
            self._dockerd.kill()
            self._dockerd.wait()
            self._dockerd = None

    def restart(self) -> None:
        """Stops dockerd (if running) and starts it again on the same roots and socket.

        After `kill()`, dockerd (without live-restore) stops the containers that
        kept running, each with its stop timeout: give containers of crash tests
        `--stop-timeout 1` (or `--init`) or the restart takes 10 s per container.
        """
        self._stop_dockerd()
        self._start_dockerd()

    def __enter__(self) -> Dockerd:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ clients

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            status, body = self.api_get("/_ping", timeout=timeout)
        except OSError:
            return False
        return status == 200 and body == b"OK"

    def api_get(self, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
        """A raw GET on the Engine API (e.g. `/v1.41/events?since=…&until=…`)."""
        connection = _UnixHTTPConnection(self.socket_path, timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def session(self, timeout: float = 30.0) -> EngineSession:
        """A kept-alive API connection, for bursts of calls (hundreds per second)."""
        return EngineSession(self.socket_path, timeout)

    def record_events(self) -> EventsRecorder:
        """A raw `/events` reader in a thread: the ground truth of what the Engine said."""
        return EventsRecorder(self)

    def docker(self, *args: str, input: bytes | None = None, check: bool = True) -> str:
        """Runs the real docker CLI against this daemon; returns stdout."""
        result = subprocess.run(
            ["docker", *args], input=input, env=self.env, capture_output=True, timeout=120
        )
        if check and result.returncode != 0:
            raise DockerdError(
                f"docker {' '.join(args)} failed ({result.returncode}): "
                f"{result.stderr.decode(errors='replace').strip()}"
            )
        return result.stdout.decode(errors="replace")

    def import_busybox(self, image_ref: str = BUSYBOX_REF) -> str:
        """`docker import` of a busybox rootfs as `image_ref`; returns the image id."""
        output = self.docker(
            "import", "--change", 'CMD ["sh"]', "-", image_ref, input=busybox_rootfs_tar()
        )
        return output.strip()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no dockerd log)"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ internals

    def _start_containerd(self) -> None:
        base = self.root / "containerd"
        with open(base / "containerd.log", "ab") as log:
            self._containerd = _spawn(["containerd", "--config", str(base / "config.toml")], log)
        _wait_for(
            lambda: self.containerd_socket.exists(),
            self.start_timeout,
            lambda: self._containerd is not None and self._containerd.poll() is not None,
            lambda: f"containerd did not start:\n{_tail(base / 'containerd.log')}",
        )

    def _start_dockerd(self) -> None:
        command = [
            *self.launcher,
            "dockerd",
            f"--host={self.host}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.root / 'dockerd.pid'}",
            f"--config-file={self.root / 'daemon.json'}",
            f"--containerd={self.containerd_socket}",
            "--bridge=none",
            "--iptables=false",
            "--ip6tables=false",
            *self.extra_args,
        ]
        with open(self.log_path, "ab") as log:
            self._dockerd = _spawn(command, log)
        _wait_for(
            self.ping,
            self.start_timeout,
            lambda: self._dockerd is not None and self._dockerd.poll() is not None,
            lambda: f"dockerd did not answer /_ping on {self.host}:\n{self.log_tail()}",
        )

    def _kill_running_containers(self) -> None:
        # On SIGTERM dockerd stops each container with its stop timeout (10 s by
        # default, and `sleep` as PID 1 ignores SIGTERM): at teardown, SIGKILL them first.
        if self._dockerd is None or self._dockerd.poll() is not None:
            return
        with contextlib.suppress(DockerdError, subprocess.TimeoutExpired):
            running = self.docker("ps", "--quiet").split()
            if running:
                self.docker("kill", *running, check=False)

    def _network_bridges(self) -> list[str]:
        """Names of the Linux bridges of this daemon's user networks (`br-` + short id)."""
        if self._dockerd is None or self._dockerd.poll() is not None:
            return []
        with contextlib.suppress(DockerdError, subprocess.TimeoutExpired):
            ids = self.docker("network", "ls", "--quiet", "--filter", "driver=bridge").split()
            return [f"br-{network_id[:12]}" for network_id in ids]
        return []

    def _stop_dockerd(self) -> None:
        self._terminate(self._dockerd, "dockerd")
        self._dockerd = None

    def _terminate(self, process: subprocess.Popen[bytes] | None, name: str) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _kill_leftover_tasks(self) -> None:
        """Containers and shims of our containerd that outlived dockerd (after kill())."""
        task_root = self.root / "containerd" / "state" / "io.containerd.runtime.v2.task"
        for pid_file in task_root.glob("*/*/init.pid"):
            _kill_pid(_read_pid(pid_file))
        for pid in _shim_pids(str(self.containerd_socket)):
            _kill_pid(pid)


# ---------------------------------------------------------------------- API clients


class EngineSession:
    """One kept-alive HTTP connection to the Engine; reconnects when it drops."""

    def __init__(self, socket_path: Path, timeout: float) -> None:
        self._socket_path = socket_path
        self._timeout = timeout
        self._connection: _UnixHTTPConnection | None = None

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        for attempt in range(2):
            if self._connection is None:
                self._connection = _UnixHTTPConnection(self._socket_path, self._timeout)
            try:
                self._connection.request(method, path, body=data, headers=headers)
                response = self._connection.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> EngineSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def event_key(raw: dict[str, Any]) -> tuple[object, ...]:
    """What makes an Engine event itself: the same fields docktrail's event id uses."""
    actor = raw.get("Actor")
    actor_id = actor.get("ID", "") if isinstance(actor, dict) else ""
    return (raw.get("timeNano"), raw.get("Type"), raw.get("Action"), actor_id or "")


class EventsRecorder:
    """Reads `/events` in a thread and keeps every event: the ground truth of a test.

    It starts reading from the moment it is entered. When the daemon goes away
    (killed), it reconnects once the socket answers and resumes with `since` =
    the last event it has, so events the daemon logs while restarting are kept
    too (the replay may repeat some: `events` holds each once).
    """

    def __init__(self, daemon: Dockerd) -> None:
        self._daemon = daemon
        self._since = f"{time.time():.9f}"
        self._events: dict[tuple[object, ...], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connection: _UnixHTTPConnection | None = None
        self._thread = threading.Thread(target=self._run, name="truth-events", daemon=True)
        self.connected = threading.Event()
        self._marks = 0

    @property
    def events(self) -> list[dict[str, Any]]:
        """The raw events (JSON objects) seen so far, oldest first."""
        with self._lock:
            return sorted(self._events.values(), key=lambda e: int(e.get("timeNano", 0)))

    def catch_up(self, timeout: float = 20.0) -> None:
        """Returns once every event the daemon logged before this call has been read.

        The stream is ordered: a volume created and removed now is read last.
        """
        self._marks += 1
        name = f"truth-mark-{os.getpid()}-{self._marks}"
        with self._daemon.session() as api:
            api.request("POST", "/volumes/create", {"Name": name})
            api.request("DELETE", f"/volumes/{name}")

        def marked() -> bool:
            with self._lock:
                return any(
                    raw.get("Action") == "destroy" and event_key(raw)[3] == name
                    for raw in self._events.values()
                )

        if not wait_until(marked, timeout):
            raise DockerdError(f"the events recorder did not see {name}")

    def __enter__(self) -> EventsRecorder:
        self._thread.start()
        if not self.connected.wait(10):
            raise DockerdError("the events recorder could not connect")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        connection = self._connection
        if connection is not None and connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, http.client.HTTPException, ValueError):
                self._read_once()
            self.connected.clear()
            self._stop.wait(0.05)

    def _read_once(self) -> None:
        connection = _UnixHTTPConnection(self._daemon.socket_path, timeout=3600)
        self._connection = connection
        try:
            connection.request("GET", f"/events?since={self._since}")
            response = connection.getresponse()
            self.connected.set()
            while not self._stop.is_set():
                line = response.readline()
                if not line:
                    return
                raw = json.loads(line)
                with self._lock:
                    self._events[event_key(raw)] = raw
                nanos = int(raw["timeNano"])
                self._since = f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"
        finally:
            connection.close()


# ---------------------------------------------------------------------- helpers


def _short_tmp() -> str:
    """A temp dir short enough for unix socket paths (TMPDIR may be long)."""
    default = tempfile.gettempdir()
    return default if len(default) <= 40 else "/tmp"


def _dockerd_major() -> int:
    output = subprocess.run(["dockerd", "--version"], capture_output=True, text=True).stdout
    match = re.search(r"version (\d+)\.", output)
    return int(match.group(1)) if match else 0


def _set_parent_death_signal() -> None:
    # If the test process dies without stop(), the daemon shuts down cleanly on its own.
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _spawn(command: list[str], log: io.BufferedWriter) -> subprocess.Popen[bytes]:
    # The death signal fires when the *thread* that forked exits: only safe from the
    # main thread (not from e.g. asyncio.to_thread, whose workers come and go).
    main = threading.current_thread() is threading.main_thread()
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a ^C in pytest must not reach the daemons first
        preexec_fn=_set_parent_death_signal if main else None,
    )


def _wait_for(
    ready: Callable[[], bool],
    timeout: float,
    died: Callable[[], bool],
    message: Callable[[], str],
) -> None:
    """Polls `ready()` until true; fails early when `died()`, with `message()`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if died():
            raise DockerdError("exited early: " + message())
        time.sleep(0.05)
    raise DockerdError(f"timed out after {timeout:.0f}s: {message()}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path.name})"


def _read_pid(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(path.read_text().strip())
    return None


def _kill_pid(pid: int | None) -> None:
    if pid is None or pid <= 1:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _shim_pids(containerd_address: str) -> Iterator[int]:
    """Shims are started with `-address <containerd socket>`: that names ours."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"containerd-shim" in argv[0] and containerd_address.encode() in argv:
            yield int(entry.name)


def _delete_links(names: list[str]) -> None:
    for name in names:
        if Path("/sys/class/net", name).exists():
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)


def bench_on_private_dockerd(bench: Callable[[Dockerd, Path], Coroutine[Any, Any, None]]) -> None:
    """For the benchmarks: `bench(daemon, trail_path)` on a private dockerd with busybox.

    Exits with the reason when no private dockerd can start here.
    """
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot start a private dockerd: {reason}")
    with tempfile.TemporaryDirectory(prefix="docktrail-bench-") as tmp, Dockerd() as daemon:
        daemon.import_busybox()
        asyncio.run(bench(daemon, Path(tmp) / "trail.db"))


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, from /proc/self/mountinfo, deepest first."""
    prefix = str(root).rstrip("/")
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            point = _unescape_mount(line.split(" ")[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    # Later mounts may sit on top of earlier ones: undo them in reverse order.
    return sorted(reversed(found), key=lambda p: p.count("/"), reverse=True)


def _unescape_mount(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def unmount_under(root: Path, attempts: int = 5) -> None:
    """Lazily unmounts everything at or below `root` (overlay, netns, bind mounts)."""
    for _ in range(attempts):
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            _LIBC.umount2(point.encode(), _MNT_DETACH)
    left = mounts_under(root)
    if left:
        raise DockerdError(f"could not unmount: {left}")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Polls `predicate()` until true or `timeout`; returns its last truth."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


__all__ = [
    "BUSYBOX_APPLETS",
    "BUSYBOX_REF",
    "Dockerd",
    "DockerdError",
    "EngineSession",
    "EventsRecorder",
    "busybox_path",
    "busybox_rootfs_tar",
    "event_key",
    "mounts_under",
    "unavailable_reason",
    "unmount_under",
    "wait_until",
]
