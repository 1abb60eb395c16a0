"""Compose calls as auditd records them (v1 behind python3), and what they cannot have
caused: a container without a compose project label (issue 24, items 1 and 3)."""

from __future__ import annotations

import itertools

from listener.argv import parse_docker_argv
from listener.correlate import CliCall
from listener.model.event import Who
from tests.test_correlate import CID, CID2, T0, S, attribute, container, correlator, engine

_serial = itertools.count(900)
PROJECT_LABEL = "com.docker.compose.project"


def compose_v1(at: float, *args: str, cwd: str = "/home/alice/shop") -> CliCall:
    argv = ["/usr/bin/python3", "/usr/bin/docker-compose", *args]
    who = Who(login="alice", auid=1001, user="root", uid=0, method="auditd")
    time_ns = T0 + round(at * S)
    return CliCall(
        time_ns, f"{time_ns // S}.000:{next(_serial)}", parse_docker_argv(argv, cwd), who
    )


def test_compose_v1_up_and_down_with_a_derived_project() -> None:
    found = correlator(compose_v1(0, "up", "-d"), compose_v1(30, "down", "-t", "1"))
    labelled = {PROJECT_LABEL: "shop"}
    events = attribute(
        found,
        engine(0.5, "network", "create", "n" * 64, name="shop_default", type="bridge"),
        container(0.6, "create", CID, "shop_web_1", **labelled),
        engine(0.7, "network", "connect", "n" * 64, name="shop_default", container=CID),
        container(0.8, "start", CID, "shop_web_1", **labelled),
        container(31, "kill", CID, "shop_web_1", **labelled),
        container(31.1, "die", CID, "shop_web_1", **labelled),
        container(31.2, "stop", CID, "shop_web_1", **labelled),
        container(31.3, "destroy", CID, "shop_web_1", **labelled),
        engine(31.4, "network", "destroy", "n" * 64, name="shop_default", type="bridge"),
    )
    for event in events:
        assert (event.who.login, event.who.method) == ("alice", "auditd-cli"), event
        assert event.who.confidence in ("high", "medium")


def test_a_container_compose_did_not_make_is_not_its_fallback() -> None:
    found = correlator(compose_v1(0, "up", "-d"))
    (start,) = attribute(found, container(60, "start", CID2, "raw1"))  # no project label
    assert start.who.method == "unknown"
    # a project label other than the derived one (COMPOSE_PROJECT_NAME): a fallback still
    (other,) = attribute(found, container(61, "start", CID, "x_web_1", **{PROJECT_LABEL: "x"}))
    assert (other.who.login, other.who.confidence) == ("alice", "medium")
