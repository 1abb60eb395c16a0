"""`bench/all.py`'s Cost growth table (issue #20): ingest rate, verify time, peak RSS,
bytes per event, `run` start, running and RSS, and the delay from an Engine event to
its commit, at 100k, 1M and 10M events; a size that was not
measured says why (a cold cache, a spent budget, not chosen). The 10M entries run
last and are skipped with a reason when the budget left is too short. No timing is
asserted: the benches themselves are not run here."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.test_bench_harness import figures, harness

GROWTH = """\
FIGURE growth.ingest.empty 20000 events/s baseline=20000 ratio=1
FIGURE growth.ingest.100k 18000 events/s baseline=20000 ratio=0.9
FIGURE growth.ingest.1M 12000 events/s baseline=20000 ratio=0.6
FIGURE growth.run_to_engine.100k 0.33 s baseline=0.3 ratio=1.1
FIGURE growth.run_to_engine.1M 1.5 s baseline=0.3 ratio=5
FIGURE growth.run_ready.100k 0.52 s baseline=0.5 ratio=1.04
FIGURE growth.run_ready.1M 0.9 s baseline=0.5 ratio=1.8
FIGURE growth.run_rss.100k 80 MB baseline=100 ratio=0.8 target=<100
FIGURE growth.run_rss.1M 140 MB baseline=100 ratio=1.4 target=<100
"""
SCALE = """\
FIGURE trail.bytes_per_event.100k 1400 B baseline=900 ratio=1.5
FIGURE trail.verify.100k 0.7 s
FIGURE trail.verify.peak_rss.100k 40 MB baseline=100 ratio=0.4
FIGURE trail.replay_read.peak_rss.100k 45 MB baseline=100 ratio=0.45
FIGURE trail.query.peak_rss.100k 120 MB baseline=100 ratio=1.2
"""


def _outcome(script: str, sizes: str, output: str, notes: list[str]) -> object:
    outcome = harness.Outcome(harness.Bench(script, ("--sizes", sizes)))
    outcome.figures = harness.parse_figures(output)
    outcome.notes = notes
    return outcome


def _rows(page: str) -> dict[str, str]:
    section = page.split("## Cost growth", 1)[1].split("\n## ", 1)[0]
    return {
        line.split(" | ")[0].strip("| "): line
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith("| events")
    }


def test_each_size_is_a_row_with_its_figures_and_missed_targets_marked() -> None:
    outcomes = [
        _outcome("growth.py", "100k,1M", GROWTH, []),
        _outcome("trail_scale.py", "100k,1M", SCALE, []),
    ]
    rows = _rows(harness.render(outcomes, {}, 60.0))
    assert list(rows) == ["100k", "1M", "10M"]
    assert rows["100k"].startswith("| 100k | 18000 events/s (0.90x) | 0.7 s | 40 / 45 / 120 MB")
    assert "120 MB **(target missed)**" in rows["100k"]  # queries above 100 MB
    assert rows["100k"].endswith(
        "1400 B | 0.33 s | 0.52 s | 80 MB "
        "| not measured: docker_events.py at 100k was not chosen in this run |"
    )
    assert "12000 events/s (0.60x) **(target missed)**" in rows["1M"]
    assert "1.5 s **(target missed)** | 0.9 s | 140 MB **(target missed)** |" in rows["1M"]
    assert "not measured: trail_scale.py printed no figure for 1M" in rows["1M"]
    assert rows["10M"].count("not measured: growth.py at 10M was not chosen in this run") == 4


def test_the_10m_ingest_shows_the_cold_trail_beside_the_warm_one() -> None:
    growth = (
        "FIGURE growth.ingest.empty 20000 events/s baseline=20000 ratio=1\n"
        "FIGURE growth.ingest.10M 17000 events/s baseline=20000 ratio=0.85\n"
        "FIGURE growth.ingest.10M.cold 13000 events/s baseline=20000 ratio=0.65\n"
    )
    outcomes = [_outcome("growth.py", "10M", growth, [])]
    row = _rows(harness.render(outcomes, {}, 60.0))["10M"]
    # the target is checked on the warm figure (the service's); the cold one is beside it
    assert row.startswith("| 10M | 17000 events/s (0.85x; cold 0.65x) | ")
    assert "target missed" not in row.split(" | ")[1]


def test_a_missing_size_gives_the_reason_its_bench_noted() -> None:
    cold = "no cached trail in /tmp/x"
    spent = "skipped, the time budget was spent (it needs about 240 s, 12 s were left)"
    outcomes = [
        _outcome("growth.py", "10M", "", [f"run 1: not measured at 10M: {cold}"]),
        _outcome("trail_scale.py", "10M", "", [f"run 1: {spent}"]),
    ]
    row = _rows(harness.render(outcomes, {}, 60.0))["10M"]
    assert row.count(f"not measured: {cold}") == 4  # ingest, run start, running, RSS
    assert row.count(f"not measured: {spent}") == 3  # verify, RSS, bytes


def test_a_note_line_of_a_bench_is_collected(tmp_path: Path) -> None:
    script = tmp_path / "cold_bench.py"
    script.write_text("print('NOTE not measured at 10M: no cached trail')\n")
    outcome = harness.run_bench(harness.Bench(str(script), runs=1), time.monotonic() + 60)
    assert outcome.notes == ["run 1: not measured at 10M: no cached trail"]


def test_a_bench_needing_more_than_is_left_is_skipped_with_the_reason(tmp_path: Path) -> None:
    script = tmp_path / "big_bench.py"
    script.write_text("print('FIGURE big.x 1 s')\n")
    bench = harness.Bench(str(script), runs=1, cap_secs=400, needs_secs=240)
    outcome = harness.run_bench(bench, time.monotonic() + 100)
    assert outcome.runs_done == 0
    [note] = outcome.notes
    assert note.startswith("run 1: skipped, the time budget was spent (it needs about 240 s, ")


def test_the_10m_entries_come_last_and_only_measure_a_warm_cache() -> None:
    ten = [i for i, b in enumerate(harness.BENCHES) if any("10M" in a for a in b.args)]
    assert ten == [len(harness.BENCHES) - 3, len(harness.BENCHES) - 2, len(harness.BENCHES) - 1]
    scripts = [harness.BENCHES[index].script for index in ten]
    assert scripts == ["growth.py", "trail_scale.py", "docker_events.py"]
    for index in ten:
        bench = harness.BENCHES[index]
        # docker_events.py writes only into cached trails (a NOTE for a size not cached)
        assert "--cached-only" in bench.args or bench.script == "docker_events.py"
        assert bench.needs_secs > 0
    docker = harness.BENCHES[ten[-1]]  # as `docktrail run` writes: the idle mode, into each size
    assert docker.args[docker.args.index("--modes") + 1 :][:3] == ("idle", "--sizes", "1M,10M")


def test_the_delay_to_commit_into_each_size_and_into_a_fresh_trail() -> None:
    fresh = (
        "FIGURE docker_events.idle.containers.all.p99 60 ms target=<100\n"
        "FIGURE docker_events.idle.volumes.all.p99 8 ms target=<100\n"
    )
    sized = (
        "FIGURE docker_events.idle.10M.containers.all.p99 140 ms target=<100\n"
        "FIGURE docker_events.idle.10M.volumes.all.p99 9 ms target=<100\n"
    )
    unsized = harness.Outcome(harness.Bench("docker_events.py", ("--modes", "idle")))
    unsized.figures = harness.parse_figures(fresh)
    outcomes = [unsized, _outcome("docker_events.py", "1M,10M", sized, [])]
    page = harness.render(outcomes, {}, 60.0)
    rows = _rows(page)
    assert rows["10M"].endswith("| 140 / 9 ms **(target missed)** |")
    assert rows["1M"].endswith("| not measured: docker_events.py printed no figure for 1M |")
    assert "into a\nfresh one: 60 / 8 ms (target < 100 ms)." in page


def test_the_memory_of_live_containers_follows_the_table() -> None:
    live = (
        "FIGURE live_state.run_rss.empty 66 MB baseline=66 ratio=1\n"
        "FIGURE live_state.run_rss.170k 204 MB baseline=66 ratio=3.09\n"
        "FIGURE live_state.kib_per_container.170k 0.831 KiB\n"
    )
    outcomes = [
        _outcome("growth.py", "100k,1M", GROWTH, []),
        harness.Outcome(harness.Bench("live_state.py", ("--live", "170k"))),
    ]
    outcomes[1].figures = harness.parse_figures(live)  # type: ignore[attr-defined]
    section = harness.render(outcomes, {}, 60.0).split("## Cost growth", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert (
        "`run` RSS on a trail of containers never removed (an empty trail: 66 MB): "
        "170k containers: 204 MB (0.831 KiB per container)." in section
    )


def test_without_live_state_figures_there_is_no_such_sentence() -> None:
    page = harness.render([_outcome("growth.py", "100k,1M", GROWTH, [])], {}, 60.0)
    assert "never removed" not in page


def test_the_largest_trail_s_query_plans_are_shown_with_their_p95(
    capsys: pytest.CaptureFixture[str],
) -> None:
    figures.plan("1M", "container", ["SEARCH events USING INDEX events_container (container=?)"])
    figures.plan("10M", "container", ["SEARCH events USING INDEX events_container (container=?)"])
    actors = "SEARCH actors USING PRIMARY KEY (actor_id=?)"
    figures.plan("10M", "label", [
        "COMPOUND QUERY", actors, "LIST SUBQUERY 4", "CO-ROUTINE (subquery-6)",
        "SCAN (subquery-6)", "SCAN (subquery-13)", actors, "USE TEMP B-TREE FOR ORDER BY",
        "then, if the page is not full:", "SCAN a|b", actors,
    ])  # fmt: skip
    printed = capsys.readouterr().out
    output = printed + (
        "FIGURE trail.query.container.p95.10M 2.5 ms baseline=50 ratio=0.05 target=<50\n"
        "FIGURE trail.query.label.p95.10M 75 ms baseline=50 ratio=1.5 target=<50\n"
    )
    outcome = _outcome("trail_scale.py", "1M,10M", output, [])
    outcome.plans = harness.parse_plans(output)  # type: ignore[attr-defined]
    section = harness.render([outcome], {}, 60.0).split("## Query plans", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "on the 10M-event trail" in section
    assert (
        "| container | 2.5 ms | `SEARCH events USING INDEX events_container (container=?)` |"
        in section
    )
    assert (
        "| label | 75 ms **(target missed)** | `SEARCH actors USING PRIMARY KEY (actor_id=?)` x2; "
        "`SCAN (subquery-n)` x2; `USE TEMP B-TREE FOR ORDER BY`; then, if the page is not full: "
        "`SCAN a\\|b`; `SEARCH actors USING PRIMARY KEY (actor_id=?)` |" in section
    )
    assert section.count("| container |") == 1  # the 1M plan is not shown beside it


def test_without_plans_there_is_no_query_plans_section() -> None:
    page = harness.render([_outcome("growth.py", "100k,1M", GROWTH, [])], {}, 60.0)
    assert "## Query plans" not in page
