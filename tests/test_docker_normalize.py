"""Engine events -> `Event`: the captured scenario, bad input, and a real dockerd."""

from __future__ import annotations

import gzip
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from config.errors import InputError, SourceError
from listener.model.event import Event
from listener.sources.docker import DockerEventsFile, normalize_engine_event, read_events_file
from listener.sources.docker_labels import engine_keys
from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a" / "events.jsonl"
HOST = "host-a"
# Keys we add beside the Engine's own ones.
OURS = {"scope", "labels", "action_detail"}


def read_all(path: Path) -> tuple[list[Event], list[InputError]]:
    events: list[Event] = []
    errors: list[InputError] = []
    for item in read_events_file(path, HOST):
        if isinstance(item, InputError):
            errors.append(item)
        else:
            events.append(item)
    return events, errors


def raw_event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": "c0ffee", "Attributes": {"image": "img:1", "name": "box"}},
        "scope": "local",
        "time": 1795346502,
        "timeNano": 1795346502655545638,
    }
    base.update(overrides)
    return base


# ------------------------------------------------------------------ captured scenario


def test_every_line_of_the_scenario_normalizes() -> None:
    events, errors = read_all(SCENARIO)
    assert errors == []
    assert len(events) == 239
    assert Counter(e.type for e in events) == {"container": 167, "network": 67, "image": 5}
    assert len({e.id for e in events}) == len(events)
    again, _ = read_all(SCENARIO)
    assert [e.id for e in again] == [e.id for e in events]
    assert again == events
    assert all(e.source == "docker" and e.host == HOST for e in events)


def test_web_1_create_has_labels_and_why() -> None:
    events, _ = read_all(SCENARIO)
    create = next(e for e in events if e.action == "create" and e.actor.name == "web-1")
    assert create.type == "container"
    assert create.time_ns == 1795346502710096044
    assert create.actor.image == "registry.internal/web/nginx:1.25"
    assert create.why.reason == "release 2024.11 hotfix"
    assert create.why.ticket == "OPS-1234"
    assert create.why.source == "label"
    assert create.who.method == "unknown"
    assert create.attributes == {
        "image": "registry.internal/web/nginx:1.25",
        "name": "web-1",
        "labels": {"audit.ticket": "OPS-1234", "audit.why": "release 2024.11 hotfix"},
        "scope": "local",
    }


def test_exec_actions_are_split_at_the_colon() -> None:
    events, _ = read_all(SCENARIO)
    execs = [e for e in events if e.action.startswith("exec_")]
    assert [e.action for e in execs] == ["exec_create", "exec_start", "exec_die"]
    start = execs[1]
    assert start.attributes["action_detail"] == "sh -c id"
    assert start.attributes["execID"].startswith("95d71f2e")
    assert start.attributes["labels"] == {
        "audit.ticket": "OPS-1234",
        "audit.why": "release 2024.11 hotfix",
    }
    assert "action_detail" not in execs[2].attributes


def test_image_and_network_names_in_the_scenario() -> None:
    events, _ = read_all(SCENARIO)
    tags = [e.actor.name for e in events if e.type == "image" and e.action == "tag"]
    assert "registry.internal/web/nginx:1.25" in tags
    networks = {e.actor.name for e in events if e.type == "network"}
    assert "bridge" in networks
    connect = next(e for e in events if e.type == "network")
    assert set(connect.attributes) == {"container", "name", "type", "scope"}


# ------------------------------------------------------------------ one event


