"""Secrets of destination URLs kept out of everything docktrail prints or logs.

A channel registers the secret parts of its URL (passwords, tokens, credential
headers and parameters) before apprise first sees the URL, so that even
apprise's own debug lines ("Slack POST URL: https://hooks.slack.com/…") are
masked by the log formatters. URL shapes that carry credentials (userinfo,
`token=`/`+Authorization=` parameters) are masked wherever they appear, known
or not. Light on purpose: the log formatters import it, apprise is not needed.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

MASK = "****"
"""What a secret becomes."""

SECRET_NAME = re.compile(r"token|key|secret|pass|pwd|auth|sig|cred|bearer|session", re.I)
"""Parameter and header names whose values are credentials."""

# `scheme://user:password@host`: the password, whatever the scheme.
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@?#\s]*:)[^@/?#\s]+@", re.I)
# `?token=…`, `&+Authorization=…`, `&-api_key=…`, `&%2BX-Api-Key=…` (apprise's
# own privacy URL leaves `+` header values in clear).
_SECRET_PARAM = re.compile(
    r"([?&](?:%2B|%2D|[+:-])?[^=&#\s]*(?:" + SECRET_NAME.pattern + r")[^=&#\s]*=)"
    r"[^&#\s:;,'\"<>()\[\]]*",
    re.I,
)
# Registered secrets mask every log line: shorter ones would garble ordinary words.
_MIN_REGISTERED_LEN = 6

_known: set[str] = set()
_ordered: tuple[str, ...] = ()
_lock = threading.Lock()


def register(secrets: Iterable[str]) -> None:
    """Remember secrets so that `redact` masks them in any text (log lines included)."""
    global _ordered
    fresh = {s for s in secrets if len(s) >= _MIN_REGISTERED_LEN} - _known
    if not fresh:
        return
    with _lock:
        _known.update(fresh)
        _ordered = tuple(sorted(_known, key=len, reverse=True))  # none half-masked


def redact(text: str, secrets: Iterable[str] = (), *, registered: bool = True) -> str:
    """`text` with the given (and registered) secrets and credential-shaped URL parts masked."""
    for secret in (*secrets, *(_ordered if registered else ())):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(r"\1" + MASK + "@", text)
    return _SECRET_PARAM.sub(lambda match: match.group(1) + MASK, text)
