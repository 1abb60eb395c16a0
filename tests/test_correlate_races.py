"""Races between logins: the argv that agrees with what the Engine created wins
(issue 24, item 2). The Engine's side comes from the live inspect: the container's
settings in `config` and what it runs in `Event.launch`."""

from __future__ import annotations

from listener.model.containerconfig import ContainerConfig
from listener.model.event import Event, Launch
from tests.test_correlate import CID, CID2, attribute, call, container, correlator

BUSYBOX = Launch(entrypoint=(), command=(), image_entrypoint=(), image_command=())


def inspected(event: Event, launch: Launch, **settings: object) -> Event:
    config = ContainerConfig(origin="inspect", image=event.actor.image, **settings)  # type: ignore[arg-type]
    event.config = config.as_event_config()
    event.note_launch(launch)
    return event


def ran(command: tuple[str, ...], entrypoint: tuple[str, ...] = ()) -> Launch:
    return Launch(entrypoint, command, image_entrypoint=(), image_command=())


def test_a_refused_run_by_someone_else_does_not_take_the_container() -> None:
    refused = call(0, "run -d --name x1 busybox", login="bob")  # no command: refused
    worked = call(3, "run -d --name x1 busybox sleep 300", login="alice")
    found = correlator(refused, worked)
    create = inspected(container(3.1, "create", CID, "x1"), ran(("sleep", "300")))
    start = container(3.2, "start", CID, "x1")
    attribute(found, create, start)
    assert (create.who.login, create.who.confidence) == ("alice", "high")
    assert create.who.candidates is None
    assert start.who.login == "alice"


def test_the_argv_that_was_refused_14s_before_is_not_the_evidence() -> None:
    refused = call(0, "container create --name job --user 1000 busybox", login="alice")
    worked = call(14, "container create --name job --user 1000 busybox echo hi", login="alice")
    found = correlator(refused, worked)
    create = inspected(container(14.1, "create", CID, "job"), ran(("echo", "hi")), user="1000")
    attribute(found, create)
    assert create.who.command == worked.who.command and create.who.confidence == "high"
    assert create.config["argv_differences"] == {}  # the settings of the call that worked


def test_settings_decide_too_user_and_mounts() -> None:
    other_mount = call(0, "run -d --name y1 -v /home/bob:/data busybox sleep 9", login="bob")
    as_user = call(1, "run -d --name y1 -u 1000 -v /srv/y:/data busybox sleep 9", login="alice")
    found = correlator(other_mount, as_user)
    mount = {"type": "bind", "source": "/srv/y", "destination": "/data"}
    create = inspected(
        container(1.1, "create", CID, "y1"), ran(("sleep", "9")), user="1000", mounts=[mount]
    )
    attribute(found, create)
    assert create.who.login == "alice"


def test_two_unnamed_runs_at_the_same_moment_with_different_commands() -> None:
    first = call(0, "run --rm busybox echo one", login="alice")
    second = call(0, "run --rm busybox echo two", login="bob")
    found = correlator(first, second)
    two = inspected(container(0.2, "create", CID2, "happy_bob"), ran(("echo", "two")))
    one = inspected(container(0.3, "create", CID, "sad_alice"), ran(("echo", "one")))
    attribute(found, two, one)
    assert (two.who.login, one.who.login) == ("bob", "alice")
    for end in attribute(found, container(0.5, "die", CID, "sad_alice"),
                         container(0.6, "destroy", CID2, "happy_bob")):  # fmt: skip
        assert end.who.login == ("alice" if end.actor.id == CID else "bob")


def test_entrypoint_and_image_default_command() -> None:
    by_entry = call(0, "run -d --name z1 --entrypoint /bin/sh busybox", login="bob")
    by_default = call(0, "run -d --name z1 busybox", login="alice")
    found = correlator(by_entry, by_default)
    image_default = Launch((), ("sh",), image_entrypoint=(), image_command=("sh",))
    create = inspected(container(0.1, "create", CID, "z1"), image_default)
    attribute(found, create)
    assert create.who.login == "alice"


def test_without_engine_evidence_equal_calls_of_two_logins_stay_unknown() -> None:
    found = correlator(
        call(0, "run -d --name w1 busybox", login="bob"),
        call(1, "run -d --name w1 busybox sleep 1", login="alice"),
    )
    (create,) = attribute(found, container(1.1, "create", CID, "w1"))  # offline: no inspect
    assert create.who.method == "unknown" and create.who.candidates == ["alice", "bob"]
    both_agree = correlator(
        call(0, "run -d --name v1 busybox sleep 1", login="bob"),
        call(1, "run -d --name v1 busybox sleep 1", login="alice"),
    )
    (same,) = attribute(both_agree, inspected(container(1.1, "create", CID, "v1"),
                                              ran(("sleep", "1"))))  # fmt: skip
    assert same.who.method == "unknown" and same.who.candidates == ["alice", "bob"]


def test_spellings_the_engine_resolves_do_not_lose_a_call_the_container() -> None:
    """bob's run worked (a relative bind, another container's network) after pulling;
    alice's, the same name a second later, was refused (name in use) and states less."""
    worked = call(0, "run -d --name u1 -v ./data:/data --network container:db busybox sleep 5",
                  login="bob")  # fmt: skip
    refused = call(1, "run -d --name u1 busybox sleep 5", login="alice")
    found = correlator(worked, refused)
    mount = {"type": "bind", "source": "/home/bob/data", "destination": "/data"}
    create = inspected(container(5, "create", CID, "u1"), ran(("sleep", "5")),
                       mounts=[mount], network_mode="container:" + "d" * 64)  # fmt: skip
    attribute(found, create)
    # the spellings agree once set aside; alice's argv asked for no bind and no network
    assert (create.who.login, create.who.candidates) == ("bob", None)


def test_settings_only_a_call_sets_must_be_stated_by_it() -> None:
    plain = call(0, "run -d --name p1 busybox sleep 5", login="alice")
    privileged = call(0, "run -d --name p1 --privileged --cap-add NET_ADMIN busybox sleep 5",
                      login="bob")  # fmt: skip
    found = correlator(plain, privileged)
    create = inspected(container(0.1, "create", CID, "p1"), ran(("sleep", "5")),
                       privileged=True, cap_add=["NET_ADMIN"])  # fmt: skip
    attribute(found, create)
    assert create.who.login == "bob"
