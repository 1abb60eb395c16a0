"""Acceptance: offline ingest of scenario-a's Engine events and audit log, correlated.

Every change in truth.tsv must be attributed to the right login, and no event
to a wrong one. The fixture's audit.log is kept gzipped in tests/data.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from config.models import DocktrailConfig
from listener.argv import normalize_image_ref
from listener.cli import main
from listener.ingest import IngestReport, ingest_files
from listener.model.event import Event
from tests.shared_data import DATA
from tests.test_auditd import StateTrail

SCENARIO = DATA / "scenario-a"
EVENTS = SCENARIO / "events.jsonl"
AUDIT = SCENARIO / "audit.log.gz"
EFFECTIVE = {"alice": "root", "bob": "bob"}


def truth() -> list[dict[str, str]]:
    with open(SCENARIO / "truth.tsv", newline="") as stream:
        names = ["time", "login", "user", "action", "detail"]
        return list(csv.DictReader(stream, fieldnames=names, delimiter="\t"))


@pytest.fixture(scope="module")
def ingested() -> tuple[list[Event], IngestReport]:
    trail = StateTrail()
    report = asyncio.run(
        ingest_files(
            DocktrailConfig(), docker_events=[EVENTS], audit_logs=[AUDIT], host="h1", trail=trail
        )
    )
    return trail.events(), report


def owners(rows: list[dict[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """Container name -> login and image reference -> login, from the truth rows."""
    containers: dict[str, str] = {}
    images: dict[str, str] = {}
    for row in rows:
        kind, _, _ = row["action"].partition(".")
        if row["action"] == "container.churn":
            containers.update({f"churn-{i}": row["login"] for i in range(1, 31)})
        elif kind == "container":
            containers.setdefault(row["detail"].split()[0], row["login"])
        elif kind == "image":
            images[normalize_image_ref(row["detail"])] = row["login"]
    return containers, images


class Owners:
    """Who owns what in the scenario: the truth rows' logins by container and image."""

    def __init__(self, docker: list[Event]) -> None:
        self.containers, self.images = owners(truth())
        self.names = {e.actor.id: e.actor.name or "" for e in docker if e.type == "container"}
        self.tags = {
            e.actor.id: e.actor.name or ""
            for e in docker
            if e.type == "image" and e.action == "tag"
        }

    def login(self, event: Event) -> str:
        if event.type == "container":
            return self.containers[event.actor.name or ""]
        if event.type == "network":
            return self.containers[self.names[event.attributes["container"]]]
        assert event.type == "image", event
        name = event.actor.name or ""
        if name.startswith("sha256:"):  # the import event names the id; its tag the reference
            name = self.tags[event.actor.id]
        return self.images[normalize_image_ref(name)]


def test_every_docker_event_is_attributed_to_the_right_login(
    ingested: tuple[list[Event], IngestReport],
) -> None:
    events, report = ingested
    docker = [e for e in events if e.source == "docker"]
    owner = Owners(docker)
    wrong = [
        (e.type, e.action, e.actor.name, e.who.login)
        for e in docker
        if e.who.method != "auditd-cli" or e.who.login != owner.login(e)
    ]
    assert wrong == [] and len(docker) == 239
    for event in docker:
        assert event.who.user == EFFECTIVE[event.who.login or ""]
        assert event.who.confidence == "high" and event.who.command is not None
    assert report.attribution is not None and report.attribution.attributed == 239


def test_each_truth_row_is_there_with_its_login(ingested: tuple[list[Event], IngestReport]) -> None:
    events, _ = ingested

    def found(login: str, kind: str, action: str, name: str | None = None) -> list[Event]:
        return [
            e
            for e in events
            if (e.type, e.action, e.who.login) == (kind, action, login)
            and (name is None or e.actor.name == name)
        ]

    for row in truth():
        login, action, detail = row["login"], row["action"], row["detail"]
        first = detail.split()[0]
        if action in ("image.import", "image.untrusted"):
            ref = detail.removeprefix("docker.io/")
            assert found(login, "image", "tag", ref) and found(login, "image", "import"), row
        elif action == "image.tag":
            assert found(login, "image", "tag", detail), row
        elif action.startswith("container.run"):
            assert found(login, "container", "create", first), row
        elif action == "container.exec":
            assert found(login, "container", "exec_create", first), row
        elif action == "container.churn":
            creates = [e for e in found(login, "container", "create") if "churn" in str(e.actor)]
            assert len(creates) == 30 and len(found(login, "container", "destroy")) == 30
        elif action == "daemon.config.write":
            assert found(login, "daemon-file", "create", detail), row
        elif action == "container.remove":
            assert found(login, "container", "destroy", first), row
        else:
            raise AssertionError(f"no check for {row}")


