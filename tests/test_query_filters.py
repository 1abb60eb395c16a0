"""Filter answers: repeated keys OR, different keys AND; names through renames; bad input exit 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from listener.cli import main
from sinks.base import AlertFilter, EventFilter
from sinks.memory import MemoryTrail
from sinks.sqlite import SQLiteTrail
from tests.dockerd import BUSYBOX_REF, Dockerd

T = 1795346502_000000000
A1 = "c1" + "0" * 62  # no name below is a prefix of an id
B2 = "d2" + "0" * 62
NET = "e5" + "0" * 62


def engine(seq: int, kind: str, action: str, actor: str, **attributes: str) -> str:
    return json.dumps(
        {
            "Type": kind,
            "Action": action,
            "Actor": {"ID": actor, "Attributes": attributes},
            "scope": "local",
            "time": T // 10**9 + seq,
            "timeNano": T + seq * 10**9,
        }
    )


IMAGE = "registry.internal/app:1"
EVENTS = [
    engine(1, "container", "create", A1, name="a1", image=IMAGE),
    engine(2, "network", "connect", NET, name="backend", type="bridge", container=A1),
    engine(3, "container", "start", A1, name="a1", image=IMAGE),
    engine(4, "container", "create", B2, name="b2", image=IMAGE),
    engine(5, "container", "rename", A1, name="a1b", image=IMAGE, oldName="/a1"),
    engine(6, "container", "stop", A1, name="a1b", image=IMAGE),
    engine(7, "network", "disconnect", NET, name="backend", type="bridge", container=A1),
    engine(8, "container", "destroy", A1, name="a1b", image=IMAGE),
    engine(9, "container", "destroy", B2, name="b2", image=IMAGE),
]


def run(tmp: Path, *args: str) -> Result:
    command = ["-c", str(tmp / "docktrail.yaml"), "--db", str(tmp / "t.db"), *args]
    return CliRunner().invoke(main, command)


def ingest(tmp: Path, lines: list[str]) -> Path:
    (tmp / "docktrail.yaml").write_text("auditd:\n  enabled: false\n")
    events = tmp / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    result = run(tmp, "ingest", "--docker-events", str(events))
    assert result.exit_code == 0, result.output
    return tmp


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ingest(tmp_path_factory.mktemp("filters"), EVENTS)


def rows(result: Result) -> list[dict[str, object]]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def actions(tmp: Path, *filters: str) -> list[str]:
    args = [arg for f in filters for arg in ("-f", f)]
    return [str(e["action"]) for e in rows(run(tmp, "query", *args, "--format", "json"))]


def test_repeated_key_is_or(trail: Path) -> None:
    assert actions(trail, "action=create", "action=destroy") == [
        "create", "create", "destroy", "destroy"
    ]  # fmt: skip


def test_different_keys_are_and(trail: Path) -> None:
    assert actions(trail, "action=destroy", "container=b2") == ["destroy"]
    assert actions(trail, "action=create", "action=stop", "container=a1b") == ["create", "stop"]


def test_repeated_keys_or_for_alerts(trail: Path) -> None:
    every = rows(run(trail, "alerts", "--format", "json"))
    assert {a["container"] for a in every} >= {"a1", "b2"}
    rules = ("-f", "rule=untrusted-image", "-f", "rule=privileged-container")
    assert rows(run(trail, "alerts", *rules, "--format", "json")) == every
    names = ("-f", "container=a1", "-f", "container=b2", "-f", "severity=info")
    both = rows(run(trail, "alerts", *names, "-f", "severity=high", "--format", "json"))
    assert both and {a["container"] for a in both} == {"a1", "b2"}


@pytest.mark.parametrize("command", ["query", "alerts"])
@pytest.mark.parametrize("item", ["container=", "image=", "user= "])
def test_empty_value_is_refused(trail: Path, command: str, item: str) -> None:
    result = run(trail, command, "-f", item)
    assert result.exit_code == 2
    assert "needs a value" in result.output


def test_name_selects_network_events_that_carry_only_the_id(trail: Path) -> None:
    assert actions(trail, "container=a1") == [
        "create", "connect", "start", "rename", "stop", "disconnect", "destroy"
    ]  # fmt: skip


def test_new_name_selects_the_life_before_the_rename(trail: Path) -> None:
    assert actions(trail, "container=a1b")[0] == "create"


def test_timeline_after_rename_shows_the_whole_life(trail: Path) -> None:
    for name in ("a1", "a1b"):
        result = run(trail, "timeline", name)
        assert result.exit_code == 0, result.output
        text = result.stdout
        assert text.startswith("a1b (was a1)")
        assert f"image {IMAGE}" in text
        assert "a1 -> a1b" in text and "removed" in text and "(not removed)" not in text
        assert text.count("network backend") == 2  # connect and disconnect, by id only


def test_rename_known_only_from_old_name(tmp_path: Path) -> None:
    """Only the rename and later events stored: the old name still finds the container."""
    ingest(tmp_path, EVENTS[4:6])
    assert actions(tmp_path, "container=a1") == ["rename", "stop"]


@pytest.mark.parametrize(
    "args",
    [
        ("--limit", "99999999999999999999"),
        ("--since", "99999999999999999999"),
        ("--since", "9999999h"),
        ("--until", "2263-01-01T00:00:00Z"),
        ("--since", "9999-12-31"),
    ],
)
@pytest.mark.parametrize("command", ["query", "alerts"])
def test_out_of_range_numbers_are_a_clear_error(
    trail: Path, command: str, args: tuple[str, str]
) -> None:
    result = run(trail, command, *args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output and "range" in result.output


def test_live_rename_keeps_one_history(dockerd: Dockerd, tmp_path: Path) -> None:
    since = time.time()
    dockerd.docker("network", "create", "dt-rename-net")
    dockerd.docker("create", "--name", "dt-a1", "--network", "dt-rename-net", BUSYBOX_REF,
                   "sleep", "60")  # fmt: skip
    dockerd.docker("network", "disconnect", "dt-rename-net", "dt-a1")
    dockerd.docker("rename", "dt-a1", "dt-a1b")
    dockerd.docker("rm", "--force", "dt-a1b")
    dockerd.docker("network", "rm", "dt-rename-net")
    status, body = dockerd.api_get(f"/events?since={since - 1:.0f}&until={time.time() + 1:.0f}")
    assert status == 200
    ingest(tmp_path, body.decode().splitlines())
    old = actions(tmp_path, "container=dt-a1")
    assert old[0] == "create" and "rename" in old and old[-1] == "destroy"
    assert "disconnect" in old  # a network event names the container by id only
    assert actions(tmp_path, "container=dt-a1b") == old
    text = run(tmp_path, "timeline", "dt-a1").stdout
    assert text.startswith("dt-a1b (was dt-a1)")
    assert "dt-a1 -> dt-a1b" in text and f"image {BUSYBOX_REF}" in text
    assert "(not removed)" not in text


@pytest.mark.parametrize(
    "f",
    [
        EventFilter(container=("a1", "b2")),
        EventFilter(container=("a1", "b2"), type="container", since_ns=T),
        EventFilter(user=("alice", "bob")),
        EventFilter(image=("registry.internal/*", "nginx:1")),
    ],
    ids=repr,
)
def test_several_values_still_use_indexes(tmp_path: Path, f: EventFilter) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        plan = " ".join(trail.query_plan(f))
    assert "SCAN events" not in plan


def test_several_alert_containers_use_indexes(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        plan = trail.alerts_query_plan(AlertFilter(container=("a1", "b2")))
    assert not [line for line in plan if line.startswith(("SCAN alerts", "SCAN events"))], plan


@pytest.mark.parametrize("trail_kind", ["sqlite", "memory"])
def test_sql_and_memory_trails_agree_on_several_values(tmp_path: Path, trail_kind: str) -> None:
    sqlite_path = ingest(tmp_path, EVENTS) / "t.db"
    with SQLiteTrail(sqlite_path) as stored:
        events = list(stored.query(EventFilter()))
    memory = MemoryTrail()
    with memory:
        memory.append(events)
        trail = memory if trail_kind == "memory" else SQLiteTrail(sqlite_path)
        with trail:
            f = EventFilter(container=("a1", "b2"), action=("create", "rename", "disconnect"))
            assert [e.action for e in trail.query(f)] == [
                "create",
                "create",
                "rename",
                "disconnect",
            ]
