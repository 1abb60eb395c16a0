"""`docktrail replay` shows progress (on request or on a terminal) and ends with a summary:
events evaluated, time, new findings by rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from listener.cli import main
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a"


def run(tmp: Path, *args: str) -> Result:
    command = ["--db", str(tmp / "t.db"), *args]
    return CliRunner().invoke(main, command, catch_exceptions=False)


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("replay")
    lenient = tmp / "lenient.yaml"  # the trail is filled under a policy without these rules
    lenient.write_text(
        "rules:\n  runs-as-root: {enabled: false}\n  writable-rootfs: {enabled: false}\n"
    )
    events = str(SCENARIO / "events.jsonl")
    audit = str(SCENARIO / "audit.log.gz")
    ingest = ["-c", str(lenient), "ingest", "--docker-events", events, "--audit-log", audit]
    assert run(tmp, *ingest).exit_code == 0
    return tmp


def test_replay_with_a_stricter_policy_summarises_by_rule(trail: Path) -> None:
    strict = trail / "strict.yaml"  # both rules on again
    strict.write_text("rules:\n  runs-as-root: {enabled: true}\n")
    result = run(trail, "replay", "--rules", str(strict), "--progress", "--format", "json")
    assert result.exit_code == 0, result.output
    summary = result.stderr.strip().splitlines()[-1]
    found = re.fullmatch(
        r"replay: (\d+) events evaluated in [\d.]+s, (\d+) new findings \((.+)\)", summary
    )
    assert found, summary
    assert int(found.group(1)) > 50 and int(found.group(2)) == len(result.stdout.splitlines())
    assert "runs-as-root" in found.group(3) and "writable-rootfs" in found.group(3)
    assert "replay" in result.stderr.split(summary)[0]  # the bar was drawn before it


def test_no_progress_bar_when_not_asked_and_not_a_terminal(trail: Path) -> None:
    same = trail / "same.yaml"
    same.write_text(
        "rules:\n  runs-as-root: {enabled: false}\n  writable-rootfs: {enabled: false}\n"
    )
    result = run(trail, "replay", "--rules", str(same), "--format", "json")
    assert result.exit_code == 0
    assert result.stderr.count("replay") == 1  # the summary only
    assert re.match(r"replay: \d+ events evaluated in [\d.]+s, 0 new findings$", result.stderr)
