"""Every documented query filter is answered from an index, never by a full scan of
the events or alerts (README "Query filters": container, login, image, time range,
exec session, label; alerts: rule, and the same subjects). A full scan is what makes
a query's cost grow with the trail, so the plan is the behaviour checked here, not a
timing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from sinks.base import AlertFilter, EventFilter
from sinks.sqlite import SQLiteTrail
from sinks.sqlite.reading import NEWEST_ENGINE_TIME

T0 = 1_795_346_502_000_000_000
CID = "d00d" + "2" * 60

EVENT_FILTERS = {
    "container name": EventFilter(container="web-1"),
    "container id prefix": EventFilter(container=CID[:12]),
    "two containers": EventFilter(container=("web-1", "api-1")),
    "login": EventFilter(user="alice"),
    "image": EventFilter(image="registry.internal/web/nginx:1.25"),
    "image glob": EventFilter(image="registry.internal/*"),
    "since": EventFilter(since_ns=T0),
    "since and until": EventFilter(since_ns=T0, until_ns=T0 + 60 * 10**9),
    "container in a time range": EventFilter(container="web-1", since_ns=T0, until_ns=T0 + 1),
    "login since": EventFilter(user="alice", since_ns=T0),
    "session": EventFilter(session="3c1f2a9e7b10"),
    "session since": EventFilter(session="3c1f2a9e7b10", since_ns=T0),
    "label": EventFilter(labels={"com.docker.compose.project": "shop"}),
    "a page of a label": EventFilter(labels={"com.docker.compose.project": "shop"}, limit=100),
    "label no event has": EventFilter(labels={"audit.ticket": "OPS-0000"}),
    "label since": EventFilter(labels={"com.docker.compose.project": "shop"}, since_ns=T0),
}
ALERT_FILTERS = {
    "rule": AlertFilter(rule="privileged-container"),
    "container": AlertFilter(container="web-1"),
    "login": AlertFilter(user="alice"),
    "image": AlertFilter(image="registry.internal/web/nginx:1.25"),
    "since": AlertFilter(since_ns=T0),
    "since and until": AlertFilter(since_ns=T0, until_ns=T0 + 60 * 10**9),
}


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SQLiteTrail]:
    path: Path = tmp_path_factory.mktemp("plans") / "t.db"
    event = Event(
        id=natural_id("plans", 1),
        time_ns=T0,
        source="docker",
        host="h1",
        type="container",
        action="create",
        actor=Actor(id=CID, name="web-1", image="registry.internal/web/nginx:1.25"),
        who=Who(login="alice", user="root"),
        attributes={"labels": {"com.docker.compose.project": "shop"}},
    )
    with SQLiteTrail(path) as opened:
        (stored,) = opened.append([event]).stored
        alert = Alert(
            id=natural_id("plans-alert", 1),
            time_ns=T0,
            rule="privileged-container",
            severity="critical",
            event_seq=stored.seq or 0,
            event_id=stored.id,
            host="h1",
            container="web-1",
            summary="privileged",
        )
        opened.append_alerts([alert])
        yield opened


def full_scans(plan: list[str], table: str) -> list[str]:
    """Plan lines that read every row of `table` (or walk a whole index of it)."""
    return [line for line in plan if line.startswith(f"SCAN {table}")]


@pytest.mark.parametrize("name", EVENT_FILTERS)
def test_event_filter_uses_an_index(trail: SQLiteTrail, name: str) -> None:
    plan = trail.query_plan(EVENT_FILTERS[name])
    assert any(line.startswith("SEARCH events") for line in plan), plan
    assert full_scans(plan, "events") == [], plan


@pytest.mark.parametrize("name", ALERT_FILTERS)
def test_alert_filter_uses_an_index(trail: SQLiteTrail, name: str) -> None:
    plan = trail.alerts_query_plan(ALERT_FILTERS[name])
    assert any(line.startswith("SEARCH alerts") for line in plan), plan
    assert full_scans(plan, "alerts") == [] and full_scans(plan, "events") == [], plan


def test_since_alone_still_selects_by_time(trail: SQLiteTrail) -> None:
    # The upper bound added for the planner must not change what is selected.
    assert [e.seq for e in trail.query(EventFilter(since_ns=T0))] == [1]
    assert list(trail.query(EventFilter(since_ns=T0 + 1))) == []
    assert [a.seq for a in trail.query_alerts(AlertFilter(since_ns=T0))] == [1]


PAGES = {
    "login": EventFilter(user="alice", limit=100),
    "two logins": EventFilter(user=("alice", "bob"), limit=100),
    "image": EventFilter(image="registry.internal/web/nginx:1.25", limit=100),
    "login of a type": EventFilter(user="alice", type="container", limit=100),
}


@pytest.mark.parametrize("name", PAGES)
def test_a_page_of_a_common_login_or_image_walks_the_index_in_seq_order(
    trail: SQLiteTrail, name: str
) -> None:
    # Sorting every match of a login that did a quarter of everything is what
    # made its first page cost grow with the trail; each index is in seq order.
    plan = trail.query_plan(PAGES[name])
    assert full_scans(plan, "events") == [], plan
    assert not any("TEMP B-TREE" in line and not _one_bucket(line) for line in plan), plan


def _one_bucket(line: str) -> bool:
    """A sort of one bucket's matches at a time (an image name's ids, through the actor
    index), which stops at the page's end, unlike a sort of every match."""
    return line == "USE TEMP B-TREE FOR RIGHT PART OF ORDER BY"


