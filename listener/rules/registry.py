"""Every rule, registered in one place, and the function that applies them.

Rule ids are a contract (users write them in configuration); DESIGN.md lists
them. `evaluate` applies the enabled rules to one event in a fixed order,
applies severity overrides and exceptions, and returns the findings;
suppressed findings are returned too, marked with the exception's reason, so
auditors can see what was suppressed and why.
"""

from __future__ import annotations

from collections.abc import Mapping

from config.models import RuleConfig
from listener.event import Event
from listener.rules import activity, container, image, intent, posture
from listener.rules.base import Finding, Rule, RuleContext, exception_reason

RULES: tuple[Rule, ...] = (
    Rule(container.PRIVILEGED, container.check_privileged),
    Rule(container.SOCKET_MOUNT, container.check_socket_mount),
    Rule(container.SENSITIVE_MOUNT, container.check_sensitive_mount),
    Rule(container.DANGEROUS_CAPABILITY, container.check_dangerous_capability),
    Rule(container.HOST_NAMESPACE, container.check_host_namespace),
    Rule(container.SECURITY_PROFILE, container.check_security_profile),
    Rule(image.UNTRUSTED, image.check_untrusted_image),
    Rule(activity.EXEC, activity.check_exec),
    Rule(activity.CHURN, activity.check_churn),
    Rule(activity.SPRAWL, activity.check_sprawl),
    Rule(activity.DAEMON_FILE, activity.check_daemon_file),
    Rule(container.NO_LIMITS, container.check_no_limits),
    Rule(container.WRITABLE_ROOTFS, container.check_writable_rootfs),
    Rule(container.RUNS_AS_ROOT, container.check_runs_as_root),
    Rule(activity.UNATTRIBUTED, activity.check_unattributed),
    Rule(activity.MISMATCH, activity.check_attribution_mismatch),
    Rule(intent.MISMATCH, intent.check_intent_mismatch),
    Rule(intent.EXPIRED, intent.check_expired),
    Rule(intent.UNDECLARED, intent.check_undeclared),
    Rule(posture.DAEMON_POSTURE, posture.check_daemon_posture),
    Rule(posture.AUDIT_RULE_POSTURE, posture.check_audit_rule_posture),
    Rule(posture.CONTAINER_DRIFT, posture.check_container_drift),
    Rule(posture.HOST_POSTURE, posture.check_host_posture),
)

RULES_BY_ID: Mapping[str, Rule] = {rule.meta.id: rule for rule in RULES}


def evaluate(event: Event, ctx: RuleContext) -> list[Finding]:
    """Findings of every enabled rule on one event (suppressed ones included, marked)."""
    activity.track_container(event, ctx)
    image.track_image(event, ctx)
    findings: list[Finding] = []
    for rule, settings in _applicable(event, ctx):
        for found in rule.check(event, ctx):
            if settings.severity is not None:
                found.severity = settings.severity
            found.suppressed_by = exception_reason(settings.exceptions, event)
            findings.append(found)
    return findings


def _applicable(event: Event, ctx: RuleContext) -> list[tuple[Rule, RuleConfig]]:
    key = (event.type, event.action)
    found = ctx.dispatch.get(key)
    if found is None:
        found = ctx.dispatch[key] = [
            (rule, settings)
            for rule in RULES
            if (settings := rule.settings(ctx.rules)).enabled
            and event.type in rule.meta.types
            and (rule.meta.actions is None or event.action in rule.meta.actions)
        ]
    return found
