"""The real channel: one destination URL, sent to through apprise.

`AppriseChannel` loads the URL once (a URL apprise cannot load is a
`ConfigError` at start, not a failed delivery later), bounds every send by the
destination's timeout, and turns apprise's `AppriseResult` into a
`SendOutcome` whose error names the cause in a few words ("HTTP 500 from
host:port", "connection refused by host:port") with every secret of the URL
masked.

apprise names the socket error of a failed send (refused, timed out, DNS) and
the host it contacted only in DEBUG lines, which the application's logging
usually drops before any handler sees them. Each channel therefore gives its
plugin a private logger, a child of apprise's own, that keeps the lines of the
current send for the error text and passes on to the application only what
apprise's logger would have passed: no global logging setting is changed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote, urlencode

import apprise
from apprise.utils import cwe312, parse

from config.errors import ConfigError
from config.models import Format
from notifiers import urlsecrets
from notifiers.base import Family, Message, SendOutcome

# JSON webhooks get docktrail's documented object itself: apprise's json://
# plugin would wrap it, string-encoded, in its own envelope ({"version",
# "title", "message", "attachments", "type"}).
_RAW_JSON_SCHEMES = frozenset({"json", "jsons"})

# apprise ships py.typed but leaves these helpers unannotated, which mypy's
# strict mode rejects at every call; they are used through Any instead.
_cwe312_url: Any = cwe312.cwe312_url
_cwe312_word: Any = cwe312.cwe312_word
_parse_url: Any = parse.parse_url
_parse_urls: Any = parse.parse_urls
_is_hostname: Any = parse.is_hostname
_services: Any = apprise.NotificationManager

MASK = urlsecrets.MASK
"""What a secret of a URL becomes in error text."""

_FAMILY_SCHEMES: tuple[tuple[Family, tuple[str, ...]], ...] = (
    ("html", ("mailto", "mailtos")),
    ("dingtalk", ("dingtalk",)),
    (
        "markdown",
        (
            "slack", "msteams", "feishu", "lark", "mmost", "mmosts", "rocket", "rockets",
            "discord", "wecombot", "matrix", "matrixs", "zulip",
        ),
    ),
    ("json", ("json", "jsons", "form", "forms", "xml", "xmls")),
)  # fmt: skip
_SCHEME_FAMILY: dict[str, Family] = {
    scheme: family for family, schemes in _FAMILY_SCHEMES for scheme in schemes
}

# Query keys (and +header/-payload keys) whose values are credentials.
_SECRET_KEY = urlsecrets.SECRET_NAME
# What separates the parts of a URL; a secret is one whole part.
_URL_PARTS = re.compile(r"[/:@?&=#,;\s]+")
# Shorter "secrets" cannot be masked without garbling the rest of the text.
_MIN_SECRET_LEN = 4

_BACKSTOP_MARGIN_SECS = 1.0  # beyond apprise's own deadline, for its bookkeeping
_MAX_ERROR_LEN = 300
_MAX_DETAIL_LINES = 50

_APPRISE_LOG = logging.getLogger(apprise.LOGGER_NAME)
# The log lines of the send running in this context (apprise copies the
# context into its worker threads, so a plugin's lines land in its send's list).
_SEND_DETAILS: ContextVar[list[str] | None] = ContextVar("docktrail_send_details", default=None)

_HTTP_STATUS = re.compile(r"error=(\d{3})\b")
# smtplib's "(550, b'text')" and apprise's "recipient … was refused: 550 b'text'"
_SMTP_REPLY = re.compile(r"(?:\(|refused: )(\d{3}),? b?['\"]([^'\"]*)")
# apprise's plugins log each request as "<Service> POST URL: <url> (cert_verify=…)".
_REQUEST_URL = re.compile(r"URL: https?://([^/\s'\"?#]+)")
# Socket-level causes, as requests/urllib3/smtplib word them; first match wins.
_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"refused", re.I), "connection refused by {where}"),
    (
        re.compile(r"name or service not known|nodename nor servname|name resolution", re.I),
        "cannot resolve {where}",
    ),
    (re.compile(r"timed out", re.I), "timed out after {secs}s waiting for {where}"),
    (re.compile(r"unreachable|no route to host", re.I), "network unreachable to {where}"),
    (re.compile(r"\bssl|certificate", re.I), "TLS error with {where}"),
    (
        re.compile(r"remote ?disconnected|connection (?:reset|aborted)|closed connection", re.I),
        "connection closed by {where}",
    ),
)


def family_for_url(url: str) -> Family:
    """The message family a URL's scheme wants (see `config.models.Destination.format`)."""
    scheme, sep, _ = url.strip().partition("://")
    return _SCHEME_FAMILY.get(scheme.lower(), "plain") if sep else "plain"