@pytest.mark.parametrize(
    ("type_", "actor_id", "attrs", "name"),
    [
        ("container", "c1", {"name": "web", "image": "i:1"}, "web"),
        ("image", "sha256:ab", {"name": "repo/x:1"}, "repo/x:1"),
        ("image", "sha256:ab", {}, "sha256:ab"),
        ("volume", "data-vol", {"driver": "local"}, "data-vol"),
        ("network", "n1", {"name": "front", "type": "bridge"}, "front"),
        ("daemon", "D1", {"name": "host-a"}, "host-a"),
        ("plugin", "p1", {"name": "vieux/sshfs:latest"}, "vieux/sshfs:latest"),
        ("service", "s1", {"name": "api"}, "api"),
        ("node", "nd1", {"name": "worker-1"}, "worker-1"),
        ("secret", "sc1", {"name": "db-pass"}, "db-pass"),
        ("config", "cf1", {"name": "nginx.conf"}, "nginx.conf"),
        ("builder", "", {"reclaimed": "0"}, None),
        ("builder", "b1", {}, "b1"),
    ],
)
def test_actor_name_per_type(
    type_: str, actor_id: str, attrs: dict[str, str], name: str | None
) -> None:
    event = normalize_engine_event(
        raw_event(Type=type_, Action="create", Actor={"ID": actor_id, "Attributes": attrs}), HOST
    )
    assert event.actor.name == name
    assert event.actor.id == actor_id
    assert event.actor.image == ("i:1" if type_ == "container" else None)


def test_container_labels_are_separated_from_engine_keys() -> None:
    attrs = {
        "image": "i:1",
        "name": "box",
        "exitCode": "137",
        "signal": "a label on a die event",
        "type": "worker",
        "audit.who": "alice",
        "audit.expires": "2030-01-01",
    }
    event = normalize_engine_event(
        raw_event(Action="die", Actor={"ID": "c1", "Attributes": attrs}), HOST
    )
    assert event.attributes == {
        "image": "i:1",
        "name": "box",
        "exitCode": "137",
        "scope": "local",
        "labels": {
            "signal": "a label on a die event",
            "type": "worker",
            "audit.who": "alice",
            "audit.expires": "2030-01-01",
        },
    }
    assert (event.who.login, event.who.claimed) == (None, "alice")
    assert (event.why.expires, event.why.reason, event.why.source) == ("2030-01-01", None, "label")


def test_image_labels_are_separated() -> None:
    attrs = {"name": "repo/x:1", "maintainer": "ops", "audit.why": "base refresh"}
    event = normalize_engine_event(
        raw_event(Type="image", Action="tag", Actor={"ID": "sha256:ab", "Attributes": attrs}), HOST
    )
    assert event.attributes["name"] == "repo/x:1"
    assert event.attributes["labels"] == {"maintainer": "ops", "audit.why": "base refresh"}
    assert event.why.reason == "base refresh"


def test_other_types_keep_flat_attributes() -> None:
    attrs = {"container": "c1", "destination": "/data", "driver": "local", "read/write": "true"}
    event = normalize_engine_event(
        raw_event(Type="volume", Action="mount", Actor={"ID": "v", "Attributes": attrs}), HOST
    )
    assert event.attributes == {**attrs, "scope": "local"}


def test_health_status_detail() -> None:
    event = normalize_engine_event(raw_event(Action="health_status: unhealthy"), HOST)
    assert event.action == "health_status"
    assert event.attributes["action_detail"] == "unhealthy"


def test_time_falls_back_to_seconds_and_id_is_the_natural_key() -> None:
    raw = raw_event()
    del raw["timeNano"]
    event = normalize_engine_event(raw, HOST)
    assert event.time_ns == 1795346502 * 1_000_000_000
    assert normalize_engine_event(raw_event(), HOST).time_ns == 1795346502655545638
    assert normalize_engine_event(raw, "other-host").id == event.id
    assert normalize_engine_event(raw_event(Action="stop"), HOST).id != event.id


