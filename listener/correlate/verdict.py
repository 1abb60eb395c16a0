"""The verdict on an Engine event: which of its candidate calls caused it (or none,
when the best come from different logins), and what that call tells the event.
"""

from __future__ import annotations

from listener.argv import container_config, exec_options
from listener.correlate.calls import agreeing, login_name, merged_config
from listener.correlate.effects import SINGULAR, Candidate, CorrelationStats
from listener.model.event import Event, Who


def choose(event: Event, candidates: list[Candidate], stats: CorrelationStats) -> Candidate | None:
    """The call that caused `event`, or None (then `event.who` says unknown, and why)."""
    effect = (event.type, event.action)
    # A call that already caused its one create (start, exec_create …) causes no other.
    candidates = [c for c in candidates if effect not in c.call.claimed]
    if not candidates:
        event.who = _unknown(event.who)
        stats.unattributed += event.who.method == "unknown"
        return None
    best = max(c.score for c in candidates)
    top = agreeing(event, [c for c in candidates if c.score == best])
    singular = any(effect in SINGULAR.get(c.call.command, ()) for c in top)
    logins = {c.call.login_key for c in top}
    if len(logins) > 1:
        names = sorted({login_name(c.call.who) for c in top})
        event.who = _unknown(event.who).model_copy(update={"candidates": names})
        stats.ambiguous += 1
        return None
    # The same login either way: FIFO for a singular effect (calls are served in
    # order), else the closest call before the event.
    top.sort(key=lambda c: c.call.time_ns)
    chosen = top[0] if singular else top[-1]
    if len(top) > 1:
        chosen = Candidate(chosen.call, chosen.evidence, chosen.score, sure=False)
    if effect in SINGULAR.get(chosen.call.command, ()):
        chosen.call.claimed.add(effect)
    stats.attributed += 1
    return chosen


def _unknown(who: Who) -> Who:
    # A declared who (label, intent) stays; otherwise the method says we do not know.
    return who if who.method not in ("unknown", "") else Who(method="unknown")


def apply_choice(event: Event, chosen: Candidate) -> None:
    """Give the event the chosen call's `who`, and a create or exec its argv `config`."""
    cli = chosen.call
    event.who = cli.who.model_copy(
        update={
            "method": "auditd-cli",
            "matched_by": chosen.evidence,
            "confidence": "high" if chosen.sure else "medium",
            "candidates": None,
        }
    )
    if event.type != "container":
        return
    if event.action == "create" and cli.command in ("run", "create"):
        argv_config = container_config(cli.call)
        if argv_config is not None:
            event.config = merged_config(event.config, argv_config)
    elif event.action in ("exec_create", "exec_start") and cli.command == "exec":
        options = exec_options(cli.call)
        if options is not None and not event.config:
            event.config = options.model_dump(mode="json")
