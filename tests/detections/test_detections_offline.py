"""The detections table, offline: each scenario's captured inputs through `ingest`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.detections.harness import Scenario, problems, run_offline
from tests.detections.scenarios import SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario_raises_what_it_must_and_nothing_else(scenario: Scenario, tmp_path: Path) -> None:
    outcome = run_offline(scenario, tmp_path)
    assert problems(scenario, outcome) == [], [
        (a.rule, a.severity, a.summary) for a in outcome.loud()
    ]