def test_legacy_fields_are_ignored() -> None:
    plain = normalize_engine_event(raw_event(), HOST)
    legacy = raw_event(status="kill", id="other", **{"from": "other:image"})
    assert normalize_engine_event(legacy, HOST) == plain
    with pytest.raises(InputError, match="missing Type"):
        normalize_engine_event({"status": "start", "id": "c1", "time": 1}, HOST)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"Action": "start", "time": 1}, "missing Type"),
        ({"Type": "container", "time": 1}, "missing Action"),
        ({"Type": 3, "Action": "start", "time": 1}, "Type must be"),
        ({"Type": "container", "Action": "start"}, "missing timeNano and time"),
        ({"Type": "container", "Action": "start", "timeNano": "1"}, "timeNano must be"),
        ({"Type": "container", "Action": "start", "time": 1, "Actor": []}, "Actor must be"),
        (
            {"Type": "container", "Action": "start", "time": 1, "Actor": {"Attributes": {"a": 1}}},
            "Actor.Attributes.a must be a string",
        ),
        ({"Type": "container", "Action": "x", "time": 1, "scope": 2}, "scope must be"),
    ],
)
def test_bad_records_raise_input_error(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        normalize_engine_event(raw, HOST)


# ------------------------------------------------------------------ files


def test_malformed_lines_are_reported_and_good_lines_kept(tmp_path: Path) -> None:
    lines = SCENARIO.read_bytes().splitlines(keepends=True)
    bad = {
        10: b'{"Type": "container", "Action": \n',
        50: b'[{"Type": "container"}]\n',
        100: b'{"Type": "container", "Actor": {}, "time": 1}\n',
        150: b'{"Type": "container", "Action": "start", "time": 1, "x": "\xff"}\n',
    }
    copy = []
    for index, line in enumerate(lines):
        if index in bad:
            copy.append(bad[index])
        copy.append(line)
    copy.insert(5, b"\n   \n")  # blank lines are not records (shifts later line numbers by 2)
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(copy))

    events, errors = read_all(path)
    expected, _ = read_all(SCENARIO)
    assert events == expected
    assert [(e.path, e.line) for e in errors] == [
        (str(path), 13),
        (str(path), 54),
        (str(path), 105),
        (str(path), 156),
    ]
    reasons = [e.reason for e in errors]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1] == "expected a JSON object, got array"
    assert reasons[2] == "missing Action"
    assert reasons[3].startswith("invalid UTF-8")
    assert str(errors[0]).startswith(f"{path}:13: ")


def test_objects_run_together_on_one_line(tmp_path: Path) -> None:
    lines = SCENARIO.read_text().splitlines()
    path = tmp_path / "chunked.jsonl"
    path.write_text("".join(lines[:3]) + "\n" + " ".join(lines[3:6]) + "{oops\n")
    events, errors = read_all(path)
    expected, _ = read_all(SCENARIO)
    assert events == expected[:6]
    assert [(e.line, e.reason.split(":")[0]) for e in errors] == [(2, "invalid JSON")]


def test_gzip_is_recognised_by_magic_bytes(tmp_path: Path) -> None:
    path = tmp_path / "events.capture"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(SCENARIO.read_bytes()))
    expected, _ = read_all(SCENARIO)
    progress: list[int] = []
    items = list(read_events_file(path, HOST, on_progress=progress.append))
    assert items == expected
    assert progress[-1] == path.stat().st_size


def test_truncated_gzip_keeps_what_was_read(tmp_path: Path) -> None:
    data = gzip.compress(SCENARIO.read_bytes())
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    events, errors = read_all(path)
    expected, _ = read_all(SCENARIO)
    assert 0 < len(events) < len(expected)
    assert events == expected[: len(events)]
    assert len(errors) == 1
    assert "compressed data is damaged" in errors[0].reason


def test_progress_reaches_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(SCENARIO.read_bytes() * 20)  # ~1.8 MB: several progress calls
    progress: list[int] = []
    count = sum(1 for _ in read_events_file(path, HOST, on_progress=progress.append))
    assert count == 239 * 20
    assert len(progress) > 2
    assert progress == sorted(progress)
    assert progress[-1] == path.stat().st_size


