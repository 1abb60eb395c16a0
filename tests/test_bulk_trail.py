"""bench/bulk_trail.py, the builder of the 10M-event bench trails: the trail's own writer
stores every row with the secondary indexes deferred, the indexes come back with the SQL
the trail had, and the result verifies. A bulk-built trail must hold exactly the rows
and indexes of the same input built incrementally, as the service grows it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from bench import bulk_trail
from sinks.sqlite import SQLiteTrail, verify_file
from tests.shared_data import require_shared

REPO = Path(__file__).resolve().parents[1]
EVENTS = 20_000


def _load(name: str) -> ModuleType:
    if str(REPO / "bench") not in sys.path:
        sys.path.append(str(REPO / "bench"))  # the benches import `figures` as scripts do
    spec = importlib.util.spec_from_file_location(f"bulk_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def _indexes(path: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return bulk_trail.index_definitions(conn)


def _assert_same_trail(bulk: Path, grown: Path) -> None:
    for table in ("events", "alerts"):
        sql = f"SELECT seq, id, body, hash FROM {table} ORDER BY seq"
        assert _rows(bulk, sql) == _rows(grown, sql), table
    assert _indexes(bulk) == _indexes(grown)
    for path in (bulk, grown):
        report = verify_file(path, path.with_suffix(".key"))
        assert report.ok, report.problem


def _build_both(tmp_path: Path, fill: Callable[[Path], None]) -> tuple[Path, Path]:
    grown, bulk = tmp_path / "grown" / "t.db", tmp_path / "bulk" / "t.db"
    grown.parent.mkdir()
    bulk.parent.mkdir()
    fill(grown)
    bulk_trail.build(bulk, bulk.with_suffix(".key"), lambda: fill(bulk))
    return bulk, grown


def test_the_scale_bench_trail_bulk_built_holds_the_rows_of_one_grown(tmp_path: Path) -> None:
    scale = _load("trail_scale")
    bulk, grown = _build_both(tmp_path, lambda path: scale._fill(path, EVENTS))
    _assert_same_trail(bulk, grown)
    assert len(_rows(bulk, "SELECT seq FROM alerts")) > 0  # the alerts chain is compared too


def test_the_growth_bench_trail_bulk_built_holds_the_rows_rules_and_states(
    tmp_path: Path,
) -> None:
    require_shared("fixtures", "scenario-a", "events.jsonl")
    growth = _load("growth")
    mix = growth.load_mix()
    bulk, grown = _build_both(
        tmp_path, lambda path: asyncio.run(growth.build_trail(path, mix.rounds(0, EVENTS)))
    )
    _assert_same_trail(bulk, grown)
    states = "SELECT name, through_seq FROM rule_state ORDER BY name"
    assert _rows(bulk, states) == _rows(grown, states) != []


def test_the_secondary_indexes_are_absent_while_loading(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    during: list[set[str]] = []
    scale = _load("trail_scale")

    def fill() -> None:
        during.append(set(_indexes(path)))
        scale._fill(path, 2_000)

    bulk_trail.build(path, path.with_suffix(".key"), fill)
    # dedupe still looks ids up (the actor index is tables, kept by the writer)
    assert during == [{"events_id", "alerts_id"}]
    assert len(_indexes(path)) > 10  # the others are back: events_time, alerts_rule, ...


def test_a_trail_left_without_its_indexes_does_not_verify(tmp_path: Path) -> None:
    """What the builder's final check relies on: verify notices a dropped index."""
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(list(_load("trail_append").synthetic_events(100)))
    bulk_trail.drop_secondary_indexes(path)
    with pytest.raises(bulk_trail.BulkBuildError, match="dropped"):
        bulk_trail.check_verifies(path, path.with_suffix(".key"))


def test_an_index_that_is_not_the_trails_own_fails_the_build(tmp_path: Path) -> None:
    path = tmp_path / "t.db"

    def fill() -> None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE INDEX events_host ON events (host)")

    with pytest.raises(bulk_trail.BulkBuildError, match="index definitions differ"):
        bulk_trail.build(path, path.with_suffix(".key"), fill)


def test_growth_measures_a_large_trail_in_place_with_fresh_events_each_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_shared("fixtures", "scenario-a", "events.jsonl")
    growth = _load("growth")
    monkeypatch.setattr(growth, "BULK_FROM", 2_000)
    cached = growth.cached_trail(tmp_path, growth.load_mix(), 2_000, rebuild=False)
    assert cached.name.endswith("-2k-bulk.db")
    work = tmp_path / "work"
    work.mkdir()
    for _ in range(2):  # two runs of the bench: neither ingest may be a duplicate
        path = growth.in_place(cached)
        growth.ingest_secs(path, growth.fresh_events(work, path, 500))
    observed = "SELECT count(*) FROM events WHERE source != 'docktrail'"
    assert _rows(cached, observed) == [(2_000 + 2 * 500,)]
    report = verify_file(cached, cached.with_suffix(".key"))
    assert report.ok, report.problem
