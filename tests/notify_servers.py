"""Real local servers that notification channels send to in tests.

`SmtpServer` is an aiosmtpd SMTP server, `WebhookServer` a threaded HTTP
server that can fail as planned ("500", "hang"). Both listen on 127.0.0.1 on
a port fixed at construction, so a stopped server refuses connections on the
very URL a channel was built with. Use them directly or through the
`smtp_server` and `webhook_server` fixtures (re-export them from a conftest
with `from tests.notify_servers import smtp_server, webhook_server`).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import quote

import pytest
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (the kernel's pick; tiny race until bound)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until(condition: Callable[[], bool], lock: threading.Condition, timeout: float) -> bool:
    with lock:
        return lock.wait_for(condition, timeout)


class SmtpServer:
    """A plain SMTP server (no TLS, no auth) keeping every message it accepts.

    `.messages` holds them parsed with `email.policy.default` (headers decoded),
    `.raw` as received, `.envelopes` as (MAIL FROM, RCPT TOs).
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.messages: list[EmailMessage] = []
        self.raw: list[bytes] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._changed = threading.Condition()
        self._controller: Controller | None = None

    def url(self, to: str = "sec@example.com", sender: str = "docktrail@example.com") -> str:
        """The apprise URL reaching this server: plain SMTP (mode=insecure), explicit From/To."""
        query = f"mode=insecure&from={quote(sender)}&to={quote(to)}"
        return f"mailto://{HOST}:{self.port}?{query}"

    def start(self) -> None:
        # aiosmtpd 1.4 cannot listen on port 0: it connects to `port` to check
        # that the server is up, hence the port chosen beforehand.
        self._controller = Controller(_SmtpHandler(self), hostname=HOST, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """True once `n` messages arrived, False when `timeout` passes first."""
        return _wait_until(lambda: len(self.messages) >= n, self._changed, timeout)

    def _accept(self, mail_from: str, rcpt_tos: list[str], data: bytes) -> None:
        message = BytesParser(policy=default_policy).parsebytes(data)
        assert isinstance(message, EmailMessage)
        with self._changed:
            self.raw.append(data)
            self.envelopes.append((mail_from, list(rcpt_tos)))
            self.messages.append(message)
            self._changed.notify_all()


class _SmtpHandler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = envelope.original_content or envelope.content
        self._server._accept(envelope.mail_from, envelope.rcpt_tos, data)
        return "250 Message accepted for delivery"


class Received(NamedTuple):
    """One request the webhook server answered 2xx."""

    path: str
    headers: dict[str, str]
    body: bytes
    json: Any  # the body parsed as JSON, None when it is not JSON


class WebhookServer:
    """An HTTP server answering webhooks, failing as `plan` says.

    Each request takes the next item of `plan`: "ok" answers 200, a status
    code ("500", "503") answers it, "hang" reads the request, waits
    `hang_secs` without answering and closes the connection. An empty plan
    means "ok". Only 2xx answers are kept in `received`; `attempts` counts
    every request.
    """

    def __init__(self, port: int | None = None, *, hang_secs: float = 20.0) -> None:
        self.port = port or free_port()
        self.hang_secs = hang_secs
        self.plan: list[str] = []
        self.received: list[Received] = []
        self.attempts = 0
        self._changed = threading.Condition()
        self._stopping = threading.Event()  # releases hanging handlers at stop()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def json_url(self, path: str = "/hook") -> str:
        return f"json://{HOST}:{self.port}{path}"

    def mattermost_url(self, token: str = "dt4hooKTok3n") -> str:
        """apprise's Mattermost webhook URL; it POSTs {"text": …} to /hooks/<token>."""
        return f"mmost://{HOST}:{self.port}/{token}"

    def start(self) -> None:
        self._stopping.clear()
        httpd = ThreadingHTTPServer((HOST, self.port), _handler_class(self))
        httpd.daemon_threads = True  # a hanging handler never blocks stop()
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket: connections are refused until start()."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """True once `n` requests were received (answered 2xx), False after `timeout`."""
        return _wait_until(lambda: len(self.received) >= n, self._changed, timeout)

    def _next_action(self) -> str:
        with self._changed:
            self.attempts += 1
            return self.plan.pop(0) if self.plan else "ok"

    def _record(self, item: Received) -> None:
        with self._changed:
            self.received.append(item)
            self._changed.notify_all()


def _handler_class(server: WebhookServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._handle()

        do_PUT = do_POST
        do_GET = do_POST

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            action = server._next_action()
            if action == "hang":
                server._stopping.wait(server.hang_secs)
                self.close_connection = True  # closed without an answer
                return
            status = 200 if action == "ok" else int(action)
            if 200 <= status < 300:
                # Kept before answering, so it is there when the sender returns.
                server._record(Received(self.path, dict(self.headers), body, _json_or_none(body)))
            self._answer(status)

        def _answer(self, status: int) -> None:
            payload = b'{"ok": true}' if status < 300 else b'{"error": "planned failure"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    server = WebhookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