def test_unreadable_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        list(read_events_file(tmp_path / "missing.jsonl", HOST))


async def test_async_source_over_several_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"Type": "image"}\n' + SCENARIO.read_bytes()[:2000].rsplit(b"\n", 1)[0])
    progress: list[int] = []
    source = DockerEventsFile([SCENARIO, bad], HOST, on_progress=progress.append)
    async with source:
        events = [event async for event in source]
    expected, _ = read_all(SCENARIO)
    assert events[:239] == expected
    assert len(events) > 239
    assert [(e.path, e.line) for e in source.malformed] == [(str(bad), 1)]
    assert source.count == len(events)
    assert progress[-1] == SCENARIO.stat().st_size + bad.stat().st_size


async def test_async_source_refuses_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        await DockerEventsFile([tmp_path / "nope"], HOST).start()


async def test_async_source_can_stop_early() -> None:
    source = DockerEventsFile([SCENARIO], HOST)
    await source.start()
    first = None
    async for event in source:
        first = event
        break
    await source.aclose()
    assert first is not None and first.action == "tag"


def test_module_does_not_import_docker_py() -> None:
    import subprocess
    import sys

    code = "import sys, listener.sources.docker; print('docker' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr


# ------------------------------------------------------------------ the real engine

APP_LABELS = {
    "audit.why": "nightly batch",
    "audit.ticket": "OPS-42",
    "audit.expires": "2030-01-01T00:00:00Z",
    "audit.who": "alice",
    "team": "payments",
    "type": "worker",  # a network event key: still a label on a container
    "height": "tall",  # the key of a `resize` event: still a label elsewhere
}


def run_scenario(dockerd: Dockerd) -> None:
    """Every kind of object and the usual actions, through the real docker CLI."""
    d = dockerd.docker
    d("volume", "create", "scn-vol")
    d("network", "create", "scn-net")
    d("network", "create", "scn-net2")
    labels = [arg for k, v in APP_LABELS.items() for arg in ("--label", f"{k}={v}")]
    volume = ("--volume", "scn-vol:/data", "--network", "scn-net", "--stop-timeout", "1")
    d("create", "--name", "scn-app", *labels, *volume, BUSYBOX_REF, "sleep", "60")
    d("start", "scn-app")
    d("exec", "scn-app", "sh", "-c", "id")
    d("network", "connect", "scn-net2", "scn-app")
    d("network", "disconnect", "scn-net2", "scn-app")
    d("rename", "scn-app", "scn-app-2")
    d("commit", "--change", "LABEL stage=committed", "scn-app-2", "registry.internal/t/c:1")
    d("stop", "--time", "0", "scn-app-2")
    d("rm", "scn-app-2")
    d("volume", "rm", "scn-vol")
    d("network", "rm", "scn-net", "scn-net2")
    d("tag", BUSYBOX_REF, "registry.internal/t/alias:1")
    d("rmi", "registry.internal/t/alias:1", "registry.internal/t/c:1")


