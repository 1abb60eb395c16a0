"""Tests for listener.correlate: which docker CLI call caused which Engine event."""

from __future__ import annotations

import asyncio
import itertools
import shlex
from typing import Any

from listener.argv import parse_docker_argv
from listener.correlate import Attribution, CliCall, Correlator
from listener.model.event import Event, Who
from listener.sources.docker import normalize_engine_event

T0 = 1_795_346_500_000_000_000  # a base time, ns
S = 1_000_000_000
PEOPLE = {"alice": (1001, 0), "bob": (1002, 1002)}  # login -> (auid, effective uid)
_serial = itertools.count(100)


def call(at: float, command: str, login: str = "alice", cwd: str = "/") -> CliCall:
    """A docker CLI call `at` seconds after T0, by `login` (sudo pattern for alice)."""
    argv = ["docker", *shlex.split(command)]
    auid, uid = PEOPLE[login]
    user = "root" if uid == 0 else login
    who = Who(
        login=login,
        auid=auid,
        user=user,
        uid=uid,
        pid=4000 + auid,
        method="auditd",
        command=shlex.join(argv),
    )
    time_ns = T0 + round(at * S)
    audit_id = f"{time_ns // S}.{time_ns % S // 10**6:03d}:{next(_serial)}"
    return CliCall(time_ns, audit_id, parse_docker_argv(argv, cwd=cwd), who)


def engine(at: float, type_: str, action: str, actor_id: str, **attributes: str) -> Event:
    raw = {
        "Type": type_,
        "Action": action,
        "Actor": {"ID": actor_id, "Attributes": attributes},
        "scope": "local",
        "timeNano": T0 + round(at * S),
    }
    return normalize_engine_event(raw, "h1")


def container(
    at: float, action: str, cid: str, name: str, image: str = "busybox", **attributes: str
) -> Event:
    return engine(at, "container", action, cid, name=name, image=image, **attributes)


def correlator(*calls: CliCall) -> Correlator:
    found = Correlator(window_secs=10, long_window_secs=600)
    for item in calls:
        found.add_call(item)
    return found


def attribute(found: Correlator, *events: Event) -> list[Event]:
    for event in events:
        found.attribute(event)
    return list(events)


def who(event: Event) -> tuple[str | None, str, str | None]:
    return (event.who.login, event.who.method, event.who.matched_by)


CID = "3f2a" + "0" * 60
CID2 = "7b1c" + "1" * 60


# ----------------------------------------------------------------------------- runs


def test_a_named_run_owns_its_whole_short_life_and_gives_the_config() -> None:
    run = call(0, "run --rm --name churn-1 --cap-add NET_ADMIN -m 64m busybox true", "bob")
    events = attribute(
        correlator(run),
        container(0.10, "create", CID, "churn-1"),
        container(0.11, "attach", CID, "churn-1"),
        engine(0.12, "network", "connect", "net1", name="bridge", container=CID, type="bridge"),
        container(0.30, "start", CID, "churn-1"),
        container(0.32, "die", CID, "churn-1", exitCode="0"),
        engine(0.35, "network", "disconnect", "net1", name="bridge", container=CID),
        container(0.37, "destroy", CID, "churn-1"),
    )
    for event in events:
        assert event.who.login == "bob" and event.who.method == "auditd-cli", event.action
        assert event.who.confidence == "high" and event.who.uid == 1002
    create = events[0]
    assert create.who.matched_by == "name" and create.who.command == run.who.command
    assert create.config["origin"] == "argv" and create.config["cap_add"] == ["NET_ADMIN"]
    assert create.config["memory_bytes"] == 64 << 20
    assert [e.who.matched_by for e in events[4:]] == ["container"] * 3


def test_a_detached_containers_own_exit_later_is_nobodys() -> None:
    found = correlator(call(0, "run -d --name web busybox sleep 300"))
    create, start = attribute(
        found, container(0.1, "create", CID, "web"), container(0.2, "start", CID, "web")
    )
    assert who(create)[0] == who(start)[0] == "alice"
    (die,) = attribute(found, container(300.2, "die", CID, "web", exitCode="0"))
    assert who(die) == (None, "unknown", None)


def test_a_stop_by_someone_else_wins_over_the_runs_lineage() -> None:
    found = correlator(call(0, "run -d --name web busybox true"), call(3, "stop web", "bob"))
    attribute(found, container(0.1, "create", CID, "web"))
    kill, die, stop = attribute(
        found,
        container(3.1, "kill", CID, "web", signal="15"),
        container(3.2, "die", CID, "web", exitCode="143"),
        container(3.3, "stop", CID, "web"),
    )
    assert [e.who.login for e in (kill, die, stop)] == ["bob"] * 3
    (destroy,) = attribute(found, container(3.4, "destroy", CID, "web"))
    assert who(destroy) == (None, "unknown", None)  # not --rm: a stop does not remove