def test_configuration_comes_from_the_cli_argv(ingested: tuple[list[Event], IngestReport]) -> None:
    events, _ = ingested
    config = {
        e.actor.name: e.config
        for e in events
        if e.type == "container"
        and e.action == "create"
        and e.actor.name in ("web-1", "debug-priv", "sock-mounter", "hostnet")
    }
    assert all(c["origin"] == "argv" for c in config.values())
    assert config["web-1"]["read_only_rootfs"] and config["web-1"]["memory_bytes"] == 256 << 20
    assert config["web-1"]["labels"]["audit.ticket"] == "OPS-1234"
    assert config["debug-priv"]["privileged"] is True
    assert config["sock-mounter"]["mounts"][0]["source"] == "/var/run/docker.sock"
    assert config["hostnet"]["network_mode"] == "host"
    assert config["hostnet"]["cap_add"] == ["NET_ADMIN"]


def test_audit_events_kept_and_noise_dropped(ingested: tuple[list[Event], IngestReport]) -> None:
    events, report = ingested
    audit = [e for e in events if e.source == "auditd"]
    assert sorted({e.type for e in audit}) == ["daemon-file", "docker-cli"]
    assert len([e for e in audit if e.type == "docker-cli"]) == 41
    daemon_files = [(e.action, e.actor.name, e.who.login) for e in audit if e.type == "daemon-file"]
    assert daemon_files == [
        ("create", "/etc/docker/daemon.json", "alice"),
        ("delete", "/etc/docker/daemon.json", None),  # the capture script's clean-up
    ]
    assert report.audit is not None and report.audit.housekeeping > 8000
    assert report.audit_records == 41039 and len(report.malformed) == 0


async def test_ingest_is_idempotent_and_memory_stays_small() -> None:
    trail = StateTrail()
    config = DocktrailConfig()
    first = await ingest_files(
        config, docker_events=[EVENTS], audit_logs=[AUDIT], host="h1", trail=trail
    )
    again = await ingest_files(
        config, docker_events=[EVENTS], audit_logs=[AUDIT], host="h1", trail=trail
    )
    assert first.stats.stored == 282 and again.stats.stored == 0
    assert again.stats.duplicates == 282


# ----------------------------------------------------------------------------- the command


def test_cli_ingest_with_audit_log(tmp_path: Path) -> None:
    runner = CliRunner()
    db = ["--db", str(tmp_path / "t.db")]
    args = [
        *db,
        "ingest",
        "--docker-events",
        str(EVENTS),
        "--audit-log",
        str(AUDIT),
        "--host",
        "h1",
    ]
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "read 282, stored 282, duplicates 0, malformed 0" in result.output
    assert "41 docker CLI calls" in result.output
    assert "attributed 239 of 239 Docker events (0 ambiguous)" in result.output
    query = runner.invoke(main, [*db, "query", "-f", "container=miner", "--format", "json"])
    rows = [json.loads(line) for line in query.output.splitlines()]
    assert rows and {r["who"]["login"] for r in rows} == {"bob"}


def test_cli_reports_malformed_audit_lines_and_audit_only_ingest(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text(
        "type=SYSCALL msg=audit(1.000:1): arch=c000003e syscall=59 success=yes exit=0 auid=1001 "
        'uid=0 euid=0 ses=2 pid=9 comm="docker" exe="/usr/bin/docker" key="docker-cli"\n'
        "this is not a record\n"
        'type=EXECVE msg=audit(1.000:1): argc=4 a0="docker" a1="run" a2="--privileged" a3="x"\n'
    )
    result = CliRunner().invoke(
        main, ["--db", str(tmp_path / "t.db"), "ingest", "--audit-log", str(log)]
    )
    assert result.exit_code == 0, result.output
    assert f"malformed: {log}:2: no type= field" in result.output
    assert "read 2, stored 1, duplicates 0, malformed 1" in result.output
    usage = CliRunner().invoke(main, ["--db", str(tmp_path / "t.db"), "ingest"])
    assert usage.exit_code == 2 and "--audit-log" in usage.output
