"""`bench/all.py`, the harness of `make bench`: FIGURE lines parsed, targets checked,
runs aggregated into the markdown of docs/PERFORMANCE.md; a missing script, a
bench needing root, a failing or over-long run are noted, never fatal. No
timing is asserted: the benches themselves are not run here."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


harness = _load("all")
figures = _load("figures")


def test_figure_lines_round_trip(capsys: pytest.CaptureFixture[str]) -> None:
    figures.figure("audit_parse.records_per_s", 312345.6, "records/s", baseline=150000.0,
                   ratio=2.0823, target="ratio>=2.0")  # fmt: skip
    figures.figure("audit_tail.cpu", 8.4, "%", target="<10")
    out = capsys.readouterr().out
    parsed = harness.parse_figures("some prose\n" + out + "FIGURE broken line\n")
    assert [(f.name, f.value, f.unit, f.baseline, f.ratio, f.target) for f in parsed] == [
        ("audit_parse.records_per_s", 312346.0, "records/s", 150000.0, 2.0823, "ratio>=2.0"),
        ("audit_tail.cpu", 8.4, "%", None, None, "<10"),
    ]


def test_slug_makes_names() -> None:
    assert figures.slug("API GET (keep-alive)") == "api_get_keep_alive"
    assert figures.slug("read synthetic ") == "read_synthetic"


def test_garbled_numbers_are_skipped() -> None:
    assert harness.parse_figures("FIGURE x.y fast ms\nFIGURE a.b 1 ms ratio=zz\n") == []


@pytest.mark.parametrize(
    ("target", "value", "ratio", "met"),
    [
        ("<100", 99.0, None, True),
        ("<100", 100.0, None, False),
        (">=2.0", 2.0, None, True),
        ("ratio>=0.5", 1.0, 0.49, False),
        ("ratio>=0.5", 1.0, None, None),  # nothing to check it on
        ("fast enough", 1.0, 1.0, None),  # free text: shown, not checked
        (None, 1.0, 1.0, None),
    ],
)
def test_targets(target: str | None, value: float, ratio: float | None, met: bool | None) -> None:
    assert harness.target_met(target, value, ratio) is met


def test_runs_are_aggregated_per_name() -> None:
    runs = harness.parse_figures(
        "FIGURE d.p99 120 ms baseline=300 ratio=0.4 target=<100\n"
        "FIGURE d.p99 80 ms baseline=310 ratio=0.26 target=<100\n"
        "FIGURE d.p99 90 ms baseline=290 ratio=0.31 target=<100\n"
        "FIGURE d.rate 5 events/s\n"
    )
    rows = harness.figure_rows(runs)
    assert rows == [
        "| `d.p99` | ms | 80 / 90 / 120 | 300 | 0.26 / 0.31 / 0.4 | <100 | yes | 3 |",
        "| `d.rate` | events/s | 5 / 5 / 5 | - | - | - | - | 1 |",
    ]


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake_bench.py"
    path.write_text(body)
    return str(path)  # absolute: the harness joins it to bench/ unchanged


def test_a_run_collects_figures_and_the_page_names_the_machine(tmp_path: Path) -> None:
    script = _script(
        tmp_path, "print('FIGURE fake.rate 10 x/s baseline=5 ratio=2 target=ratio>=1')"
    )
    bench = harness.Bench(script, (), 2, 30.0)
    outcome = harness.run_bench(bench, time.monotonic() + 60)
    assert outcome.runs_done == 2 and outcome.notes == []
    page = harness.render([outcome], harness.machine(), 12.0)
    assert "| `fake.rate` | x/s | 10 / 10 / 10 | 5 | 2 / 2 / 2 | ratio>=1 | yes | 2 |" in (page)
    for key in ("cores", "RAM", "kernel", "Python", "SQLite"):
        assert f"- {key}: " in page


def test_a_run_collects_the_plans_it_prints(tmp_path: Path) -> None:
    script = _script(
        tmp_path,
        "print('PLAN 10M rule SEARCH alerts USING INDEX alerts_rule (rule=?) | SCAN x')\n"
        "print('FIGURE trail.query.rule.p95.10M 0.8 ms target=<50')\n",
    )
    outcome = harness.run_bench(harness.Bench(script, (), 1, 30.0), time.monotonic() + 60)
    plan = "SEARCH alerts USING INDEX alerts_rule (rule=?) | SCAN x"
    assert outcome.plans == {("10M", "rule"): plan}
    page = harness.render([outcome], {}, 12.0)
    assert "| rule | 0.8 ms | `SEARCH alerts USING INDEX alerts_rule (rule=?)`; `SCAN x` |" in page


def test_missing_script_root_failure_and_cap_are_notes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deadline = time.monotonic() + 60
    missing = harness.run_bench(harness.Bench("no_such_bench.py"), deadline)
    assert missing.notes == ["not run: the script does not exist on this branch"]

    rooted = harness.Bench(_script(tmp_path, "print('FIGURE r.x 1 ms')"), needs_root=True)
    monkeypatch.setattr(harness.os, "geteuid", lambda: 1000)
    assert harness.run_bench(rooted, deadline).notes == [
        "not run: needs root (a private dockerd / auditd)"
    ]
    monkeypatch.undo()

    failing = tmp_path / "failing.py"
    failing.write_text("print('FIGURE f.x 1 ms')\nraise SystemExit('broke')\n")
    outcome = harness.run_bench(harness.Bench(str(failing), runs=1), deadline)
    assert [f.name for f in outcome.figures] == ["f.x"]
    assert outcome.notes == ["run 1: exit status 1: broke"]

    slow = tmp_path / "slow.py"
    slow.write_text("import time\nprint('FIGURE s.x 1 ms', flush=True)\ntime.sleep(30)\n")
    outcome = harness.run_bench(harness.Bench(str(slow), runs=1, cap_secs=2.0), deadline)
    assert [f.name for f in outcome.figures] == ["s.x"]  # printed before the cap: kept
    assert outcome.notes == ["run 1: stopped at its cap of 2 s"]


def test_a_spent_budget_skips_runs(tmp_path: Path) -> None:
    script = _script(tmp_path, "print('FIGURE b.x 1 ms')")
    outcome = harness.run_bench(harness.Bench(script, runs=3), time.monotonic() + 1)
    assert outcome.runs_done == 0
    assert outcome.notes == ["run 1: skipped, the time budget was spent"]


def test_every_listed_bench_prints_figures_or_is_expected_from_elsewhere() -> None:
    elsewhere: set[str] = set()  # benches another change is expected to add
    for bench in harness.BENCHES:
        path = REPO / "bench" / bench.script
        if not path.exists():
            assert bench.script in elsewhere
            continue
        text = path.read_text()
        assert "from figures import" in text or 'f"FIGURE ' in text, f"{bench.script}: no FIGURE"
