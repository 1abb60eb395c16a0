"""What every notifier module shares: the rendered message and a send's outcome.

A destination is one apprise URL. The outbox worker asks `templates` for a
`Message` in the destination's channel family and language, and hands it to a
`Channel` (notifiers.apprise), which sends it and reports a `SendOutcome`.
Nothing here imports apprise: the CLI and the trail import this module freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

Family = Literal["plain", "markdown", "dingtalk", "html", "json"]
"""How a channel wants its body: plain text (SMS, ntfy, Telegram without
formatting), markdown (Slack, Teams, Feishu/Lark, Mattermost, Discord, WeCom),
the small markdown subset DingTalk accepts, HTML (email), or JSON (generic
webhooks, which get the alert objects themselves)."""

BodyFormat = Literal["text", "markdown", "html"]
"""apprise's `NotifyFormat` values, as strings."""

NotifyKind = Literal["info", "warning", "failure"]
"""apprise's `NotifyType` values that docktrail uses, as strings."""

NOTIFY_KIND_BY_SEVERITY: dict[str, NotifyKind] = {
    "critical": "failure",
    "high": "failure",
    "medium": "warning",
    "low": "info",
    "info": "info",
}
"""How a message's highest severity shows in a channel (colour, icon, priority)."""

TRUNCATION_MARKER = "… [truncated]"
"""Ends a body or title cut to a channel's limit."""


@dataclass(slots=True, frozen=True)
class Message:
    """One message to one destination: the title and body, ready to send."""

    title: str
    body: str
    body_format: BodyFormat
    notify_kind: NotifyKind = "info"


@dataclass(slots=True, frozen=True)
class SendOutcome:
    """The result of one attempt to send one message to one destination.

    `status` is apprise's `AppriseResultStatus` name (SUCCESS, FAILURE,
    TIMEOUT, NOMATCH, PARTIAL). `error` has every secret of the URL masked.
    """

    ok: bool
    status: str
    elapsed_ms: float
    error: str | None = None


class Channel(Protocol):
    """A destination able to send messages; notifiers.apprise.AppriseChannel is the real one."""

    name: str
    family: Family
    body_limit: int | None
    title_limit: int | None
    safe_url: str  # the URL with its secrets masked, for logs and the CLI

    async def send(self, message: Message) -> SendOutcome: ...
