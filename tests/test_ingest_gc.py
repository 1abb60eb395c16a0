"""`docktrail ingest` parses with the collector tuned as `run` tunes it, then restores it."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import listener.ingest
from listener.app import GC_THRESHOLDS
from listener.cli import main
from tests.shared_data import DATA

EVENTS = DATA / "scenario-a" / "events.jsonl"


def test_ingest_runs_with_the_service_gc_and_gives_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = listener.ingest.ingest_files
    seen: dict[str, Any] = {}

    async def watched(*args: Any, **kwargs: Any) -> Any:
        seen["threshold"] = gc.get_threshold()
        seen["frozen"] = gc.get_freeze_count()
        return await real(*args, **kwargs)

    monkeypatch.setattr(listener.ingest, "ingest_files", watched)
    before = gc.get_threshold()
    args = ["--db", str(tmp_path / "t.db"), "ingest", "--docker-events", str(EVENTS)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "stored 239" in result.output
    assert seen["threshold"] == GC_THRESHOLDS
    assert seen["frozen"] > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