@pytest.fixture(scope="module")
def live_captures(dockerd: Dockerd, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The scenario's events, from `docker events --format '{{json .}}'` and raw `/events`."""
    since = f"{time.time():.9f}"
    run_scenario(dockerd)
    time.sleep(0.05)  # `until` strictly after the last event
    until = f"{time.time():.9f}"
    folder = tmp_path_factory.mktemp("live")
    cli = dockerd.docker("events", "--format", "{{json .}}", "--since", since, "--until", until)
    (folder / "cli.jsonl").write_text(cli)
    status, body = dockerd.api_get(f"/events?since={since}&until={until}")
    assert status == 200
    (folder / "api.raw").write_bytes(body)
    return {"cli": folder / "cli.jsonl", "api": folder / "api.raw"}


@pytest.fixture(scope="module")
def live_events(live_captures: dict[str, Path]) -> list[Event]:
    events, errors = read_all(live_captures["api"])
    assert errors == []
    return events


def test_cli_and_api_captures_normalize_identically(live_captures: dict[str, Path]) -> None:
    cli_events, cli_errors = read_all(live_captures["cli"])
    api_events, api_errors = read_all(live_captures["api"])
    assert cli_errors == [] and api_errors == []
    assert len(api_events) >= 30
    assert [e.model_dump() for e in cli_events] == [e.model_dump() for e in api_events]
    assert len({e.id for e in api_events}) == len(api_events)


def test_every_type_and_action_of_the_scenario_is_seen(live_events: list[Event]) -> None:
    seen = {(e.type, e.action) for e in live_events}
    actions = {
        "volume": "create mount unmount destroy",
        "network": "create connect disconnect destroy",
        "container": "create start exec_create exec_start exec_die rename pause unpause commit "
        "kill die stop destroy",
        "image": "tag untag delete",
    }
    expected = {(type_, action) for type_, names in actions.items() for action in names.split()}
    assert expected <= seen, expected - seen


def test_container_label_split_on_real_events(
    live_events: list[Event], live_captures: dict[str, Path]
) -> None:
    raw_attrs = [
        json.loads(line)["Actor"]["Attributes"]
        for line in live_captures["cli"].read_text().splitlines()
    ]
    keys_by_action: dict[str, set[str]] = {}
    app = [
        (e, raw)
        for e, raw in zip(live_events, raw_attrs, strict=True)
        if e.type == "container" and e.actor.name in ("scn-app", "scn-app-2")
    ]
    assert len(app) >= 12
    for event, raw in app:
        engine = set(raw) - set(APP_LABELS)
        keys_by_action.setdefault(event.action, set()).update(engine)
        assert event.attributes["labels"] == APP_LABELS, event.action
        assert set(event.attributes) - OURS == engine, event.action
        assert engine <= engine_keys("container", event.action), event.action
        assert (event.who.login, event.who.claimed) == (None, "alice")
        assert (event.why.reason, event.why.ticket) == ("nightly batch", "OPS-42")
        assert event.actor.image == BUSYBOX_REF
    # What this Engine adds to container events (printed for the record; see -s).
    print("engine keys on container events:", {a: sorted(k) for a, k in keys_by_action.items()})
    assert keys_by_action["create"] == {"image", "name"}
    assert keys_by_action["exec_die"] == {"image", "name", "execID", "exitCode"}
    assert {"exitCode"} <= keys_by_action["die"]
    assert keys_by_action["kill"] == {"image", "name", "signal"}
    assert keys_by_action["rename"] == {"image", "name", "oldName"}
    assert keys_by_action["commit"] == {"image", "name", "comment", "imageID", "imageRef"}


def test_real_event_details(live_events: list[Event]) -> None:
    by = {(e.type, e.action, e.actor.name): e for e in live_events}
    exec_start = next(e for e in live_events if e.action == "exec_start")
    assert exec_start.attributes["action_detail"] == "sh -c id"
    assert by[("container", "rename", "scn-app-2")].attributes["oldName"] == "/scn-app"
    assert ("container", "create", "scn-app") in by
    assert by[("volume", "create", "scn-vol")].attributes["driver"] == "local"
    mount = by[("volume", "mount", "scn-vol")]
    assert mount.attributes["destination"] == "/data"
    assert mount.attributes["container"] == by[("container", "create", "scn-app")].actor.id
    assert by[("network", "connect", "scn-net2")].attributes["type"] == "bridge"
    assert ("image", "tag", "registry.internal/t/alias:1") in by
    committed = by[("image", "tag", "registry.internal/t/c:1")]
    assert committed.attributes["labels"]["stage"] == "committed"
    untag = next(e for e in live_events if e.action == "untag")
    assert untag.actor.name == untag.actor.id and untag.actor.id.startswith("sha256:")
    kills = [e.attributes["signal"] for e in live_events if e.action == "kill"]
    assert kills[-1] == "9"
