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
from listener.model import catalogue
from listener.model.event import Event
from listener.rules import activity, churn, container, exec_session, image, intent, posture, proxy
from listener.rules.base import Finding, Rule, RuleContext, note_failure, settled

RULES: tuple[Rule, ...] = (
    Rule(catalogue.PRIVILEGED, container.check_privileged),
    Rule(catalogue.SOCKET_MOUNT, container.check_socket_mount),
    Rule(catalogue.SENSITIVE_MOUNT, container.check_sensitive_mount),
    Rule(catalogue.DANGEROUS_CAPABILITY, container.check_dangerous_capability),
    Rule(catalogue.HOST_NAMESPACE, container.check_host_namespace),
    Rule(catalogue.SECURITY_PROFILE, container.check_security_profile),
    Rule(catalogue.UNTRUSTED, image.check_untrusted_image),
    Rule(catalogue.EXEC, activity.check_exec),
    Rule(catalogue.CHURN, churn.check_churn),
    Rule(catalogue.SPRAWL, activity.check_sprawl),
    Rule(catalogue.DAEMON_FILE, activity.check_daemon_file),
    Rule(catalogue.NO_LIMITS, container.check_no_limits),
    Rule(catalogue.WRITABLE_ROOTFS, container.check_writable_rootfs),
    Rule(catalogue.RUNS_AS_ROOT, container.check_runs_as_root),
    Rule(catalogue.UNATTRIBUTED, activity.check_unattributed),
    Rule(catalogue.ATTRIBUTION_MISMATCH, activity.check_attribution_mismatch),
    Rule(catalogue.INTENT_MISMATCH, intent.check_intent_mismatch),
    Rule(catalogue.EXPIRED, intent.check_expired),
    Rule(catalogue.UNDECLARED, intent.check_undeclared),
    Rule(catalogue.PROXY_REFUSAL, proxy.check_proxy_refusal),
    Rule(catalogue.DAEMON_POSTURE, posture.check_daemon_posture),
    Rule(catalogue.AUDIT_RULE_POSTURE, posture.check_audit_rule_posture),
    Rule(catalogue.CONTAINER_DRIFT, posture.check_container_drift),
    Rule(catalogue.HOST_POSTURE, posture.check_host_posture),
    Rule(catalogue.EXEC_CODE_FETCH, exec_session.check_code_fetch),
    Rule(catalogue.EXEC_PACKAGE_MANAGER, exec_session.check_package_manager),
    Rule(catalogue.EXEC_CREDENTIAL_READ, exec_session.check_credential_read),
    Rule(catalogue.EXEC_BINARY_EDIT, exec_session.check_binary_edit),
    Rule(catalogue.EXEC_ROOT_SHELL, exec_session.check_root_shell),
)

RULES_BY_ID: Mapping[str, Rule] = {rule.meta.id: rule for rule in RULES}


# (type, action) pairs whose applicable rules are remembered: the Engine's and ours are a
# few hundred; an ingested file may bring any number.
_DISPATCH_MAX = 4_096


def evaluate(event: Event, ctx: RuleContext) -> list[Finding]:
    """Findings of every enabled rule on one event (suppressed ones included, marked)."""
    # Only container and image events feed the tables (and a build's CLI call, the image's).
    if event.type == "container":
        try:
            activity.track_container(event, ctx)
        except Exception as exc:  # an odd stored body must not stop the rules (see `judged`)
            note_failure("track_container", event, exc)
    elif event.type in image.TRACKED_TYPES:  # no call for the others, which it passes over
        try:
            image.track_image(event, ctx)
        except Exception as exc:  # as above
            note_failure("track_image", event, exc)
    findings: list[Finding] = []
    applicable = ctx.dispatch.get((event.type, event.action))  # `_applicable`, without a call
    if applicable is None:
        applicable = _applicable(event, ctx)
    for rule, settings in applicable:
        # `judged` inlined: a generator per applicable rule was a tenth of replay's rule time.
        try:
            for found in rule.check(event, ctx):
                findings.append(settled(found, settings, event))
        except Exception as exc:  # as in `judged`: one odd stored body must not stop the rules
            note_failure(rule.meta.id, event, exc)
    return findings


def _applicable(event: Event, ctx: RuleContext) -> list[tuple[Rule, RuleConfig]]:
    found = [
        (rule, settings)
        for rule in RULES
        if (settings := rule.settings(ctx.rules)).enabled
        and event.type in rule.meta.types
        and (rule.meta.actions is None or event.action in rule.meta.actions)
    ]
    if len(ctx.dispatch) < _DISPATCH_MAX:  # types and actions of a hostile file: not kept
        ctx.dispatch[(event.type, event.action)] = found
    return found
