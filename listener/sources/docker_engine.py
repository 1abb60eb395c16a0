"""Blocking calls to the Docker Engine, and the Engine's time formats.

`Engine` is what the live source (`docker_live`) asks of the Engine;
`EngineClient` answers it with docker-py, from the source's worker threads.
`DaemonIdentity` is who answered, recorded once per connection. Every
docker-py, requests or socket error becomes a `SourceError` (`describe_error`
finds the OS error behind docker-py's wrappers); a 404 of an inspect is
`None`, not an error. docker-py is imported inside the calls only, so this
module stays light to import.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from config.errors import SourceError

_NS = 1_000_000_000
_T = TypeVar("_T")


def since_arg(time_ns: int) -> str:
    """The Engine's `since`/`until` form of a time: "seconds.nanoseconds"."""
    seconds, nanos = divmod(time_ns, _NS)
    return f"{seconds}.{nanos:09d}"


def parse_engine_time_ns(text: object) -> int | None:
    """RFC 3339 (nanosecond) times of inspect (`State.StartedAt`); None for the zero time."""
    if not isinstance(text, str) or not text or text.startswith("0001-01-01"):
        return None
    match = re.fullmatch(
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text.strip()
    )
    if match is None:
        return None
    offset = "+00:00" if match[3] == "Z" else match[3]
    seconds = int(datetime.fromisoformat(match[1] + offset).timestamp())
    return seconds * _NS + int((match[2] or "").ljust(9, "0"))


@dataclass(frozen=True, slots=True)
class DaemonIdentity:
    """Who answered: recorded once per connection so that a mixed trail stays clear."""

    id: str
    name: str
    server_version: str
    api_version: str
    os: str
    kernel_version: str
    clock_skew_ns: int  # the Engine's clock minus ours, measured at connect
    data_root: str = ""  # `DockerRootDir`: where the Engine keeps its files

    @property
    def clock_offset_ns(self) -> int:
        """The skew to correct Engine times by: below a second it is mostly call latency."""
        return self.clock_skew_ns if abs(self.clock_skew_ns) >= _NS else 0

    def attributes(self) -> dict[str, Any]:
        return {
            "server_version": self.server_version,
            "api_version": self.api_version,
            "os": self.os,
            "kernel_version": self.kernel_version,
            "clock_skew_ns": self.clock_skew_ns,
        }


def describe_error(exc: BaseException) -> str:
    """The most telling words for an Engine error: the OS error behind docker-py's wrappers."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        causes = (error.__cause__, error.__context__, *error.args)
        stack.extend(cause for cause in causes if isinstance(cause, BaseException))
    return str(exc) or type(exc).__name__


def _engine_errors() -> tuple[type[BaseException], ...]:
    import docker.errors
    import requests
    import urllib3.exceptions

    return (
        docker.errors.DockerException,
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        OSError,
        ValueError,  # a body that is not JSON
    )


class Engine(Protocol):
    """The Engine calls the live source makes (blocking; run in worker threads)."""

    host: str

    def connect(self) -> DaemonIdentity: ...

    def open_events(self, since_ns: int) -> tuple[Any, Callable[[], None]]: ...

    def buffered_events(self, until_ns: int) -> list[dict[str, Any]]: ...

    def containers(self) -> list[dict[str, Any]]: ...

    def images(self) -> list[dict[str, Any]]: ...

    def inspect_container(self, container_id: str) -> dict[str, Any] | None: ...

    def inspect_image(self, reference: str) -> dict[str, Any] | None: ...

    def close(self) -> None: ...


class EngineClient:
    """Blocking calls to one Docker Engine, from any thread.

    docker-py's client is a `requests` session: each thread gets its own. Every
    docker-py, requests or socket error becomes a `SourceError`; a 404 of an
    inspect is `None` (the object is gone), not an error.
    """

    def __init__(self, host: str, timeout_secs: float) -> None:
        self.host = host
        self.timeout_secs = timeout_secs
        self.api_version: str | None = None
        self._local = threading.local()
        self._clients: list[Any] = []
        self._lock = threading.Lock()

    def connect(self) -> DaemonIdentity:
        """Checks that the Engine answers and says who it is (`/version`, `/info`)."""
        with self._translated("Docker Engine not reachable at " + self.host):
            client = self._new_client("auto")
            try:
                version = client.version()
                before = time.time_ns()
                info = client.info()
                after = time.time_ns()
            finally:
                client.close()
        self.api_version = str(version.get("ApiVersion") or "")
        engine_now = parse_engine_time_ns(info.get("SystemTime"))
        return DaemonIdentity(
            id=str(info.get("ID") or ""),
            name=str(info.get("Name") or ""),
            server_version=str(version.get("Version") or info.get("ServerVersion") or ""),
            api_version=self.api_version,
            os=str(info.get("OperatingSystem") or ""),
            kernel_version=str(info.get("KernelVersion") or ""),
            clock_skew_ns=0 if engine_now is None else engine_now - (before + after) // 2,
            data_root=str(info.get("DockerRootDir") or ""),
        )

    def open_events(self, since_ns: int) -> tuple[Any, Callable[[], None]]:
        """The live `/events` stream from `since_ns` on, and how to release its client.

        The stream is docker-py's CancellableStream: iterate it, `close()` it from
        any thread. It gets a client of its own, held until the stream ends.
        """
        with self._translated("cannot read events from " + self.host):
            client = self._new_client(self.api_version or "auto")
            try:
                return client.events(since=since_arg(since_ns), decode=True), client.close
            except BaseException:
                client.close()
                raise

    def buffered_events(self, until_ns: int) -> list[dict[str, Any]]:
        """Every event still in the Engine's replay buffer (its last 256), up to `until_ns`."""
        with self._translated("cannot read events from " + self.host):
            # since=0 is not "no since": it asks for the whole buffer.
            stream = self._client().events(since="0", until=since_arg(until_ns), decode=True)
            return [raw for raw in stream if isinstance(raw, dict)]

    def containers(self) -> list[dict[str, Any]]:
        with self._translated("cannot list containers of " + self.host):
            return list(self._client().containers(all=True))

    def images(self) -> list[dict[str, Any]]:
        with self._translated("cannot list images of " + self.host):
            return list(self._client().images())

    def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        return self._inspect("inspect_container", container_id)

    def inspect_image(self, reference: str) -> dict[str, Any] | None:
        return self._inspect("inspect_image", reference)

    def inspect_exec(self, exec_id: str) -> dict[str, Any] | None:
        """`GET /exec/{id}/json`: user, privileged, tty, stdin and command of an exec."""
        return self._inspect("exec_inspect", exec_id)

    def api(self, what: str, call: Callable[[Any], _T]) -> _T:
        """`call(docker-py APIClient)` in this thread; its errors as `SourceError` (`what`)."""
        with self._translated(f"{what} on {self.host}"):
            return call(self._client())

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(Exception):  # closing must never fail a shutdown
                client.close()

    def _inspect(self, method: str, name: str) -> dict[str, Any] | None:
        import docker.errors

        with self._translated(f"cannot inspect {name} on {self.host}"):
            try:
                result: dict[str, Any] = getattr(self._client(), method)(name)
            except docker.errors.NotFound:
                return None
            return result

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._new_client(self.api_version or "auto")
            self._register(client)
            self._local.client = client
        return client

    def _register(self, client: Any) -> None:
        with self._lock:
            self._clients.append(client)

    def _new_client(self, version: str) -> Any:
        import docker

        return docker.APIClient(base_url=self.host, version=version, timeout=self.timeout_secs)

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except _engine_errors() as exc:
            raise SourceError(f"{what}: {describe_error(exc)}") from exc
