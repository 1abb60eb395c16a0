"""The posture checks' judgement of what the Engine says, and when a change is recorded."""

from __future__ import annotations

from typing import Any

from config.models import RulesConfig
from listener.event import Actor, Event
from listener.posture.check import Check
from listener.posture.daemon import daemon_checks
from listener.posture.events import PostureMemory
from listener.posture.sprawl import container_check, tag_sprawl, unbacked_volumes
from listener.rules.engine import RuleEngine
from listener.sources.docker import normalize_engine_event
from sinks.memory import MemoryTrail

ACTOR = Actor(id="host-1", name="host-1")
_DAY_NS = 86_400 * 1_000_000_000


def by_check(info: dict[str, Any], daemon_json: dict[str, Any] | None = None) -> dict[str, Check]:
    return {c.check: c for c in daemon_checks(info, None, daemon_json)}


def test_daemon_risks_seen_in_info_fail_with_their_cis_items() -> None:
    info = {
        "RegistryConfig": {
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "10.0.0.0/8"],
            "IndexConfigs": {"reg.lan:5000": {"Secure": False}, "docker.io": {"Secure": True}},
        },
        "Warnings": ["WARNING: API is accessible on http://0.0.0.0:2375 without encryption."],
        "ExperimentalBuild": True,
        "LoggingDriver": "none",
    }
    checks = by_check(info)
    assert checks["insecure-registries"].items == ("10.0.0.0/8", "reg.lan:5000")
    assert (checks["insecure-registries"].status, checks["insecure-registries"].cis) == (
        "fail",
        "2.5",
    )
    assert (checks["tcp-without-tls"].status, checks["tcp-without-tls"].cis) == ("fail", "2.7")
    assert checks["experimental"].status == "fail"
    assert checks["logging-driver"].status == "fail"
    assert checks["icc"].status == "pass"  # no default bridge at all


def test_what_the_engine_does_not_show_is_read_from_daemon_json_or_named() -> None:
    unseen = by_check({})
    assert unseen["no-new-privileges"].status == "warn"
    assert "not visible" in unseen["no-new-privileges"].detail
    seen = by_check(
        {"SecurityOptions": ["name=seccomp", "name=userns"], "Plugins": {"Authorization": ["a"]}},
        {"no-new-privileges": True, "default-ulimits": {"nofile": {"Soft": 1024}}},
    )
    assert {seen[c].status for c in ("no-new-privileges", "default-ulimits")} == {"pass"}
    assert seen["userns-remap"].status == seen["authorization"].status == "pass"


def changes(memory: PostureMemory, *checks: Check, summary: bool = False) -> list[Event]:
    after = _DAY_NS if summary else None
    return memory.changes("host", checks, ACTOR, "host-1", "periodic", summary_after_ns=after)


def test_moving_counts_record_status_changes_and_a_daily_summary() -> None:
    memory = PostureMemory()
    first = changes(memory, Check("container-sprawl", "6.5", "warn", "a", 30), summary=True)
    assert len(first) == 1
    assert changes(memory, Check("container-sprawl", "6.5", "warn", "b", 31), summary=True) == []
    key = ("host", "container-sprawl")
    seen = memory.seen[key]
    memory.seen[key] = type(seen)(seen.status, seen.value, seen.time_ns - _DAY_NS)  # a day ago
    (daily,) = changes(memory, Check("container-sprawl", "6.5", "warn", "c", 40), summary=True)
    assert daily.attributes["summary"] is True
    stored = MemoryTrail().append([*first, daily]).stored
    alerts = RuleEngine(RulesConfig()).alerts_for(stored)
    assert [(a.rule, a.severity) for a in alerts] == [
        ("host-posture", "low"),  # first seen: summed up
        ("host-posture", "low"),  # the daily summary
    ]


def test_sprawl_and_backups() -> None:
    containers: list[dict[str, Any]] = [
        {"Id": "1", "State": "running", "Names": ["/db"], "Labels": {},
         "Mounts": [{"Type": "volume", "Name": "dbdata"}, {"Type": "bind", "Name": ""}]},
        {"Id": "2", "State": "running", "Names": ["/web"], "Labels": {"backup": "nightly"},
         "Mounts": [{"Type": "volume", "Name": "webdata"}]},
        {"Id": "3", "State": "running", "Names": ["/cache"], "Labels": {},
         "Mounts": [{"Type": "volume", "Name": "cache"}]},
        *({"Id": f"x{i}", "State": "exited"} for i in range(5)),
    ]  # fmt: skip
    volumes = [{"Name": "cache", "Labels": {"docktrail.backup": "none-needed"}}]
    found = unbacked_volumes(containers, volumes, ["backup", "docktrail.backup"])
    assert [(u.volume, u.containers) for u in found] == [("dbdata", ("db",))]
    assert container_check(containers, margin=1).status == "warn"
    assert container_check(containers, margin=2).status == "pass"
    images = [{"RepoTags": [f"app:{i}" for i in range(4)]}, {"RepoTags": ["<none>:<none>"]}]
    assert tag_sprawl(images, max_tags=3) == {"app": 4}


def test_a_daemon_reload_event_is_normalized() -> None:
    # As dockerd 20.10 sends it after SIGHUP: the daemon's settings as strings.
    raw = {
        "Type": "daemon", "Action": "reload", "scope": "local",
        "Actor": {"ID": "ABCD:EFGH", "Attributes": {
            "labels": "[]", "insecure-registries": "[10.9.8.0/24 127.0.0.0/8]",
            "live-restore": "true", "name": "host-1",
        }},
        "time": 1796518665, "timeNano": 1796518665932377510,
    }  # fmt: skip
    event = normalize_engine_event(raw, "host-1")
    assert (event.type, event.action) == ("daemon", "reload")
    assert event.who.claimed is None