def test_name_reused_goes_to_the_call_that_has_not_created_yet() -> None:
    found = correlator(
        call(0, "run -d --name x busybox"),
        call(1, "rm -f x"),
        call(2, "run -d --name x busybox", "bob"),
    )
    first = attribute(found, container(0.1, "create", CID, "x"))[0]
    gone = attribute(found, container(1.1, "kill", CID, "x"), container(1.2, "destroy", CID, "x"))
    second = attribute(found, container(2.1, "create", CID2, "x"))[0]
    assert first.who.login == "alice" and [e.who.login for e in gone] == ["alice", "alice"]
    assert second.who.login == "bob"


def test_same_image_runs_by_two_people_at_once_are_not_guessed() -> None:
    found = correlator(call(0, "run busybox true"), call(0.01, "run busybox true", "bob"))
    first, second = attribute(
        found,
        container(0.1, "create", CID, "eager_turing"),
        container(0.12, "create", CID2, "jolly_hopper"),
    )
    for event in (first, second):
        assert event.who.method == "unknown" and event.who.login is None
        assert event.who.candidates == ["alice", "bob"]


def test_same_image_runs_by_one_person_go_in_order() -> None:
    found = correlator(call(0, "run -m 1g busybox true"), call(0.01, "run -m 2g busybox true"))
    first, second = attribute(
        found, container(0.1, "create", CID, "a_b"), container(0.12, "create", CID2, "c_d")
    )
    assert who(first) == who(second) == ("alice", "auditd-cli", "image")
    assert first.config["memory_bytes"] == 1 << 30 and second.config["memory_bytes"] == 2 << 30
    assert first.who.confidence == "medium"  # the other call fitted as well
    other = attribute(found, container(0.3, "create", "9" * 64, "x", image="alpine"))[0]
    assert other.who.method == "unknown"  # a run of busybox does not create alpine


def test_a_call_causes_its_create_and_start_once() -> None:
    found = correlator(call(0, "run -d busybox sleep 1000"))
    create, start = attribute(
        found, container(0.1, "create", CID, "a_b"), container(0.2, "start", CID, "a_b")
    )
    assert who(create) == ("alice", "auditd-cli", "image")
    assert who(start) == ("alice", "auditd-cli", "container")
    # another busybox container comes up (restart policy): not the same run again
    other = attribute(
        found, container(5, "create", CID2, "c_d"), container(5.1, "start", CID2, "c_d")
    )
    assert [e.who.method for e in other] == ["unknown", "unknown"]
    # the run's own container restarted by its restart policy much later: nobody's
    again = attribute(
        found,
        container(100, "start", CID, "a_b"),
        engine(100.1, "network", "connect", "n" * 64, name="bridge", container=CID),
    )
    assert [e.who.method for e in again] == ["unknown", "unknown"]


def test_concurrent_named_runs_of_two_people() -> None:
    found = correlator(
        call(0, "run -d --name a busybox"), call(0, "run -d --name b busybox", "bob")
    )
    b, a = attribute(found, container(0.1, "create", CID2, "b"), container(0.1, "create", CID, "a"))
    assert (a.who.login, b.who.login) == ("alice", "bob")


# ----------------------------------------------------------------------------- others


def test_event_before_the_call_or_after_its_window_is_not_its() -> None:
    found = correlator(call(10, "stop -t 1 web"))
    early, late, inside = attribute(
        found,
        container(9.9, "die", CID, "web"),
        container(10 + 10 + 1 + 0.5, "stop", CID, "web"),  # window 10 s + its --time
        container(10 + 10.9, "stop", CID, "web"),
    )
    assert early.who.method == late.who.method == "unknown"
    assert inside.who.login == "alice"


def test_exec_events_follow_the_exec_id_even_much_later() -> None:
    found = correlator(call(0, "exec -u 0 -it web sh"))
    created, started = attribute(
        found,
        container(0.05, "exec_create: sh", CID, "web", execID="e1"),
        container(0.06, "exec_start: sh", CID, "web", execID="e1"),
    )
    (died,) = attribute(found, container(3600, "exec_die", CID, "web", execID="e1", exitCode="0"))
    assert [e.who.login for e in (created, started, died)] == ["alice"] * 3
    assert died.who.matched_by == "exec-id"
    assert created.config["kind"] == "exec" and created.config["user"] == "0"


