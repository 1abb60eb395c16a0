"""`verify` shows how far the walk has come on long trails, and ends with its verdict."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from listener.cli import main
from listener.model.event import Actor, Event, natural_id
from sinks.sqlite import SQLiteTrail

T0 = 1_795_346_502_000_000_000


def fill(path: Path, n: int) -> None:
    events = [
        Event(
            id=natural_id("progress", i),
            time_ns=T0 + i,
            source="docker",
            host="h1",
            type="container",
            action="create",
            actor=Actor(id=f"{i:064x}", name=f"c-{i}"),
        )
        for i in range(1, n + 1)
    ]
    with SQLiteTrail(path, durability="normal") as trail:
        trail.append(events)
        trail.checkpoint()


def test_verify_draws_a_bar_on_request_and_keeps_stdout_for_the_verdict(tmp_path: Path) -> None:
    fill(tmp_path / "t.db", 10_000)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "t.db"), "verify", "--progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("intact: 10000 events")
    assert result.stderr.startswith("verify")  # the bar (click draws it in full on a tty)


def test_verify_without_a_terminal_prints_the_verdict_alone(tmp_path: Path) -> None:
    fill(tmp_path / "t.db", 10)
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "t.db"), "verify"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
