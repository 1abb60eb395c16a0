"""The rules' saved state: a restarted service judges as a never-stopped one, reads
only what came after the saved state, and trusts no row it cannot authenticate.

One history of ~50,000 events (containers created with their configuration,
started, health-checked, exec'd into, stopped, most destroyed, a quarter left
behind, observed again by sweeps) is stored through the real rules stage into
a real SQLite trail; a copy of that trail is taken while the service would be
running, and the same service (never stopped) goes on with the next events.
Each test restarts a fresh stage on a copy, in its own way, feeds it the same
next events, and compares every alert with the never-stopped service's.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from config.models import RulesConfig
from listener.model.alert import Alert
from listener.model.containerconfig import ContainerConfig
from listener.model.event import Actor, Event, Who, natural_id
from listener.rules import engine as engine_module
from listener.rules.activity import ActivityState, ChurnBaseline, KnownContainer, activity_state
from listener.rules.engine import RuleEngine, RulesStage
from listener.rules.snapshot import Binding, decode, encode, seal
from sinks.base import AlertFilter
from sinks.sqlite import SQLiteTrail

NS = 1_000_000_000
T0 = 1_795_000_000_000_000_000
HEALTH = "curl -f http://localhost/health"
HISTORY_ROUNDS = 5_250  # ~52,500 events: the last save is 2,500 events behind the mark
BATCH = 1_000


def _event(n: int, t: int, action: str, cid: str, **extra: Any) -> Event:
    source = extra.pop("source", "docker")
    return Event(
        id=natural_id("rule-state", n, action, cid, t),
        time_ns=t,
        source=source,
        host="h1",
        type="container",
        action=action,
        actor=Actor(
            id=cid, name=f"name-{cid}", image=extra.pop("image", "registry.internal/app:1")
        ),
        who=Who(login="alice", method="auditd-cli"),
        **extra,
    )


def _config(r: int) -> dict[str, Any]:
    config = ContainerConfig(
        origin="inspect",
        user="0" if r % 2 else "1000",
        privileged=r % 97 == 0,
        read_only_rootfs=True,
        memory_bytes=64 << 20,
        pids_limit=100,
        healthcheck=HEALTH if r % 3 == 0 else None,
    )
    return config.as_event_config()


def round_events(r: int) -> list[Event]:
    """About eight events of one container's life; three in eight are left stopped."""
    t, cid = T0 + r * 30 * NS, f"c{r:06d}"
    health = {"action_detail": HEALTH}
    events = [
        _event(r, t, "create", cid, config=_config(r)),
        _event(r, t + 1 * NS, "start", cid),
        _event(r, t + 2 * NS, "exec_create", cid, attributes=health),
        _event(r, t + 3 * NS, "exec_start", cid, attributes=health),
        _event(r, t + 4 * NS, "exec_start", cid, attributes={"action_detail": "sh -c id"}),
        _event(r, t + 5 * NS, "kill", cid),
        _event(r, t + 6 * NS, "die", cid),
        _event(r, t + 7 * NS, "stop", cid),
    ]
    if r % 4 != 1 and r % 8:
        events.append(_event(r, t + 8 * NS, "destroy", cid))
    if r % 10 == 0 and r >= 40:  # a sweep sees an older, left-behind container again
        old = r - 40
        events.append(
            _event(
                r, t + 9 * NS, "observed", f"c{old:06d}", config=_config(old), source="docktrail"
            )
        )
    return events