def test_import_tag_and_the_import_event_by_image_id() -> None:
    image = "sha256:" + "5" * 64
    found = correlator(call(0, "import - docker.io/randomuser/cryptominer:latest", "bob"))
    tag, imported = attribute(
        found,
        engine(0.08, "image", "tag", image, name="randomuser/cryptominer:latest"),
        engine(0.0801, "image", "import", image, name=image),
    )
    assert who(tag) == ("bob", "auditd-cli", "image") and who(imported) == (
        "bob",
        "auditd-cli",
        "id",
    )


def test_rmi_by_a_reference_seen_before_and_by_id_prefix() -> None:
    image = "sha256:" + "a1b2" * 16
    found = correlator(
        call(0, "tag busybox registry.internal/x:1"), call(5, "rmi registry.internal/x:1")
    )
    attribute(found, engine(0.1, "image", "tag", image, name="registry.internal/x:1"))
    (untag,) = attribute(found, engine(5.1, "image", "untag", image, name=image))
    assert who(untag) == ("alice", "auditd-cli", "image") and untag.who.confidence == "high"
    by_id = correlator(call(0, "rmi a1b2", "bob"))
    (deleted,) = attribute(by_id, engine(0.1, "image", "delete", image, name=image))
    assert who(deleted) == ("bob", "auditd-cli", "id")


def test_an_image_retagged_by_every_build_keeps_its_newest_references() -> None:
    from listener.correlate.effects import REFS_PER_IMAGE

    image = "sha256:" + "e5" * 32
    found = correlator(call(3 * REFS_PER_IMAGE, "rmi ci/app:build-0", "bob"))
    for n in range(3 * REFS_PER_IMAGE):  # one cached image id, a new tag per build
        attribute(found, engine(n, "image", "tag", image, name=f"ci/app:build-{n}"))
    assert len(found._images.get(image) or ()) == REFS_PER_IMAGE
    newest = call(3 * REFS_PER_IMAGE + 1, f"rmi ci/app:build-{3 * REFS_PER_IMAGE - 1}")
    found.add_call(newest)
    (untag,) = attribute(
        found, engine(3 * REFS_PER_IMAGE + 1.1, "image", "untag", image, name=image)
    )
    assert who(untag) == ("alice", "auditd-cli", "image") and untag.who.confidence == "high"


def test_rmi_of_an_image_we_know_nothing_about_is_only_medium() -> None:
    image = "sha256:" + "c" * 64
    found = correlator(call(0, "rmi old/thing:1"))
    (untag,) = attribute(found, engine(0.1, "image", "untag", image, name=image))
    assert who(untag) == ("alice", "auditd-cli", "subcommand") and untag.who.confidence == "medium"


def test_compose_by_project_label_and_network_prefix() -> None:
    found = correlator(call(0, "compose -p shop up -d", "bob"))
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    net, create, connect = attribute(
        found,
        engine(0.1, "network", "create", "n" * 64, name="shop_default", type="bridge"),
        container(0.2, "create", CID, "shop-web-1", image="nginx", **labels),
        engine(0.3, "network", "connect", "n" * 64, name="shop_default", container=CID),
    )
    assert [who(e) for e in (net, create, connect)] == [
        ("bob", "auditd-cli", "compose-project")
    ] * 3


def test_a_disconnect_before_its_containers_create_goes_by_the_network() -> None:
    found = correlator(call(0, "compose -p shop up -d", "bob"))
    labels = {"com.docker.compose.project": "shop", "com.docker.compose.service": "web"}
    early, create = attribute(  # compose v1 disconnects and connects again with aliases
        found,
        engine(0.3, "network", "disconnect", "n" * 64, name="shop_default", container=CID),
        container(0.2, "create", CID, "shop-web-1", image="nginx", **labels),
    )
    assert who(early) == who(create) == ("bob", "auditd-cli", "compose-project")
    unrelated = correlator(call(0, "compose -p other up -d", "bob"))
    (elsewhere,) = attribute(
        unrelated,
        engine(0.3, "network", "disconnect", "n" * 64, name="shop_default", container=CID2),
    )
    assert who(elsewhere) == (None, "unknown", None)  # another project's call is not it


def test_compose_with_a_project_we_could_only_derive() -> None:
    found = correlator(call(0, "compose up -d", cwd="/srv/app"))
    labels = {"com.docker.compose.project": "app"}
    (matched,) = attribute(found, container(0.2, "create", CID, "app-web-1", **labels))
    assert who(matched) == ("alice", "auditd-cli", "compose-project")
    other = {"com.docker.compose.project": "named-in-yaml"}
    (fallback,) = attribute(found, container(0.3, "create", CID2, "named-in-yaml-db-1", **other))
    assert who(fallback) == ("alice", "auditd-cli", "subcommand")
    assert fallback.who.confidence == "medium"


