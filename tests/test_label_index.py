"""`query -f label=` finds events through the label index (migration 0011) instead of
reading every body's labels: 14 s on a 10M-event trail before it. The index only
narrows where a query looks, so what a query returns must equal what the in-memory
filter selects, for every shape of labels; and the index must be complete, which
verify checks."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from listener.model.event import Actor, Event, natural_id
from sinks.base import EventFilter
from sinks.memory import MemoryTrail
from sinks.sqlite import SQLiteTrail, build_query, verify_file
from sinks.sqlite import labels as label_index
from sinks.sqlite.bucketed import ActorIndex, actor_index
from sinks.sqlite.schema import LABEL_TRIGGERS
from tests.actor_layouts import old_plan

T0 = 1_767_000_000_000_000_000
MANY = label_index.FEW_ACTORS + 6  # containers of the common project: more than FEW_ACTORS


def _container(number: int) -> str:
    return f"{number:04x}" * 16


def _event(n: int, actor: str, labels: object, **fields: Any) -> Event:
    attributes = {} if labels is None else {"labels": labels}
    return Event(
        id=natural_id("label-index", n),
        time_ns=T0 + n,
        source="docker",
        host="h1",
        type=fields.pop("type", "container"),
        action=fields.pop("action", "start"),
        actor=Actor(id=actor, name=f"c-{actor[:4]}"),
        attributes=attributes,
        **fields,
    )


def _events() -> list[Event]:
    """Many containers of one project (each a few events, some late in the trail), a
    few special ones, and labels in every shape a body can hold them."""
    events: list[Event] = []
    for _round in range(3):
        for number in range(MANY):
            tier = "web" if number % 7 else "db"
            labels = {"project": "shop", "number": str(number), "tier": tier}
            events.append(_event(len(events) + 1, _container(number), labels))
        events.append(_event(len(events) + 1, "", {"project": "daemon"}, type="daemon"))
    odd: list[tuple[str, object]] = [
        (_container(900), {"project": "lab", "count": 3, "flag": True}),  # non-text values
        (_container(901), ["project", "lab"]),  # an array: no labels at all
        (_container(902), "project=lab"),  # a string: no labels at all
        (_container(903), {}),
        (_container(904), None),
        (_container(905), {"project": "lab", "": "empty key"}),
        (_container(900), {"project": "lab", "later": "yes"}),  # an actor's labels change
    ]
    for actor, labels in odd:
        events.append(_event(len(events) + 1, actor, labels))
    events.append(_event(len(events) + 1, _container(MANY + 50), {"project": "shop", "late": "1"}))
    return events


FILTERS: dict[str, dict[str, Any]] = {
    "common": {"project": "shop"},
    "rare": {"project": "lab"},
    "one actor": {"number": "5"},
    "two values": {"number": ("5", "60")},
    "two keys": {"project": "shop", "tier": "db"},
    "two common keys": {"project": "shop", "tier": "web"},
    "a key and a value it never has": {"project": "shop", "number": "lab"},
    "absent key": {"ticket": "OPS-0000"},
    "absent value": {"project": "nowhere"},
    "not text": {"count": "3"},
    "empty key": {"": "empty key"},
    "changed later": {"later": "yes"},
    "no actor id": {"project": "daemon"},
    "late actor": {"late": "1"},
}


# (FEW_ACTORS, CANDIDATES, SEVERAL_KEYS_FACTOR): as shipped; then low enough that the
# common labels are read at their events, among their actors in seq order, and in seq
# order alone.
THRESHOLDS = [
    (label_index.FEW_ACTORS, label_index.CANDIDATES, label_index.SEVERAL_KEYS_FACTOR),
    (5, 250, 1),
    (5, 100, 1),
    (5, 50, 1),
]


def _lower(monkeypatch: pytest.MonkeyPatch, few: int, candidates: int, factor: int) -> None:
    if candidates < label_index.CANDIDATES:  # the actors' events read several chunks each
        monkeypatch.setattr(label_index, "PAIRS_PER_LOOK_UP", 7)
    monkeypatch.setattr(label_index, "FEW_ACTORS", few)
    monkeypatch.setattr(label_index, "CANDIDATES", candidates)
    monkeypatch.setattr(label_index, "SEVERAL_KEYS_FACTOR", factor)


@pytest.fixture(scope="module")
def trails(tmp_path_factory: pytest.TempPathFactory) -> tuple[SQLiteTrail, MemoryTrail, Path]:
    path: Path = tmp_path_factory.mktemp("labels") / "t.db"
    events = _events()
    memory = MemoryTrail()
    memory.open()
    memory.append(events)
    trail = SQLiteTrail(path)
    trail.open()
    for start in range(0, len(events), 37):  # several batches: actors span them
        trail.append(events[start : start + 37])
    return trail, memory, path


@pytest.mark.parametrize("name", FILTERS)
@pytest.mark.parametrize("limit", [None, 1, 5, 1000])
@pytest.mark.parametrize("since", [None, 100])
@pytest.mark.parametrize("thresholds", THRESHOLDS)
def test_a_label_query_selects_what_the_filter_means(
    trails: tuple[SQLiteTrail, MemoryTrail, Path],
    name: str,
    limit: int | None,
    since: int | None,
    thresholds: tuple[int, int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lower thresholds send the same filters down the other ways of reading."""
    _lower(monkeypatch, *thresholds)
    trail, memory, _ = trails
    f = EventFilter(
        labels=FILTERS[name], limit=limit, since_ns=None if since is None else T0 + since
    )
    want = [e.seq for e in memory.query(f)]
    assert [e.seq for e in trail.query(f)] == want