def next_events() -> list[Event]:
    """After the history: what the windowed rules judge from what they remember."""
    r = HISTORY_ROUNDS + 10
    t = T0 + r * 30 * NS
    events: list[Event] = []
    # Execs into containers created long ago: severity from what was known of them.
    for old in (1, 8, 9, 97, 24):  # root, non-root, root with a health check, privileged, …
        cid = f"c{old:06d}"
        events.append(_event(r, t, "exec_start", cid, attributes={"action_detail": "sh"}))
        events.append(_event(r, t + NS, "exec_start", cid, attributes={"action_detail": HEALTH}))
    # Configurations judged long ago, seen again by a sweep (not judged twice), one changed.
    for old in (5, 16, 33):
        config = _config(old) if old != 33 else {**_config(old), "privileged": True}
        events.append(_event(r, t + 2 * NS, "posture", f"c{old:06d}", config=config))
    # A burst of creates and destroys (churn), then more left-behind containers (sprawl).
    for i in range(60):
        events.append(_event(r + i, t + 3 * NS + i * NS // 10, "create", f"burst{i}"))
    events.extend(e for rr in range(r + 1, r + 300) for e in round_events(rr))
    return events


async def feed(trail: SQLiteTrail, stage: RulesStage, events: Sequence[Event]) -> None:
    for start in range(0, len(events), BATCH):
        result = await trail.write(list(events[start : start + BATCH]))
        await stage.after_write(result.stored)


def copy_trail(source: Path, target: Path) -> Path:
    """A consistent copy of an open trail (SQLite's backup), with its key."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    key = target.with_suffix(".key")
    shutil.copyfile(source.with_suffix(".key"), key)
    key.chmod(0o600)
    return target


def judged(alerts: Sequence[Alert]) -> list[tuple[str, str, str, str]]:
    return sorted((a.event_id, a.rule, a.severity, a.summary) for a in alerts)


def alerts_on(trail: SQLiteTrail, events: Sequence[Event]) -> list[tuple[str, str, str, str]]:
    ids = {e.id for e in events}
    return judged([a for a in trail.query_alerts(AlertFilter()) if a.event_id in ids])


@dataclass(frozen=True)
class History:
    template: Path  # the trail as a running service left it (state saved behind the mark)
    mark: int
    expected: list[tuple[str, str, str, str]]  # the never-stopped service's alerts on NEXT


NEXT = next_events()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    return asyncio.run(_live_history(tmp_path_factory.mktemp("rule-state")))


async def _live_history(base: Path) -> History:
    trail = SQLiteTrail(base / "live.db", durability="normal")
    async with trail:
        stage = RulesStage(trail, RuleEngine(RulesConfig()))
        await stage.start()
        await feed(trail, stage, [e for r in range(HISTORY_ROUNDS) for e in round_events(r)])
        mark = await trail.call(lambda t: t.evaluated_through())
        template = await trail.call(lambda t: copy_trail(t.path, base / "template" / "t.db"))
        await feed(trail, stage, NEXT)  # the same service, never stopped
        expected = await trail.call(lambda t: alerts_on(t, NEXT))
    return History(template, mark, expected)


def restarted_copy(history: History, tmp_path: Path) -> SQLiteTrail:
    path = copy_trail(history.template, tmp_path / "t.db")
    return SQLiteTrail(path, durability="normal")


async def restart_and_continue(
    trail: SQLiteTrail, events: Sequence[Event] = NEXT
) -> tuple[RulesStage, list[tuple[str, str, str, str]]]:
    async with trail:
        stage = RulesStage(trail, RuleEngine(RulesConfig()))
        await stage.start()
        await feed(trail, stage, events)
        return stage, await trail.call(lambda t: alerts_on(t, NEXT))


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT name, through_seq, body, mac FROM rule_state").fetchall()


def rewrite_row(path: Path, sql: str, *params: Any) -> None:
    """What someone who can write the trail file (not read the key) can do to the row."""
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


# -- a restart judges as a never-stopped service ------------------------------------


async def test_the_history_alerts_what_the_next_events_are_judged_on(history: History) -> None:
    rules = {rule for _, rule, _, _ in history.expected}
    assert {"exec-in-container", "container-churn", "privileged-container"} <= rules
    execs = [
        (sev, summary) for _, rule, sev, summary in history.expected if rule == "exec-in-container"
    ]
    assert ("high", "exec into name-c000001: sh (interactive shell, as root)") in execs
    assert any("privileged" in summary for _, summary in execs)
    health = [summary.split(":")[0] for _, summary in execs if HEALTH in summary]
    assert "exec into name-c000001" in health  # not its health check: it has none
    assert "exec into name-c000009" not in health  # its own health check
    assert "container-sprawl" not in rules  # alerted once, in the history
    # Configurations judged at their create are not judged again; a changed one is.
    posture = {e.id: e.actor.id for e in NEXT if e.action == "posture"}
    judged_again = {posture[event_id] for event_id, *_ in history.expected if event_id in posture}
    assert judged_again == {"c000033"}


async def test_a_restart_judges_the_next_events_as_a_never_stopped_service(
    history: History, tmp_path: Path
) -> None:
    stage, found = await restart_and_continue(restarted_copy(history, tmp_path))
    assert found == history.expected
    # It restored the state saved during the history and read only what came after it.
    assert stage.restored_from is not None
    assert 0 < history.mark - stage.restored_from < engine_module.SAVE_EVERY_EVENTS
    assert stage.replayed == history.mark - stage.restored_from


async def test_after_a_clean_stop_a_restart_reads_no_event_again(
    history: History, tmp_path: Path
) -> None:
    trail = restarted_copy(history, tmp_path)
    async with trail:
        stage = RulesStage(trail, RuleEngine(RulesConfig()))
        await stage.start()
        await feed(trail, stage, NEXT[:1000])
        await stage.save_state()  # what `run` and `ingest` do when they stop
    stage, found = await restart_and_continue(SQLiteTrail(trail.path), NEXT[1000:])
    assert found == history.expected
    assert stage.replayed == 0


async def test_events_stored_before_a_crash_are_evaluated_at_restart(
    history: History, tmp_path: Path
) -> None:
    """Stored, then killed before the alerts and the mark: the restart judges them."""
    trail = restarted_copy(history, tmp_path)
    crashed = NEXT[:700]
    with trail:
        trail.append(crashed)  # events in, no alerts, no mark
        assert trail.evaluated_through() == history.mark
    _stage, found = await restart_and_continue(SQLiteTrail(trail.path), NEXT[700:])
    assert found == history.expected
    with SQLiteTrail(trail.path) as reopened:
        assert reopened.evaluated_through() == reopened.head()[0]


# -- a row that cannot be trusted is rebuilt ------------------------------------------


async def test_a_deleted_row_is_rebuilt_from_the_trail(history: History, tmp_path: Path) -> None:
    trail = restarted_copy(history, tmp_path)
    rewrite_row(trail.path, "DELETE FROM rule_state")
    stage, found = await restart_and_continue(trail)
    assert stage.restored_from is None and stage.replayed == history.mark
    assert found == history.expected
    assert rows(trail.path)[0][1] >= history.mark  # saved again: the next start is quick


def _forged_body(path: Path) -> bytes:
    """The saved state, edited to hide what comes next: exec risks and health checks,
    churn quiet for a century, sprawl and every configuration already alerted."""
    ((_, _, body, _),) = rows(path)
    state = decode(body)
    activity: ActivityState = state["activity"]
    for known in activity.containers.values():
        known.root, known.privileged, known.healthcheck = False, False, "sh"
    activity.quiet_until = {key: T0 + 100 * 365 * 86_400 * NS for key in activity.windows}
    activity.sprawl_alerted = True
    return encode(state)


async def test_an_edited_row_is_not_trusted(history: History, tmp_path: Path) -> None:
    trail = restarted_copy(history, tmp_path)
    rewrite_row(trail.path, "UPDATE rule_state SET body = ?", _forged_body(trail.path))
    stage, found = await restart_and_continue(trail)
    assert stage.restored_from is None
    assert found == history.expected


async def test_a_row_sealed_with_another_key_is_not_trusted(
    history: History, tmp_path: Path
) -> None:
    trail = restarted_copy(history, tmp_path)
    ((_, through, _, _),) = rows(trail.path)
    with SQLiteTrail(trail.path) as reader:
        binding = Binding(
            reader.trail_id,
            through,
            reader.get(through).hash or "",  # type: ignore[union-attr]
            RuleEngine(RulesConfig()).scope(),
        )
    forged = seal(decode(_forged_body(trail.path)), binding, b"a key the attacker made up")
    rewrite_row(trail.path, "UPDATE rule_state SET body = ?, mac = ?", forged.body, forged.mac)
    stage, found = await restart_and_continue(trail)
    assert stage.restored_from is None
    assert found == history.expected


async def test_a_row_moved_to_another_seq_is_not_trusted(history: History, tmp_path: Path) -> None:
    """A genuine row claimed for a later seq would skip the events in between."""
    trail = restarted_copy(history, tmp_path)
    rewrite_row(trail.path, "UPDATE rule_state SET through_seq = ?", history.mark)
    stage, found = await restart_and_continue(trail)
    assert stage.restored_from is None
    assert found == history.expected


async def test_a_row_saved_under_another_configuration_is_rebuilt(
    history: History, tmp_path: Path
) -> None:
    trail = copy_trail(history.template, tmp_path / "t.db")
    stricter = RulesConfig.model_validate({"container-sprawl": {"margin": 5}})
    async with SQLiteTrail(trail) as reopened:
        stage = RulesStage(reopened, RuleEngine(stricter))
        await stage.start()
    assert stage.restored_from is None and stage.replayed == history.mark


async def test_a_row_past_the_mark_is_not_used(history: History, tmp_path: Path) -> None:
    """The mark lowered (or the row from a later copy): events up to the mark are refolded."""
    trail = restarted_copy(history, tmp_path)
    lower = history.mark - engine_module.SAVE_EVERY_EVENTS
    rewrite_row(
        trail.path,
        "UPDATE source_state SET value = ? WHERE name = 'docktrail.rules'",
        orjson.dumps({"evaluated_through": lower}).decode(),
    )
    async with trail:
        stage = RulesStage(trail, RuleEngine(RulesConfig()))
        await stage.start()
    assert stage.restored_from is None and stage.replayed == lower


# -- the state itself -------------------------------------------------------------------


def test_the_state_survives_encoding_exactly() -> None:
    engine = RuleEngine(RulesConfig())
    engine.replay(e for r in range(200) for e in round_events(r))
    state = engine.context.state
    activity = activity_state(engine.context)
    activity.baselines["host", "h1"] = ChurnBaseline(bucket=3, peak=2, histogram={1: 4}, windows=4)
    restored = decode(encode(state))
    assert restored == state
    assert type(restored["activity"].baselines) is type(activity.baselines)
    assert isinstance(next(iter(restored["activity"].containers.values())), KnownContainer)


def test_a_state_of_unknown_types_is_refused() -> None:
    from config.errors import RuleStateError

    with pytest.raises(RuleStateError, match="pathlib"):
        encode({"x": Path("/")})
    planted = orjson.dumps({"$": "class", "c": "subprocess:Popen", "v": {}})
    with pytest.raises(RuleStateError, match="outside the rules"):
        decode(planted)


def test_sprawl_counts_follow_the_container_table() -> None:
    engine = RuleEngine(RulesConfig())
    engine.replay(e for r in range(500) for e in round_events(r))
    activity = activity_state(engine.context)
    for state in ("created", "running", "stopped"):
        expected = sum(c.state == state for c in activity.containers.values())
        assert activity.states[state] == expected
    assert activity.states["stopped"] == 125 + 63


# -- many events stored without their alerts ------------------------------------------

UNEVALUATED = [e for r in range(0, 600) for e in round_events(r)]  # several pages of BATCH


class FailsOnSecondPage(SQLiteTrail):
    """A trail whose second store of alerts fails (the disk filled up, say)."""

    stores = 0

    def append_alerts(self, *args: Any, **kwargs: Any) -> list[Alert]:
        self.stores += 1
        if self.stores == 2:
            raise OSError("no space left on device")
        return super().append_alerts(*args, **kwargs)


async def test_many_unevaluated_events_are_judged_a_page_at_a_time(tmp_path: Path) -> None:
    """A trail written without the rules (or a long crash) is evaluated at the next
    start page by page: the alerts are those of evaluating everything at once, and
    each page's alerts and mark are stored before the next page is read (memory stays
    bounded: all 10M events of a bench trail at once took 24 GB)."""
    assert len(UNEVALUATED) > 2 * engine_module.BATCH
    path = tmp_path / "t.db"
    async with FailsOnSecondPage(path) as trail:
        stored = (await trail.call(lambda t: t.append(UNEVALUATED))).stored
        expected = judged(RuleEngine(RulesConfig()).alerts_for(stored))
        stage = RulesStage(trail, RuleEngine(RulesConfig()))
        with pytest.raises(OSError, match="no space left"):
            await stage.start()
        assert await trail.call(lambda t: t.evaluated_through()) == engine_module.BATCH
    async with SQLiteTrail(path) as trail:
        stage = RulesStage(trail, RuleEngine(RulesConfig()))
        await stage.start()
        assert await trail.call(lambda t: t.evaluated_through() == t.head()[0])
        assert await trail.call(lambda t: alerts_on(t, stored)) == expected
