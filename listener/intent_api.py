"""The HTTP endpoint a CI/CD pipeline calls before it deploys (`intents.api`).

Off by default and bound to 127.0.0.1 by default. A tiny HTTP/1.1 server on
asyncio streams (one request per connection, `Connection: close`):

* `POST /v1/intents` with a JSON `IntentSpec` body declares an intent and
  answers 201 `{"id": …, "expires": …}` once its event is in the trail;
* `POST /v1/intents/ID/close` closes one (200).

Every request needs `Authorization: Bearer TOKEN`; the token comes from a file
or an environment variable of the configuration, is compared in constant
time, and never appears in a log or a response. Bodies are capped
(`max_body_bytes`), must be a JSON object with only the known fields, and
anything wrong gets a 4xx with a JSON `{"error": …}` and stores nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pydantic import ValidationError

from config.errors import ConfigError, InputError
from config.models import IntentApiConfig
from listener.intents import IntentBook, IntentSpec, close_event, declare_event
from listener.model.event import Event, Who

log = logging.getLogger("docktrail.intents")

_MAX_HEADER_LINE = 8192
_MAX_HEADERS = 64
_CLOSE_PATH = re.compile(r"/v1/intents/(in-[0-9a-f]{12})/close")
_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}
_API_WHO = Who(method="api-token")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: str


def load_token(config: IntentApiConfig) -> str:
    """The bearer token, from `token_file` (not world-readable) or `token_env`."""
    if config.token_file is not None:
        path = config.token_file
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"intents.api.token_file: cannot read {path}: {exc.strerror}"
            ) from None
        if mode & stat.S_IROTH:
            raise ConfigError(f"intents.api.token_file: {path} is world-readable (chmod 600 it)")
    elif config.token_env is not None:
        text = os.environ.get(config.token_env, "").strip()
        if not text:
            raise ConfigError(f"intents.api.token_env: ${config.token_env} is not set")
    else:
        raise ConfigError("intents.api: set token_file or token_env to enable the endpoint")
    if len(text) < 16:
        raise ConfigError("intents.api: the bearer token must be at least 16 characters")
    return text


class IntentApi:
    """Serves the endpoint; `store` puts an event into the pipeline and waits for the write."""

    def __init__(
        self,
        config: IntentApiConfig,
        *,
        token: str,
        host: str,
        store: Callable[[Event], Awaitable[None]],
        book: IntentBook,
        refresh: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self._token = token.encode()
        self._host = host
        self._store = store
        self._book = book
        self._refresh = refresh
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.config.listen, self.config.port, limit=_MAX_HEADER_LINE
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "intent endpoint listening",
            extra={"fields": {"listen": self.config.listen, "port": self.port}},
        )

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        try:
            request = await asyncio.wait_for(
                _read_request(reader, peer, self.config.max_body_bytes), self.config.timeout_secs
            )
            status, body = await self._handle(request)
        except HttpError as exc:
            status, body = exc.status, {"error": str(exc)}
        except TimeoutError:
            status, body = 408, {"error": "the request was not received in time"}
        except Exception:
            log.exception("intent endpoint: request failed")
            status, body = 500, {"error": "internal error; nothing was stored"}
        if status >= 400:
            fields = {"peer": peer, "status": status, "error": body["error"]}
            log.warning("intent endpoint refused a request", extra={"fields": fields})
        with contextlib.suppress(ConnectionError):
            writer.write(_response(status, body))
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def _handle(self, request: Request) -> tuple[int, dict[str, object]]:
        self._authenticate(request)
        if request.path == "/v1/intents":
            _require_post(request)
            return await self._declare(request)
        close = _CLOSE_PATH.fullmatch(request.path)
        if close is not None:
            _require_post(request)
            return await self._close(close.group(1), request)
        raise HttpError(404, f"no such endpoint {request.path[:100]!r}")

    def _authenticate(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HttpError(401, "missing bearer token (Authorization: Bearer TOKEN)")
        if not hmac.compare_digest(token.strip().encode(), self._token):
            raise HttpError(401, "bad bearer token")

    async def _declare(self, request: Request) -> tuple[int, dict[str, object]]:
        spec = _spec(request)
        try:
            event = declare_event(
                spec, host=self._host, declared_by=_API_WHO, via="http", peer=request.peer
            )
        except InputError as exc:
            raise HttpError(422, str(exc)) from None
        await self._store(event)
        log.info("intent declared", extra={"fields": {"intent": event.actor.id, "who": spec.who}})
        return 201, {"id": event.actor.id, "expires": event.why.expires}

    async def _close(self, intent_id: str, request: Request) -> tuple[int, dict[str, object]]:
        if request.body.strip() not in (b"", b"{}"):
            raise HttpError(400, "close takes no body")
        await self._refresh()  # declared by the CLI meanwhile?
        intent = self._book.intents.get(intent_id)
        if intent is None:
            raise HttpError(404, f"no intent {intent_id}")
        if intent.closed_ns is not None:
            raise HttpError(409, f"intent {intent_id} is closed already")
        event = close_event(intent_id, host=self._host, closed_by=_API_WHO, via="http")
        await self._store(event)
        return 200, {"id": intent_id, "closed": event.time}


def _require_post(request: Request) -> None:
    if request.method != "POST":
        raise HttpError(405, f"{request.method[:16]} not allowed here; use POST")


def _spec(request: Request) -> IntentSpec:
    content_type = request.headers.get("content-type", "application/json")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise HttpError(415, "the body must be application/json")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"malformed JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "the body must be a JSON object")
    try:
        return IntentSpec.model_validate(data, strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10]
        )
        raise HttpError(422, problems) from None


async def _read_request(reader: asyncio.StreamReader, peer: str, max_body: int) -> Request:
    method, path = _request_line(await _line(reader))
    headers: dict[str, str] = {}
    while True:
        line = await _line(reader)
        if not line:
            break
        if len(headers) >= _MAX_HEADERS:
            raise HttpError(400, "too many header lines")
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked bodies are not accepted; send Content-Length")
    length = _content_length(headers, max_body)
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise HttpError(400, "the body is shorter than Content-Length") from None
    return Request(method, path, headers, body, peer)


async def _line(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(400, "header line too long") from None
    except asyncio.IncompleteReadError:
        raise HttpError(400, "the request ended early") from None
    try:
        return raw.decode("ascii").rstrip("\r\n")
    except UnicodeDecodeError:
        raise HttpError(400, "header lines must be ASCII") from None


def _request_line(line: str) -> tuple[str, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "malformed request line")
    return parts[0], parts[1].split("?", 1)[0]


def _content_length(headers: dict[str, str], max_body: int) -> int:
    text = headers.get("content-length")
    if text is None:
        return 0
    if not text.isdigit() or len(text) > 12:
        raise HttpError(400, "bad Content-Length")
    length = int(text)
    if length > max_body:
        raise HttpError(413, f"body of {length} bytes exceeds the limit of {max_body}")
    return length


def _response(status: int, body: dict[str, object]) -> bytes:
    payload = json.dumps(body, ensure_ascii=False).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Connection: close\r\n"
    )
    if status == 401:
        head += 'WWW-Authenticate: Bearer realm="docktrail"\r\n'
    return (head + "\r\n").encode() + payload


def _peer(writer: asyncio.StreamWriter) -> str:
    info = writer.get_extra_info("peername")
    if isinstance(info, tuple) and len(info) >= 2:
        return f"{info[0]}:{info[1]}"
    return "?"