def test_pages_select_what_the_whole_query_selects(tmp_path: Path) -> None:
    people = [("alice", "root"), ("bob", "alice"), ("carol", "carol"), (None, "alice")]
    images = ["registry.internal/web/nginx:1.25", "docker.io/library/redis:7"]
    events = [
        Event(
            id=natural_id("pages", n),
            time_ns=T0 + n,
            source="docker",
            host="h1",
            type="image" if n % 7 == 0 else "container",
            action="pull" if n % 7 == 0 else "start",
            actor=Actor(id=f"{n:064x}", name=images[n % 2], image=images[(n + 1) % 2])
            if n % 7 == 0
            else Actor(id=f"{n:064x}", name=f"c{n}", image=images[n % 2]),
            who=Who(login=people[n % 4][0], user=people[n % 4][1]),
        )
        for n in range(1, 300)
    ]
    filters = [
        EventFilter(user="alice"),
        EventFilter(user=("bob", "carol")),
        EventFilter(image=images[0]),
        EventFilter(image="docker.io/*"),
        EventFilter(user="alice", type="image"),
    ]
    with SQLiteTrail(tmp_path / "t.db") as pages:
        pages.append(events)
        for f in filters:
            whole = [e.seq for e in pages.query(f)]
            assert len(whole) > 20, f
            for limit, after in ((10, None), (7, whole[15]), (1000, None)):
                page = dataclasses.replace(f, limit=limit, after_seq=after)
                expected = [s for s in whole if after is None or (s or 0) > after][:limit]
                assert [e.seq for e in pages.query(page)] == expected, (f, limit, after)


def test_a_page_of_a_logins_alerts_walks_the_index_in_seq_order(trail: SQLiteTrail) -> None:
    for f in (AlertFilter(user="alice", limit=50), AlertFilter(user="alice", rule="x", limit=5)):
        plan = trail.alerts_query_plan(f)
        assert full_scans(plan, "alerts") == [], plan
        assert not any("TEMP B-TREE" in line for line in plan), plan


def test_alert_pages_select_what_the_whole_query_selects(tmp_path: Path) -> None:
    people = [("alice", "root"), ("bob", "alice"), (None, "alice"), ("carol", None)]
    with SQLiteTrail(tmp_path / "t.db") as pages:
        event = Event(
            id=natural_id("alert-pages"),
            time_ns=T0,
            source="docker",
            host="h1",
            type="container",
            action="create",
        )
        (stored,) = pages.append([event]).stored
        alerts = [
            Alert(
                id=natural_id("alert-pages", n),
                time_ns=T0 + n,
                rule=("privileged-container", "untrusted-image")[n % 2],
                severity="high",
                event_seq=stored.seq or 0,
                event_id=stored.id,
                host="h1",
                who=Who(login=people[n % 4][0], user=people[n % 4][1]),
                summary=f"alert {n}",
                suppressed="known" if n % 5 == 0 else None,
            )
            for n in range(200)
        ]
        pages.append_alerts(alerts)
        for f in (
            AlertFilter(user="alice"),
            AlertFilter(user=("bob", "carol")),
            AlertFilter(user="alice", rule="untrusted-image", include_suppressed=True),
        ):
            whole = [a.seq for a in pages.query_alerts(f)]
            assert len(whole) > 20, f
            for limit, after in ((10, None), (7, whole[12]), (500, None)):
                page = dataclasses.replace(f, limit=limit, after_seq=after)
                expected = [s for s in whole if after is None or (s or 0) > after][:limit]
                assert [a.seq for a in pages.query_alerts(page)] == expected, (f, limit, after)


def test_where_run_resumes_is_read_from_the_rows_after_the_save_only(
    trail: SQLiteTrail,
) -> None:
    """`resume_point`'s look past the saved horizon: a rowid range, never the time index
    walked from the top (every entry for a host without Engine events)."""
    rows = (
        trail._connection()
        .execute("EXPLAIN QUERY PLAN " + NEWEST_ENGINE_TIME, (0, "h1"))
        .fetchall()
    )
    assert [row[-1] for row in rows] == ["SEARCH events USING INTEGER PRIMARY KEY (rowid>?)"]
