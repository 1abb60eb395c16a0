"""Rules on declared deployment intents: who deployed, until when, and whether declared.

The intent stage (`listener.intents`) stamps a container `create` that matches
an open intent with `attributes.intent` and `why.source = "intent"`; the
expiry watch records a `docktrail` container `expired` event when a container
is still running after its expiry. These rules only read those stored fields,
so they judge the same way live, on ingest and on replay.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Sequence

from config.models import UndeclaredDeploymentRule
from listener.model.catalogue import EXPIRED, UNDECLARED
from listener.model.catalogue import INTENT_MISMATCH as MISMATCH
from listener.model.event import Event
from listener.rules.base import Finding, RuleContext, finding

# `who.method` values that are a claim, not evidence of who asked the Engine.
_NOT_EVIDENCE = frozenset({"unknown", "label", "intent"})


def check_intent_mismatch(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    intent = event.attributes.get("intent")
    if event.source != "docker" or not isinstance(intent, dict):
        return
    declared = intent.get("who")
    login = event.who.login
    if not declared or not login or event.who.method in _NOT_EVIDENCE or login == declared:
        return
    yield finding(
        MISMATCH,
        event,
        f"{event.actor.name or event.actor.id[:12]} created by {login}, "
        f"but intent {intent.get('id')} declared {declared}",
        intent=intent.get("id"),
        declared_who=declared,
        evidence_who=login,
        method=event.who.method,
    )


def check_expired(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.source != "docktrail":
        return
    attributes = event.attributes
    yield finding(
        EXPIRED,
        event,
        f"{event.actor.name or event.actor.id[:12]} still running after its expiry "
        f"{attributes.get('expires')} ({attributes.get('expires_from')})",
        expires=attributes.get("expires"),
        expires_from=attributes.get("expires_from"),
        intent=attributes.get("intent_id"),
    )


def check_undeclared(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.source != "docker" or event.why.source in ("intent", "label"):
        return
    settings = ctx.rules.undeclared_deployment
    if not _in_scope(settings, event):
        return
    yield finding(
        UNDECLARED,
        event,
        f"{event.actor.name or event.actor.id[:12]} ({event.actor.image or '?'}) deployed "
        "with no declared intent and no audit.why label",
    )


def _in_scope(settings: UndeclaredDeploymentRule, event: Event) -> bool:
    return _any_match(settings.images, event.actor.image) and _any_match(
        settings.names, event.actor.name
    )


def _any_match(patterns: Sequence[str], value: str | None) -> bool:
    if not patterns:
        return True
    return value is not None and any(fnmatch.fnmatchcase(value, p) for p in patterns)