def test_the_filters_cover_each_plan(
    trails: tuple[SQLiteTrail, MemoryTrail, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cases above go down every way the index answers."""
    trail, _, path = trails
    with contextlib.closing(sqlite3.connect(path)) as conn:
        index = actor_index(conn)
        plans = {name: label_index.plan(conn, want, index) for name, want in FILTERS.items()}
        lowered = {}
        for thresholds in THRESHOLDS[1:]:
            _lower(monkeypatch, *thresholds)
            lowered[thresholds[1]] = label_index.plan(conn, FILTERS["two common keys"], index)
    assert plans["absent key"].nothing and plans["absent value"].nothing
    assert plans["a key and a value it never has"].nothing
    assert plans["common"].actors is None and plans["common"].seqs is not None  # its events
    assert lowered[250].seqs is not None  # the web tier's 60 actors' events, fewer than 250
    assert lowered[100].among is not None and lowered[100].seqs is None  # more: among them
    # 50 actors or more: seq order, from the first web container's first event
    assert lowered[50].among is None and lowered[50].from_seq == 2
    assert plans["late actor"].actors == (_container(MANY + 50),)
    assert plans["one actor"].actors == (_container(5),)
    assert plans["rare"].actors == (_container(900), _container(905))
    assert plans["two keys"].actors is not None and len(plans["two keys"].actors) == 10
    page = trail.query_plan(EventFilter(labels=FILTERS["common"], limit=5))
    assert any("INTEGER PRIMARY KEY (rowid>?)" in line for line in page), page  # CANDIDATES
    one = trail.query_plan(EventFilter(labels=FILTERS["one actor"], limit=5))
    assert any("INDEX events_bucket_actor (<expr>=? AND actor_id=?)" in line for line in one), one
    assert not any("TEMP B-TREE" in line or line.startswith("SCAN events") for line in one), one


@pytest.mark.parametrize("limit", [None, 5])
def test_the_actors_events_are_read_bucket_by_bucket(tmp_path: Path, limit: int | None) -> None:
    """A label few actors carry: their events through the actor index (migration 0014),
    each actor from its own first bucket; on a trail from before it, through the
    per-id index it still has."""
    f = EventFilter(labels=FILTERS["two keys"], limit=limit)
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(_events())
        plan = trail.query_plan(f)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            labelled = label_index.plan(conn, f.labels, None)
    assert labelled.actors is not None and len(labelled.actors) == 10
    assert any("INDEX events_bucket_actor (<expr>=? AND actor_id=?)" in line for line in plan)
    assert not any(line.startswith("SCAN events") for line in plan), plan
    assert not any("FOR ORDER BY" in line for line in plan if limit), plan  # walked in order
    before = old_plan(path, build_query(f, labels=labelled))
    assert any("INDEX events_actor_id (actor_id=?)" in line for line in before), before
    assert not any(line.startswith("SCAN events") for line in before), before


def test_each_actor_has_a_row_per_label_not_per_event(
    trails: tuple[SQLiteTrail, MemoryTrail, Path],
) -> None:
    _, _, path = trails
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT count(*) FROM label_actors").fetchone()[0]
    # project, number and tier per shop container; the daemon's project; two each
    # for the lab containers (project, and `later` or the empty key) and the late one
    assert rows == 3 * MANY + 1 + 2 + 2 + 2


def trail_before_the_label_index(path: Path, events: list[Event]) -> Path:
    """A trail of `events` at `path` as a docktrail before migration 0011 left it."""
    with SQLiteTrail(path) as trail:
        trail.append(events)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for name in LABEL_TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE label_actors")
        conn.execute("DROP TABLE labels")
        conn.execute("DELETE FROM _migrations WHERE name = '0011_label_index'")
    return path


def test_a_trail_from_before_the_index_gets_it_filled_when_opened(tmp_path: Path) -> None:
    events = _events()
    path = trail_before_the_label_index(tmp_path / "t.db", events)
    memory = MemoryTrail()
    memory.open()
    memory.append(events)
    with SQLiteTrail(path) as trail:
        assert trail.applied_migrations == ["0011_label_index"]
        for wanted in FILTERS.values():
            f = EventFilter(labels=wanted, limit=5)
            assert [e.seq for e in trail.query(f)] == [e.seq for e in memory.query(f)]
    assert verify_file(path, path.with_suffix(".key")).ok


def _shell(path: Path, sql: str) -> None:
    """What someone who can write the file (not read the key) can do to it."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(sql)


def _without_the_triggers(sql: str) -> str:
    drop = "".join(f"DROP TRIGGER {name};" for name in LABEL_TRIGGERS)
    return drop + sql + "".join(f"{text};" for text in LABEL_TRIGGERS.values())


@pytest.mark.parametrize(
    "removal",
    [
        "DELETE FROM label_actors WHERE actor_seq = (SELECT min(seq) FROM events "
        "WHERE actor_id = '{actor}')",
        "DELETE FROM labels WHERE key = 'later'",
        "UPDATE label_actors SET actor_seq = actor_seq + 1 WHERE label = "
        "(SELECT id FROM labels WHERE key = 'number' AND value = '5')",
    ],
)
def test_verify_finds_a_label_row_removed_to_hide_events(tmp_path: Path, removal: str) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(_events())
    assert verify_file(path, path.with_suffix(".key")).ok
    _shell(path, _without_the_triggers(removal.format(actor=_container(5)) + ";"))
    report = verify_file(path, path.with_suffix(".key"))
    assert not report.ok
    assert report.problem.startswith("label index: label ")
    assert "is missing (rows deleted" in report.problem


def test_a_planted_label_row_only_costs_a_look(tmp_path: Path) -> None:
    """A row too many names an actor whose events do not carry the label: the bodies
    decide, so the query is unchanged."""
    path = tmp_path / "t.db"
    events = _events()
    with SQLiteTrail(path) as trail:
        trail.append(events)
    _shell(
        path,
        "INSERT INTO label_actors SELECT id, 1 FROM labels WHERE key = 'late';"
        "INSERT INTO labels (key, value) VALUES ('ticket', 'OPS-0000');"
        "INSERT INTO label_actors SELECT id, 2 FROM labels WHERE key = 'ticket';",
    )
    memory = MemoryTrail()
    memory.open()
    memory.append(events)
    with SQLiteTrail(path) as trail:
        for wanted in ({"late": "1"}, {"ticket": "OPS-0000"}):
            f = EventFilter(labels=wanted, limit=10)
            assert [e.seq for e in trail.query(f)] == [e.seq for e in memory.query(f)]


def test_a_rolled_back_batch_leaves_nothing_its_writer_believes_indexed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer remembers which labels it indexed, to skip them next time; a batch
    whose transaction fails must not be remembered, or its retry would skip them."""
    path = tmp_path / "t.db"
    events = _events()
    with SQLiteTrail(path) as trail:
        trail.append(events[:10])

        def failing(conn: sqlite3.Connection) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(trail, "_seal_heads", failing)
        with pytest.raises(Exception, match="disk I/O error"):
            trail.append(events[10:])
        monkeypatch.undo()
        trail.append(events[10:])
        f = EventFilter(labels={"late": "1"})
        assert [e.id for e in trail.query(f)] == [events[-1].id]
    assert verify_file(path, path.with_suffix(".key")).ok


PAGED = ["common", "two keys", "two common keys", "late actor", "changed later", "rare"]


@pytest.mark.parametrize("name", PAGED)
@pytest.mark.parametrize("page", [1, 3, 7, 100])
@pytest.mark.parametrize("few", [label_index.FEW_ACTORS, 5, 2])
def test_pages_read_in_two_steps_page_through_every_event_once(
    trails: tuple[SQLiteTrail, MemoryTrail, Path],
    name: str,
    page: int,
    few: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A page of more than FEW_ACTORS actors reads the first ones' events before the
    next one's first event, then the rest: page after page (`after_seq`), each equals
    what the in-memory filter selects, and together they are every event once."""
    monkeypatch.setattr(label_index, "FEW_ACTORS", few)
    trail, memory, _ = trails
    after, seen = 0, []
    while True:
        f = EventFilter(labels=FILTERS[name], limit=page, after_seq=after)
        got = [e.seq for e in trail.query(f)]
        assert got == [e.seq for e in memory.query(f)]
        if not got:
            break
        seen += got
        after = got[-1]
    assert seen == [e.seq for e in memory.query(EventFilter(labels=FILTERS[name]))]


def test_a_page_is_read_in_two_steps_only_when_the_first_leaves_it_short(
    trails: tuple[SQLiteTrail, MemoryTrail, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common project's 70 containers: a page of 5 ends among the first 64's events
    (no second step); a page of 1000 needs the rest. Both plans are shown."""
    trail, _, _ = trails
    rests: list[int] = []
    real_rest = label_index.rest

    def counted(*args: Any) -> label_index.LabelPlan:
        rests.append(1)
        return real_rest(*args)

    monkeypatch.setattr(label_index, "rest", counted)
    small = list(trail.query(EventFilter(labels=FILTERS["common"], limit=5)))
    assert len(small) == 5 and not rests
    large = list(trail.query(EventFilter(labels=FILTERS["common"], limit=1000)))
    assert len(large) == MANY * 3 + 1 and rests == [1]
    plan = trail.query_plan(EventFilter(labels=FILTERS["common"], limit=5))
    then = plan.index("then, if the page is not full:")
    assert any("events_bucket_actor" in line for line in plan[:then]), plan  # actor walks
    assert any("json_each" in line for line in plan[then:]), plan  # the actors' events


def test_a_page_by_image_and_label_read_in_two_steps(tmp_path: Path) -> None:
    """An image filter's page (its own merged index walks) with a label of more than
    FEW_ACTORS containers: the first step still ends before the split, the rest follows."""
    events: list[Event] = []
    for _round in range(3):
        for number in range(MANY):
            event = _event(len(events) + 1, _container(number), {"project": "shop"})
            event.actor = Actor(id=_container(number), name="c", image=f"img:{number % 2}")
            events.append(event)
    memory, trail = MemoryTrail(), SQLiteTrail(tmp_path / "t.db")
    memory.open()
    memory.append(events)
    trail.open()
    trail.append(events)
    for page in (1, 5, 40, 1000):
        after, seen = 0, []
        while True:
            f = EventFilter(labels={"project": "shop"}, image="img:0", limit=page, after_seq=after)
            got = [e.seq for e in trail.query(f)]
            assert got == [e.seq for e in memory.query(f)]
            if not got:
                break
            seen, after = seen + got, got[-1]
        assert len(seen) == MANY // 2 * 3
    trail.close()


def test_every_first_step_of_a_filter_is_one_statement_whatever_the_split() -> None:
    """The first step's bound is a parameter: a text per page would compile a statement
    of FEW_ACTORS walks each time, and the connection keeps 128 of them (query peak RSS
    went from 75 to 170 MB at 10M events)."""
    head = tuple(_container(number) for number in range(label_index.FEW_ACTORS))
    f = EventFilter(labels={"project": "shop", "tier": "web"}, limit=100)
    statements = set()
    for split_seq, from_seq in ((70, 3), (9_000, 4_000), (123_456_789, 1)):
        plan = label_index.LabelPlan(from_seq=from_seq, head=head, split_seq=split_seq)
        for index in (None, ActorIndex(through_seq=50), ActorIndex(through_seq=50, behind=False)):
            sql, params = build_query(f, labels=plan, actor_index=index)
            statements.add((sql, index))
            assert split_seq in params
    assert len(statements) == 3  # one per kind of trail, whatever the pages
