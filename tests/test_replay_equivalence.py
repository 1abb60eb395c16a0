"""`replay_trail` finds exactly what the rules give on the stored events, fully validated and
fed one by one; odd stored bodies give the same result or the same error as that reading.

The reference below reads each row with `Event.model_validate_json`, keeps the alerts the
trail does not hold (read back as models), and is what replay did before it was made
faster; replay must agree with it on ids, rules and whole alert bodies.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import json
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from config.errors import TamperError
from config.models import RulesConfig
from listener.cli import main
from listener.model.alert import Alert
from listener.model.catalogue import AUDIT_EVENT_TYPES
from listener.model.event import Event
from listener.rules import engine
from listener.rules.engine import RuleEngine, has_attribution, replay_trail
from sinks.base import AlertFilter, EventFilter
from sinks.memory import MemoryTrail
from sinks.sqlite import SQLiteTrail
from tests.shared_data import DATA

REPO = Path(__file__).resolve().parents[1]
SCENARIO = DATA / "scenario-a"
STRICT = RulesConfig.model_validate(
    {"untrusted-image": {"trusted": ["docker.io/library/*"]}, "runs-as-root": {"enabled": True}}
)


@functools.cache
def _bench_rules() -> ModuleType:
    """bench/rules.py: its realistic event stream (lifecycles, configs, execs, pulls)."""
    spec = importlib.util.spec_from_file_location("bench_rules", REPO / "bench" / "rules.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _validated_rows(path: Path) -> Iterator[Event]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT seq, body, prev_hash, hash FROM events ORDER BY seq")
        for _seq, body, prev_hash, digest in rows.fetchall():
            event = Event.model_validate_json(body)
            event.prev_hash, event.hash = prev_hash, digest
            yield event


def reference(path: Path, rules: RulesConfig, since_ns: int | None = None) -> list[Alert]:
    """What replay gave before: every row validated in full, the rules fed one by one."""
    with SQLiteTrail(path) as trail:
        attributed = has_attribution(trail)
        stored = {alert.id for alert in trail.query_alerts(AlertFilter())}
    engine = RuleEngine(rules, attribution_available=attributed)
    found: list[Alert] = []
    for event in _validated_rows(path):
        alerts = engine.alerts_for_event(event)
        if since_ns is None or event.time_ns >= since_ns:
            found.extend(alert for alert in alerts if alert.id not in stored)
    return found


def replayed(path: Path, rules: RulesConfig, since_ns: int | None = None) -> list[Alert]:
    with SQLiteTrail(path) as trail:
        return replay_trail(trail, rules, since_ns=since_ns)


def bodies(alerts: list[Alert]) -> list[dict[str, Any]]:
    return [alert.model_dump() for alert in alerts]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6,500 events of the rules benchmark's stream (2 % of them risky containers)."""
    bench = _bench_rules()
    path = tmp_path_factory.mktemp("synthetic") / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(list(bench.rule_events(6_500)))
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A live-recorded scenario with auditd attribution, alerts stored under a lenient policy."""
    tmp = tmp_path_factory.mktemp("scenario")
    lenient = tmp / "lenient.yaml"
    lenient.write_text("rules:\n  runs-as-root: {enabled: false}\n")
    ingest = ["--db", str(tmp / "t.db"), "-c", str(lenient), "ingest"]
    sources = ["--docker-events", str(SCENARIO / "events.jsonl")]
    sources += ["--audit-log", str(SCENARIO / "audit.log.gz")]
    result = CliRunner().invoke(main, [*ingest, *sources], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp / "t.db"


def test_replay_of_the_benchmark_stream_finds_what_the_rules_give(synthetic: Path) -> None:
    bench = _bench_rules()
    expected = reference(synthetic, bench.RULES)
    assert len(expected) > 500  # the stream fires many rules: the comparison means something
    assert len({alert.rule for alert in expected}) >= 5
    assert bodies(replayed(synthetic, bench.RULES)) == bodies(expected)


def copy_of(path: Path, tmp_path: Path) -> Path:
    """A copy of the trail (with its key and WAL) for a test that adds to it or edits it."""
    shutil.copytree(path.parent, tmp_path / "copy")
    return tmp_path / "copy" / path.name


@pytest.mark.parametrize("chunk", [2_000, 7], ids=["one lookup", "lookups in chunks"])
def test_replay_skips_what_the_trail_holds_and_honours_the_range(
    synthetic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(engine, "STORED_LOOKUP_CHUNK", chunk)
    bench = _bench_rules()
    path = copy_of(synthetic, tmp_path)
    everything = reference(path, bench.RULES)
    with SQLiteTrail(path) as trail:
        trail.append_alerts(everything[::3])  # some stored already, spread over the trail
    expected = reference(path, bench.RULES)
    assert 0 < len(expected) < len(everything)
    assert bodies(replayed(path, bench.RULES)) == bodies(expected)
    middle = everything[len(everything) // 2].time_ns
    in_range = reference(path, bench.RULES, since_ns=middle)
    assert 0 < len(in_range) < len(expected)
    assert bodies(replayed(path, bench.RULES, since_ns=middle)) == bodies(in_range)


def test_replay_of_an_attributed_scenario_finds_what_the_rules_give(scenario: Path) -> None:
    expected = reference(scenario, STRICT)
    with SQLiteTrail(scenario) as trail:
        assert has_attribution(trail) and trail.count_alerts() > 0
        audit_types = {e.type for e in trail.query(EventFilter(source="auditd"))}
    # has_attribution looks by type: every type of audit record but exec commands.
    assert "docker-cli" in audit_types and audit_types - {"container"} <= set(AUDIT_EVENT_TYPES)
    rules = {alert.rule for alert in expected}
    assert "runs-as-root" in rules and len(expected) > 5
    assert bodies(replayed(scenario, STRICT)) == bodies(expected)


def test_replay_of_a_trail_without_sqlite_asks_its_alerts(synthetic: Path) -> None:
    bench = _bench_rules()
    memory = MemoryTrail()
    memory.append(list(_validated_rows(synthetic)))
    everything = reference(synthetic, bench.RULES)
    memory.append_alerts([alert.model_copy() for alert in everything[:100]])
    found = replay_trail(memory, bench.RULES)
    assert bodies(found) == bodies(everything[100:])


def test_replay_leaves_the_collector_as_it_found_it(synthetic: Path) -> None:
    thresholds, frozen = gc.get_threshold(), gc.get_freeze_count()
    replayed(synthetic, RulesConfig())
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == frozen
    gc.freeze()  # a caller that froze its own objects (the service's tune_gc) keeps them frozen
    try:
        frozen_by_caller = gc.get_freeze_count()
        assert frozen_by_caller > 0
        replayed(synthetic, RulesConfig())
        assert gc.get_freeze_count() == frozen_by_caller and gc.get_threshold() == thresholds
    finally:
        if not frozen:
            gc.unfreeze()


# -- odd stored bodies: what someone who can write the trail file can put there -----------


def _edit(path: Path, seq: int, edit: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    """Rewrite the body of event `seq` with `edit` merged in and `drop` keys removed."""
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER events_append_only_update")
        (body,) = conn.execute("SELECT body FROM events WHERE seq = ?", (seq,)).fetchone()
        value = json.loads(body)
        for key in drop:
            value.pop(key)
        for key, item in edit.items():
            if isinstance(item, dict) and isinstance(value.get(key), dict):
                value[key] = {**value[key], **item}
            else:
                value[key] = item
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        conn.execute("UPDATE events SET body = ? WHERE seq = ?", (text, seq))


def _outcome(read: Any) -> tuple[str, Any]:
    """("alerts", their bodies) or ("error", what the user sees: type, seq and message)."""
    try:
        return "alerts", bodies(read())
    except TamperError as exc:
        return "error", (type(exc).__name__, exc.seq, str(exc))
    except Exception as exc:  # a crash must be the same crash
        return "error", (type(exc).__name__, None, str(exc))


def _reference_outcome(path: Path, rules: RulesConfig) -> tuple[str, Any]:
    """Before: a body that does not validate stops replay with a TamperError naming its seq."""

    def read() -> list[Alert]:
        try:
            return reference(path, rules)
        except ValidationError as exc:
            seq = _failing_seq(path)
            raise TamperError(
                f"stored body is not a valid event ({exc.error_count()} errors); "
                "run docktrail verify",
                seq=seq,
            ) from exc

    return _outcome(read)


def _failing_seq(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        for seq, body in conn.execute("SELECT seq, body FROM events ORDER BY seq"):
            try:
                Event.model_validate_json(body)
            except ValidationError:
                return int(seq)
    raise AssertionError("no row fails")


ODD_BODIES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "time as a string of digits (pydantic's lax mode reads it)": ({"time_ns": "1700000000"}, ()),
    "time as text": ({"time_ns": "yesterday"}, ()),
    "a bool for the seq": ({"seq": True}, ()),
    "an unknown source": ({"source": "kernel"}, ()),
    "an extra top-level field": ({"owner": "mallory"}, ()),
    "an extra field in who": ({"who": {"root": True}}, ()),
    "a number for the login": ({"who": {"login": 0}}, ()),
    "candidates of mixed types": ({"who": {"candidates": ["alice", 1]}}, ()),
    "a list for attributes": ({"attributes": ["labels"]}, ()),
    "a string for the actor": ({"actor": "web-1"}, ()),
    "no host": ({}, ("host",)),
    "no who and no config (defaults)": ({}, ("who", "config")),
    # The config fingerprint (orjson) cannot hash it: that tracking is logged and skipped.
    "a huge integer in the config": ({"config": {"memory_bytes": 2**70}}, ()),
    "a float for the pids limit": ({"config": {"pids_limit": 100.0}}, ()),
}


@pytest.mark.parametrize("case", ODD_BODIES, ids=list(ODD_BODIES))
def test_an_odd_body_gives_what_full_validation_gives(
    synthetic: Path, tmp_path: Path, case: str
) -> None:
    bench = _bench_rules()
    path = copy_of(synthetic, tmp_path)
    edit, drop = ODD_BODIES[case]
    _edit(path, 40, edit, drop)  # a create with a configuration: every container rule reads it
    expected = _reference_outcome(path, bench.RULES)
    with SQLiteTrail(path) as trail:
        got = _outcome(lambda: replay_trail(trail, bench.RULES))
    assert got == expected