def mask_secrets(text: str, url: str) -> str:
    """`text` with `url` shown as apprise's privacy URL and every secret of it as ****."""
    safe_url, secrets = _url_privacy(url)
    return _mask(text, url, safe_url, secrets)


def mask_url(url: str) -> str:
    """`url` as written, with every secret part as ****: for `config show` and messages."""
    _, secrets = _url_privacy(url)
    return urlsecrets.redact(url, secrets, registered=False)


class AppriseChannel:
    """One destination: an apprise URL with its tags and timeout (satisfies `Channel`)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        tags: Sequence[str] = (),
        timeout_secs: float = 10.0,
        family: Format = "auto",
    ) -> None:
        self.name = name
        self.family: Family = family_for_url(url) if family == "auto" else family
        self.timeout_secs = timeout_secs
        self._url = url
        self._tags = list(tags)
        plugin = _load_plugin(name, url, self._tags)
        hidden = _hidden_parts(plugin)
        urlsecrets.register(_secret_variants(hidden))
        # apprise stops waiting at its deadline but cannot stop the worker
        # thread; the socket timeouts are what end a send to a hung server.
        plugin.socket_connect_timeout = timeout_secs
        plugin.socket_read_timeout = timeout_secs
        # apprise sleeps up to 5.5 s between two sends of one plugin (email):
        # inside our timeout that turns a healthy server into a TIMEOUT, and the
        # sleeping thread may deliver after we gave up (a duplicate on retry).
        # The outbox worker's per-destination rate limit does this job instead.
        plugin.request_rate_per_sec = 0
        plugin.logger = _detail_logger(name)
        self._plugin: Any = plugin
        self._apprise = apprise.Apprise()
        self._apprise.add(plugin)
        self.body_limit = _limit(plugin.body_maxlen)
        self.title_limit = _limit(plugin.title_maxlen)
        self._secrets = _secret_variants(_parsed_secrets(url) | hidden)
        # apprise's privacy URL still shows `+` header values (Authorization, X-Api-Key)
        self.safe_url: str = urlsecrets.redact(
            plugin.url(privacy=True), self._secrets, registered=False
        )
        scheme = url.strip().partition("://")[0].lower()
        self._raw_json = self.family == "json" and scheme in _RAW_JSON_SCHEMES

    def __repr__(self) -> str:
        return f"AppriseChannel({self.name!r}, {self.safe_url!r})"

    async def send(self, message: Message) -> SendOutcome:
        if self._raw_json:
            return await self._send_raw_json(message)
        details: list[str] = []
        token = _SEND_DETAILS.set(details)
        started = time.monotonic()
        try:
            # apprise enforces `timeout` itself; this only guards against its
            # own bookkeeping overrunning, so a caller is never held much longer.
            result = await asyncio.wait_for(
                self._notify(message), self.timeout_secs + _BACKSTOP_MARGIN_SECS
            )
        except TimeoutError:
            elapsed_ms = (time.monotonic() - started) * 1000
            return SendOutcome(False, "TIMEOUT", elapsed_ms, self._timed_out(details))
        finally:
            _SEND_DETAILS.reset(token)
        elapsed_ms = (time.monotonic() - started) * 1000
        with result:
            return self._outcome(result, details, elapsed_ms)

    async def _notify(self, message: Message) -> apprise.AppriseResult:
        routing: dict[str, Any] = {"tag": self._tags} if self._tags else {}
        return await self._apprise.async_notify(
            body=message.body,
            title=message.title,
            body_format=message.body_format,
            notify_type=apprise.NotifyType(message.notify_kind),
            timeout=self.timeout_secs,
            **routing,
        )

    async def _send_raw_json(self, message: Message) -> SendOutcome:
        """POST the body (docktrail's JSON object) as it is, with the URL's headers and auth."""
        started = time.monotonic()
        try:
            ok, status, error = await asyncio.wait_for(
                asyncio.to_thread(self._post_json, message.body),
                self.timeout_secs + _BACKSTOP_MARGIN_SECS,
            )
        except TimeoutError:
            ok, status, error = False, "TIMEOUT", self._timed_out([])
        return SendOutcome(ok, status, (time.monotonic() - started) * 1000, error)

    def _post_json(self, body: str) -> tuple[bool, str, str | None]:
        plugin = self._plugin
        url = self._json_endpoint()
        where = [f"URL: {url}"]  # for the error text's host:port, as apprise logs it
        request = urllib.request.Request(
            url, data=body.encode("utf-8"), headers=self._json_headers(), method=plugin.method
        )
        context = None if plugin.verify_certificate else _unverified_tls()
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_secs, context=context):
                return True, "SUCCESS", None
        except urllib.error.HTTPError as exc:
            return False, "FAILURE", self._describe("FAILURE", [f"error={exc.code}"], where)
        except TimeoutError:
            return False, "TIMEOUT", self._timed_out(where)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, TimeoutError):
                return False, "TIMEOUT", self._timed_out(where)
            return False, "FAILURE", self._describe("FAILURE", [str(reason)], where)

    def _json_endpoint(self) -> str:
        plugin = self._plugin
        url = f"{'https' if plugin.secure else 'http'}://{plugin.host}"
        if isinstance(plugin.port, int):
            url += f":{plugin.port}"
        url += plugin.fullpath or "/"
        params = getattr(plugin, "params", None)
        return url + (f"?{urlencode(params)}" if params else "")

    def _json_headers(self) -> dict[str, str]:
        plugin = self._plugin
        headers = {"User-Agent": str(plugin.app_id), "Content-Type": "application/json"}
        headers.update(getattr(plugin, "headers", None) or {})
        if plugin.user and "Authorization" not in headers:  # an explicit header wins
            pair = f"{plugin.user}:{plugin.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return headers

    def _outcome(
        self, result: apprise.AppriseResult, details: list[str], elapsed_ms: float
    ) -> SendOutcome:
        status = result.status
        if status == apprise.AppriseResultStatus.SUCCESS:
            return SendOutcome(True, status.name, elapsed_ms)
        notes = [entry.message for entry in result.logs()]
        error = self._describe(status.name, notes, details)
        return SendOutcome(False, status.name, elapsed_ms, error)

    def _describe(self, status: str, notes: list[str], details: list[str]) -> str:
        """A short cause: the HTTP/SMTP reply or socket error, else apprise's own words."""
        # Warnings and exception texts only: a payload dump in the DEBUG lines
        # would let an alert's own words ("refused") pass for the cause.
        exceptions = [line.partition("Exception: ")[2] for line in details if "Exception: " in line]
        evidence = "\n".join([*notes, *exceptions])
        where = self._endpoint(details)
        if match := _HTTP_STATUS.search(evidence):
            return self._mask(f"HTTP {match[1]} from {where}")
        if match := _SMTP_REPLY.search(evidence):
            return self._mask(f"SMTP {match[1]} {match[2].strip()} from {where}")
        for pattern, phrase in _CAUSES:
            if pattern.search(evidence):
                return self._mask(phrase.format(where=where, secs=f"{self.timeout_secs:g}"))
        if status == "TIMEOUT":
            return self._timed_out(details)
        return self._mask((exceptions or notes or [f"apprise reported {status}"])[0])

    def _timed_out(self, details: list[str]) -> str:
        where = self._endpoint(details)
        return self._mask(f"timed out after {self.timeout_secs:g}s waiting for {where}")

    def _endpoint(self, details: list[str]) -> str:
        """host:port contacted last: from the request URL apprise logged, else the plugin's."""
        for line in reversed(details):
            if match := _REQUEST_URL.search(line):
                return match[1].rpartition("@")[2]  # never a user:password@ part
        host = getattr(self._plugin, "smtp_host", None) or self._plugin.host or "the server"
        port = self._plugin.port
        return f"{host}:{port}" if port else str(host)

    def _mask(self, text: str) -> str:
        return _mask(text, self._url, self.safe_url, self._secrets)[:_MAX_ERROR_LEN]


def _unverified_tls() -> ssl.SSLContext:
    """TLS without certificate checks, as the URL's `verify=no` asks."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _DetailTap(logging.Filter):
    """Keeps every line of a send; lets through what apprise's logger would have let through."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = _SEND_DETAILS.get()
        if lines is not None and len(lines) < _MAX_DETAIL_LINES:
            # A malformed record must not fail the send it comes from.
            with contextlib.suppress(Exception):
                lines.append(record.getMessage())
        return record.levelno >= _APPRISE_LOG.getEffectiveLevel()


def _detail_logger(name: str) -> logging.Logger:
    # Not registered with logging.getLogger: a private object whose DEBUG level
    # changes nothing for any other logger, parented to apprise's so that what
    # passes the tap reaches the application's handlers as before.
    logger = logging.Logger(f"{apprise.LOGGER_NAME}.docktrail.{name}", logging.DEBUG)
    logger.parent = _APPRISE_LOG
    logger.addFilter(_DetailTap())
    return logger


def _load_plugin(name: str, url: str, tags: list[str]) -> Any:
    where = f"notifications.destinations[{name}]"
    secrets = _secret_variants(_parsed_secrets(url))
    urlsecrets.register(secrets)  # before apprise logs anything about this URL
    safe_url = urlsecrets.redact(url, secrets, registered=False)
    urls: list[str] = _parse_urls(url)
    if len(urls) != 1:
        found = ", ".join(urlsecrets.redact(u, secrets, registered=False) for u in urls)
        raise ConfigError(f"{where}: one apprise URL per destination, found {len(urls)}: {found}")
    try:
        plugin = apprise.Apprise.instantiate(url, tag=tags or None, suppress_exceptions=False)
    except Exception as e:  # plugins raise TypeError, ValueError, AppriseException …
        reason = _mask(str(e), url, safe_url, secrets) or type(e).__name__
    else:
        if plugin is not None:
            return plugin
        reason = _unloadable_reason(url)
    raise ConfigError(f"{where}: cannot load apprise URL {safe_url}: {reason}")


def _unloadable_reason(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme not in _services():
        return f"apprise has no service for the scheme {scheme!r}"
    return "apprise cannot parse it, or the service is disabled on this system"


def _limit(value: object) -> int | None:
    # 0 means "none" to apprise (no title: it folds the title into the body).
    return value if isinstance(value, int) and value > 0 else None


@lru_cache(maxsize=256)
def _url_privacy(url: str) -> tuple[str, tuple[str, ...]]:
    """apprise's privacy URL and the secret strings of `url` (cached: loading costs)."""
    secrets = _parsed_secrets(url)
    plugin: Any
    try:
        plugin = apprise.Apprise.instantiate(url, suppress_exceptions=False)
    except Exception:  # an unloadable URL still gets masked by the heuristics
        plugin = None
    if plugin is None:
        return _cwe312_url(url), _secret_variants(secrets)
    return plugin.url(privacy=True), _secret_variants(secrets | _hidden_parts(plugin))


def _parsed_secrets(url: str) -> set[str]:
    """Password, credential-named query values, and token-looking user/host/path parts."""
    parts = _parse_url(url, verify_host=False)
    if not parts:
        return set()
    found = {parts.get("password") or ""}
    for group in ("qsd", "qsd+", "qsd-", "qsd:"):
        found |= {v for k, v in parts.get(group, {}).items() if _SECRET_KEY.search(k)}
    host = parts.get("host")
    if isinstance(host, str) and host and not _is_hostname(host):
        found.add(host)  # a token in the host's place; a real host name or IP is no secret
    # apprise's CWE-312 test (not host-name-like, long, or high character
    # variance); parts of http(s) URLs are only checked for the first two.
    advanced = not str(parts.get("schema", "")).startswith("http")
    segments = str(parts.get("fullpath") or "").split("/")
    for word in (parts.get("user"), *segments):
        if isinstance(word, str) and word and _cwe312_word(word, advanced=advanced) != word:
            found.add(word)
    return found


def _hidden_parts(plugin: Any) -> set[str]:
    """Parts of the plugin's full URL that its privacy URL hides: apprise knows its secrets."""
    full = _URL_PARTS.split(unquote(plugin.url(privacy=False)))
    shown = set(_URL_PARTS.split(unquote(plugin.url(privacy=True))))
    return {part for part in full if part not in shown}


def _secret_variants(secrets: Iterable[str]) -> tuple[str, ...]:
    """Each secret as written, unquoted and quoted; longest first so none is half-masked."""
    variants: set[str] = set()
    for secret in secrets:
        variants |= {secret, unquote(secret), quote(secret, safe=""), quote(secret)}
    return tuple(sorted((v for v in variants if len(v) >= _MIN_SECRET_LEN), key=len, reverse=True))


def _mask(text: str, url: str, safe_url: str, secrets: Iterable[str]) -> str:
    if url:
        text = text.replace(url, safe_url)
    return urlsecrets.redact(text, secrets, registered=False)
