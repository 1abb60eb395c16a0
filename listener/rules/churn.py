"""container-churn: the creates/destroys of each scope (host, image, user) in a sliding
window against a threshold: the configured one, or, once the scope's history holds
enough windows (`baseline: learn`), the higher of it and a learned one: a high
percentile of the counts the scope reached per window, times a factor.

The history is kept as a histogram (peak count per window -> windows), never as
events; the engine's `prime` feeds it from the whole trail at start
(`learn_churn`), and every event since adds to it. The state lives in
`listener.rules.activity` (`ActivityState`, `ChurnBaseline`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from config.models import ContainerChurnRule
from listener.model.catalogue import CHURN
from listener.model.event import Event
from listener.rules.activity import (
    CHURN_ACTIONS,
    SCOPES_SWEPT_FROM,
    ActivityState,
    ChurnBaseline,
    activity_state,
)
from listener.rules.base import Finding, RuleContext, finding

_NS = 1_000_000_000
_BASELINE_MAX_SCOPES = 10_000  # scopes with a learned baseline (least recently active dropped)
# A scope over its threshold: (scope, count in the window, threshold, learned threshold).
Crossed = tuple[tuple[str, ...], int, int, int | None]


def check_churn(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "container" or event.action not in CHURN_ACTIONS:
        return
    settings = ctx.rules.container_churn
    window_ns = settings.window_secs * _NS
    state = activity_state(ctx)
    crossed: list[Crossed] = []
    keys = _churn_keys(event)
    _count_churn(event, keys, settings, state, crossed)
    if not crossed:
        return
    # One alert per burst: every scope this event counts in goes quiet for a window,
    # not only those that crossed (the image and user windows of the same burst
    # would otherwise cross a few events later and alert again).
    for key in keys:
        state.quiet_until[key] = event.time_ns + window_ns
    scope, count, threshold, learned = crossed[0]
    baseline = "learned" if threshold != settings.threshold else "fixed"
    over = f"; learned baseline {threshold}" if baseline == "learned" else ""
    yield finding(
        CHURN,
        event,
        f"{count} container creates/destroys in {settings.window_secs}s "
        f"({_scope_text(scope)}{over})",
        window_secs=settings.window_secs,
        threshold=threshold,
        baseline=baseline,
        configured_threshold=settings.threshold,
        learned_threshold=learned,
        history_windows=_history_windows(state, scope),
        scopes={_scope_text(key): n for key, n, _, _ in crossed},
        thresholds={_scope_text(key): limit for key, _, limit, _ in crossed},
    )


def learn_churn(event: Event, ctx: RuleContext) -> None:
    """Counts an already evaluated event into the churn windows and baselines, silently.

    For `prime`: history older than the recent window teaches the baselines
    without being judged again.
    """
    settings = ctx.rules.container_churn
    if event.type != "container" or event.action not in CHURN_ACTIONS or not settings.enabled:
        return
    _count_churn(event, _churn_keys(event), settings, activity_state(ctx), None)


def _count_churn(
    event: Event,
    keys: list[tuple[str, ...]],
    settings: ContainerChurnRule,
    state: ActivityState,
    crossed: list[Crossed] | None,
) -> None:
    """Counts `event` in the window of each of its scopes; with `crossed`, adds to it each
    scope over its threshold and not quiet (scope, count, threshold, learned threshold)."""
    now = event.time_ns
    window_ns = settings.window_secs * _NS
    oldest = now - window_ns
    learn = settings.baseline == "learn"
    bucket = now // window_ns if learn else 0
    windows, baselines, fixed = state.windows, state.baselines, settings.threshold
    for key in keys:
        times = windows.get(key)
        if times is None:
            times = windows[key] = deque()
        times.append(now)
        while times and times[0] <= oldest:
            times.popleft()
        learned = None
        if learn:
            # `_baseline` inlined for the scopes seen before (a call per scope and event)
            baseline = baselines.get(key)
            if baseline is None:
                baseline = _baseline(state, key)
            else:
                baselines.move_to_end(key)
            learned = baseline.learned  # from closed windows: this one is still open
            baseline.observe(bucket, len(times), settings)
        if crossed is not None:
            # as each scope is counted: before the sweep below, which drops quiet periods
            # max(fixed, learned or 0), without the builtin's call (a tenth of the rule)
            floor = learned or 0
            threshold = floor if floor > fixed else fixed
            if len(times) > threshold and now >= state.quiet_until.get(key, 0):
                crossed.append((key, len(times), threshold, learned))
    if len(windows) >= state.sweep_scopes_at:
        _forget_quiet_scopes(state, now, window_ns)


def _forget_quiet_scopes(state: ActivityState, now_ns: int, window_ns: int) -> None:
    """Churn scopes with nothing left in their window and no quiet period to run count as
    never seen: drop them, so that a CI host's one-off image tags (or an ingested file's
    made-up ones) do not grow the tables for ever. Swept when the scopes have doubled
    since the last sweep: a constant cost per new scope. (An event older than the window
    by then counts without them: events arrive in time order but for seconds.)"""
    oldest = now_ns - window_ns
    state.windows = {key: t for key, t in state.windows.items() if t and t[-1] > oldest}
    state.quiet_until = {key: until for key, until in state.quiet_until.items() if until > now_ns}
    state.sweep_scopes_at = max(SCOPES_SWEPT_FROM, 2 * len(state.windows))


def _baseline(state: ActivityState, key: tuple[str, ...]) -> ChurnBaseline:
    baselines = state.baselines
    baseline = baselines.get(key)
    if baseline is None:
        baseline = baselines[key] = ChurnBaseline()
        if len(baselines) > _BASELINE_MAX_SCOPES:
            baselines.popitem(last=False)
    else:
        baselines.move_to_end(key)
    return baseline


def _history_windows(state: ActivityState, key: tuple[str, ...]) -> int:
    baseline = state.baselines.get(key)
    return baseline.windows if baseline is not None else 0


def _churn_keys(event: Event) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = [("host", event.host)]
    if event.actor.image:
        keys.append(("image", event.host, event.actor.image))
    if event.who.login:
        keys.append(("user", event.host, event.who.login))
    return keys


def _scope_text(key: tuple[str, ...]) -> str:
    kind, *values = key
    return f"{kind} {'/'.join(values)}"