def test_prune_destroys_are_the_prune_calls_but_only_medium() -> None:
    found = correlator(call(0, "container prune -f", "bob"))
    (destroyed,) = attribute(found, container(0.5, "destroy", CID, "old"))
    assert who(destroyed) == ("bob", "auditd-cli", "subcommand")


def test_rename_id_prefix_and_disconnect_by_container_id() -> None:
    found = correlator(call(0, "rename old new"), call(1, "rm -f 7b1c", "bob"))
    (renamed,) = attribute(found, container(0.1, "rename", CID, "new", oldName="/old"))
    assert who(renamed) == ("alice", "auditd-cli", "name")
    events = attribute(
        found,
        container(1.1, "kill", CID2, "other"),
        engine(1.2, "network", "disconnect", "n" * 64, name="bridge", container=CID2),
        container(1.3, "destroy", CID2, "other"),
    )
    assert [who(e) for e in events] == [
        ("bob", "auditd-cli", "id"),
        ("bob", "auditd-cli", "id"),
        ("bob", "auditd-cli", "id"),
    ]


def test_calls_to_other_engines_and_read_only_calls_are_ignored() -> None:
    found = correlator(
        call(0, "-H tcp://10.1.2.3:2376 rm web"), call(0, "ps -a"), call(0, "logs web")
    )
    (destroyed,) = attribute(found, container(0.1, "destroy", CID, "web"))
    assert destroyed.who.method == "unknown" and found.stats.calls == 0


def test_a_label_who_is_a_claim_beside_the_cli_and_never_the_login() -> None:
    found = correlator(call(0, "run -d --name lab -l audit.who=carol busybox"))
    labelled = container(0.1, "create", CID, "lab", **{"audit.who": "carol"})
    assert (labelled.who.login, labelled.who.claimed) == (None, "carol")
    attribute(found, labelled)
    assert who(labelled) == ("alice", "auditd-cli", "name")
    assert labelled.who.claimed == "carol"
    (unmatched,) = attribute(found, container(0.2, "create", CID2, "x", **{"audit.who": "carol"}))
    assert (unmatched.who.login, unmatched.who.method) == (None, "unknown")
    assert unmatched.who.claimed == "carol"


def test_inspect_config_wins_and_keeps_what_argv_said() -> None:
    found = correlator(call(0, "run -d --name w --privileged busybox"))
    event = container(0.1, "create", CID, "w")
    event.config = {"origin": "inspect", "image": "busybox", "privileged": False}
    attribute(found, event)
    assert event.config["origin"] == "inspect" and event.config["privileged"] is False
    assert event.config["argv_differences"] == {"privileged": True}


def test_calls_expire_and_memory_stays_bounded() -> None:
    found = Correlator(window_secs=10, long_window_secs=60, max_calls=500)
    for i in range(2000):
        found.add_call(call(i * 0.5, f"stop c{i}"))
    assert len(found._calls) == 500  # the oldest dropped first
    found.evict(T0 + 2000 * S)
    assert len(found._calls) == 0 and not found._by_key
    found.add_call(call(0, "stop c1"))
    found.add_call(found._calls[0])  # the same audit event read twice (a restart)
    assert len(found._calls) == 1


# ----------------------------------------------------------------------------- live stage


async def test_stage_waits_for_a_cli_record_that_comes_after_the_event() -> None:
    found = Correlator()
    now = [T0 + 1 * S]
    stage = Attribution(found, hold_secs=1.0, clock=lambda: now[0])
    event = container(0.9, "create", CID, "late")

    async def audit_catches_up() -> None:
        await asyncio.sleep(0.05)
        found.add_call(call(0.8, "run -d --name late busybox", "bob"))
        found.advance(T0 + round(0.95 * S))

    feeder = asyncio.create_task(audit_catches_up())
    (out,) = await stage.before_write([event])
    await feeder
    assert who(out) == ("bob", "auditd-cli", "name")


async def test_stage_holds_at_most_hold_secs_and_not_for_old_events() -> None:
    found = Correlator()
    now = [T0 + 1 * S]
    stage = Attribution(found, hold_secs=0.2, clock=lambda: now[0])
    loop = asyncio.get_running_loop()
    started = loop.time()
    (out,) = await stage.before_write([container(0.95, "create", CID, "x")])
    assert 0.1 < loop.time() - started < 0.5 and out.who.method == "unknown"
    started = loop.time()
    await stage.before_write([container(0.1, "create", CID2, "y")])  # 0.9 s old already
    assert loop.time() - started < 0.05
    other: list[Any] = [engine(0.5, "image", "pull", "busybox:latest", name="busybox:latest")]
    other[0].source = "auditd"
    assert await stage.before_write(other) == other  # not a Docker event: untouched
