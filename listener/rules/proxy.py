"""The socket proxy's refusals: an event in the trail, and an alert a person sees."""

from __future__ import annotations

from collections.abc import Iterator

from listener.model.catalogue import PROXY_REFUSAL
from listener.model.event import Event
from listener.rules.base import Finding, RuleContext, finding


def check_proxy_refusal(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    attributes = event.attributes
    method, path = str(attributes.get("method") or ""), str(attributes.get("path") or "")
    who = event.who.login or (f"uid {event.who.uid}" if event.who.uid is not None else "?")
    yield finding(
        PROXY_REFUSAL,
        event,
        f"refused {method} {path} for {who}: {attributes.get('refused')}",
        method=method,
        path=path,
        reason=attributes.get("refused"),
        login=event.who.login,
    )
