"""Queries by container, image and label through the actor index (migration 0014,
`sinks.sqlite.bucketed`): bucket by bucket instead of the per-id indexes it dropped. What
they return must be what the in-memory filter selects, on a trail spread over several
buckets; and on the two other layouts a trail can have: the old one (a read-only copy
from before the migration, read with today's per-id indexes and their SQL) and one an
older docktrail wrote to after the upgrade (rows past `actors_through_seq`, in neither
table: read directly)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sinks.sqlite.actors as actors
from listener import serve
from listener.model.alert import Alert
from listener.model.event import Actor, Event, natural_id
from sinks.base import AlertFilter, EventFilter
from sinks.memory import MemoryTrail
from sinks.sqlite import SQLiteTrail
from sinks.sqlite.schema import ACTOR_TRIGGERS
from tests.actor_layouts import trail_before_the_actor_index
from tests.shared_data import missing_component

T0 = 1_767_000_000_000_000_000
BUCKET = 1 << actors.BUCKET_BITS
STEPS = 10_000  # three health checks a step: about 30,000 events, four buckets
LATE = 7_900  # from this step on, an older docktrail writes (the `behind` layout)
NETWORK = "n" * 64  # the network every connect names


def _id(kind: str, number: int) -> str:
    return hashlib.sha256(f"{kind}-{number}".encode()).hexdigest()


A, B, GHOST, LATE_ONE, NET_ONLY = (_id("c", n) for n in range(5))
LONG = {"db-main": _id("long", 0), "cache-main": _id("long", 1), "proxy": _id("long", 2)}
SHOPS = 100  # more containers of the project than `labels.FEW_ACTORS`
NGINX_1, NGINX_2, NGINX_LATE, REDIS, LATE_IMAGE = (_id("i", n) for n in range(5))


def _labels(name: str) -> dict[str, str]:
    """Every container of the project `shop`; the tier `db` on three; one ticket."""
    labels = {"project": "shop"} if name.startswith(("shop-", "late-")) else {}
    if name in ("db-main", "shop-10", "shop-20"):
        labels["tier"] = "db"
    if name == "db-main":
        labels["ticket"] = "OPS-1"
    return labels


class Story:
    """The trail's events, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.names = {cid: name for name, cid in LONG.items()}

    def add(self, kind: str, action: str, actor: str, name: str | None, **fields: Any) -> None:
        n = len(self.events) + 1
        self.events.append(
            Event(
                id=natural_id("actor-queries", n),
                time_ns=T0 + n * 1_000,
                source="docker",
                host="h1",
                type=kind,
                action=action,
                actor=Actor(id=actor, name=name, image=fields.pop("image", None)),
                attributes=fields.pop("attributes", {}),
            )
        )

    def container(self, action: str, cid: str, name: str, **attributes: Any) -> None:
        labels = _labels(name)
        both = {"labels": labels, **attributes} if labels else attributes
        self.add("container", action, cid, name, image="nginx:1", attributes=both)

    def connect(self, cid: str, action: str = "connect") -> None:
        attributes = {"container": cid, "name": "backend"}
        self.add("network", action, NETWORK, "backend", attributes=attributes)

    def image(self, action: str, iid: str, name: str) -> None:
        self.add("image", action, iid, name)


def _story_at(story: Story, step: int) -> None:
    """What happens at `step` besides the health checks."""
    if step == 0:
        for name, cid in LONG.items():
            story.container("create", cid, name)
        story.image("pull", NGINX_1, "nginx:1")
        story.image("pull", REDIS, "redis:7")
    shop, at = divmod(step - 50, 90)
    if 0 <= shop < SHOPS and at in (0, 1, 2, 80):
        cid, name = _id("shop", shop), f"shop-{shop}"
        if at == 2:
            story.connect(cid)
        else:
            story.container({0: "create", 1: "start", 80: "destroy"}[at], cid, name)
    events = {
        100: lambda: story.container("create", A, "old-a"),
        3000: lambda: story.connect(NET_ONLY),
        4000: lambda: story.image("tag", NGINX_1, "registry.internal/nginx:1"),
        5000: lambda: story.container("rename", A, "new-a", oldName="/old-a"),
        6000: lambda: story.container("rename", GHOST, "ghost-new", oldName="/ghost"),
        6001: lambda: story.connect(A, "disconnect"),
        7000: lambda: story.container("stop", A, "new-a"),
        7500: lambda: story.image("pull", NGINX_2, "nginx:1"),
        8000: lambda: story.container("create", B, "old-a"),
        9000: lambda: story.connect(NET_ONLY, "disconnect"),
        LATE: lambda: story.container("create", LATE_ONE, "late-1"),
        LATE + 1: lambda: story.connect(LATE_ONE),
        LATE + 2: lambda: story.connect(LONG["db-main"]),
        LATE + 3: lambda: story.container("rename", LONG["cache-main"], "cache-new"),
        LATE + 4: lambda: story.image("pull", LATE_IMAGE, "late/img:1"),
        LATE + 5: lambda: story.image("pull", NGINX_LATE, "nginx:1"),
        LATE + 6: lambda: story.container("start", B, "old-a"),
    }
    if step in events:
        events[step]()


def _events() -> tuple[list[Event], int]:
    """The events, and the seq of the last one before `LATE`."""
    story = Story()
    through = 0
    for step in range(STEPS):
        if step == LATE:
            through = len(story.events)
        _story_at(story, step)
        for name, cid in LONG.items():
            named = "cache-new" if name == "cache-main" and step > LATE + 3 else name
            story.container("exec_start: /healthcheck", cid, named)
    return story.events, through


def _alerts(events: list[Event]) -> list[Alert]:
    """An alert on each story event (a container's own name, or none of its own)."""
    alerts = []
    for seq, event in enumerate(events, 1):
        if event.action.startswith("exec") or event.type == "image":
            continue
        named = event.type == "container" and seq % 2 == 0
        alerts.append(
            Alert(
                id=natural_id("actor-queries-alert", seq),
                time_ns=event.time_ns,
                rule="test-rule",
                severity="high",
                event_seq=seq,
                event_id=event.id,
                host="h1",
                container=event.actor.name if named else None,
                summary="an alert",
            )
        )
    return alerts


EVENTS, THROUGH = _events()
ALERTS = _alerts(EVENTS)
CONTAINERS: list[str | tuple[str, ...]] = [
    "db-main",
    "cache-main",
    "cache-new",  # a rename past `THROUGH`: the name is then in no table
    "old-a",  # renamed to new-a, and the name of another container later
    "new-a",
    "ghost",  # known only from a rename's oldName
    "ghost-new",
    "late-1",  # first named past `THROUGH`
    "shop-5",
    "proxy",
    A[:12],
    NET_ONLY[:12],  # named only by network events
    NET_ONLY,
    LATE_ONE[:10],
    "a",  # a short prefix: every id starting with it
    "zzzz",
    ("old-a", "shop-7"),
    ("ghost", NET_ONLY[:6], "late-1"),
]
IMAGES: list[str | tuple[str, ...]] = [
    "nginx:1",  # three image ids bore it
    "registry.internal/nginx:1",  # a tag: a second name of one of them
    "redis:7",
    "late/img:1",
    "nginx*",
    "*",
    "no-such-image",
    ("nginx:1", "late/*"),
]
LABELS: list[dict[str, str | tuple[str, ...]]] = [
    {"tier": "db"},  # three actors: read actor by actor
    {"project": "shop"},  # more than FEW_ACTORS: at their events
    {"ticket": "OPS-1"},
    {"project": "shop", "tier": "db"},
    {"project": ("shop", "lab")},
    {"ticket": "none"},
]
SINCE, UNTIL = T0 + 4_000 * 1_000, T0 + 20_000 * 1_000


def _filters() -> list[EventFilter]:
    filters = [EventFilter(container=value) for value in CONTAINERS]
    filters += [EventFilter(image=value) for value in IMAGES]
    filters += [EventFilter(labels=value) for value in LABELS]
    filters += [
        EventFilter(container="new-a", type="container"),
        EventFilter(container="old-a", action=("connect", "disconnect")),
        EventFilter(container="db-main", since_ns=SINCE, until_ns=UNTIL),
        EventFilter(container="db-main", after_seq=THROUGH - 100),
        EventFilter(container="cache-new", since_ns=SINCE),
        EventFilter(image="nginx:1", type="image"),
        EventFilter(image="nginx*", after_seq=5_000),
        EventFilter(labels={"tier": "db"}, container="shop-10"),
        EventFilter(labels={"tier": "db"}, after_seq=20_000),
        EventFilter(labels={"project": "shop"}, image="nginx:1"),
    ]
    return filters


FILTERS = _filters()
LIMITS = [None, 1, 7, 10**6]
ALERT_FILTERS = [
    AlertFilter(container=value) for value in ("old-a", "new-a", "ghost", NET_ONLY[:8], "late-1")
] + [AlertFilter(container=("shop-3", "cache-new"), limit=5)]


@dataclasses.dataclass
class Built:
    path: Path  # the trail, with the actor index
    root: Path
    memory: MemoryTrail


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("actor-queries")
    (root / "new").mkdir()
    path = root / "new" / "t.db"
    with SQLiteTrail(path) as trail:
        for start in range(0, len(EVENTS), 2_000):  # commits: actors span several
            trail.append(EVENTS[start : start + 2_000])
        trail.append_alerts(ALERTS)
    memory = MemoryTrail()
    memory.append(EVENTS)
    memory.append_alerts(ALERTS)
    return Built(path, root, memory)


def _copy(built: Built, name: str) -> Path:
    """A copy of the trail (and its key) in a directory of its own."""
    directory = built.root / name
    directory.mkdir()
    for file in (built.path, built.path.with_suffix(".key")):
        shutil.copy(file, directory / file.name)
    return directory / built.path.name


def _behind(path: Path, through: int) -> None:
    """The trail as an older docktrail leaves it when it writes after the upgrade: the
    events past `through` in neither table, `actors_through_seq` at `through`."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for name in ACTOR_TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        for table in actors.TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.execute(
            "INSERT INTO actors SELECT actor_id, 'actor_id', seq >> 13, min(seq) FROM events "
            "WHERE seq <= ?1 GROUP BY 1, 3 UNION ALL SELECT container, 'container', seq >> 13, "
            "min(seq) FROM events WHERE seq <= ?1 AND container IS NOT NULL GROUP BY 1, 3",
            (through,),
        )
        conn.execute(
            "INSERT INTO actor_names SELECT DISTINCT actor_name, type, actor_id FROM events "
            "WHERE seq <= ? AND actor_name IS NOT NULL",
            (through,),
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(through), actors.THROUGH_KEY))
        for sql in ACTOR_TRIGGERS.values():
            conn.execute(sql)


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


@contextlib.contextmanager
def _read_only_view(directory: Path) -> Iterator[Path]:
    """`directory` bind-mounted read-only (as tests/test_read_only_storage.py does): a
    trail there is opened as it is, its missing index migrations left missing."""
    view = directory.with_name(directory.name + "-mounted")
    view.mkdir()
    if _mount("--bind", str(directory), str(view)).returncode != 0:
        missing_component("a read-only bind mount needs root and mount(8)")
    try:
        if _mount("-o", "remount,bind,ro", str(view)).returncode != 0:
            missing_component("remounting read-only failed")
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=False)


@pytest.fixture(scope="module")
def old(built: Built) -> Path:
    """A copy from before migration 0014."""
    path = trail_before_the_actor_index(_copy(built, "old"))
    # closed, the last connection: its write-ahead log is folded into the file, which
    # an immutable read (read-only storage) needs
    assert not path.with_name(path.name + "-wal").exists()
    return path


@pytest.fixture(scope="module")
def behind(built: Built) -> Path:
    """A copy an older docktrail wrote the events past `THROUGH` to."""
    path = _copy(built, "behind")
    _behind(path, THROUGH)
    return path


@pytest.fixture(scope="module", params=["new", "old", "behind"])
def layout(
    request: pytest.FixtureRequest, built: Built, old: Path, behind: Path
) -> Iterator[tuple[str, SQLiteTrail]]:
    """The trail opened as `docktrail query` opens it: the old copy read-only, as on
    read-only storage (else opening it would migrate it)."""
    with contextlib.ExitStack() as stack:
        path = {"new": built.path, "behind": behind}.get(request.param)
        if path is None:
            path = stack.enter_context(_read_only_view(old.parent)) / old.name
        trail = stack.enter_context(SQLiteTrail(path))
        yield request.param, trail


_expected: dict[str, list[int | None]] = {}


def _memory_seqs(memory: MemoryTrail, f: EventFilter | AlertFilter) -> list[int | None]:
    """What the in-memory filter selects (computed once for every layout)."""
    key = repr(f)
    if key not in _expected:
        found = memory.query(f) if isinstance(f, EventFilter) else memory.query_alerts(f)
        _expected[key] = [row.seq for row in found]
    return _expected[key]


def test_the_trail_spreads_over_several_buckets(built: Built) -> None:
    assert len(EVENTS) > 3 * BUCKET and len(EVENTS) // BUCKET > THROUGH // BUCKET
    with contextlib.closing(sqlite3.connect(built.path)) as conn:
        assert actors.through_seq(conn) == len(EVENTS)
        spread = conn.execute(
            "SELECT count(DISTINCT seq >> ?) FROM events WHERE actor_id = ?",
            (actors.BUCKET_BITS, LONG["db-main"]),
        ).fetchone()[0]
    assert spread == len(EVENTS) // BUCKET + 1


def test_the_layouts_are_what_they_say(layout: tuple[str, SQLiteTrail]) -> None:
    name, trail = layout
    conn = trail._connection()
    assert actors.present(conn) == (name != "old")
    plan = " ".join(trail.query_plan(EventFilter(container="db-main")))
    assert ("events_actor_id" in plan) == (name == "old"), plan
    if name == "behind":
        assert actors.through_seq(conn) == THROUGH
        late = conn.execute("SELECT count(*) FROM actors WHERE actor_id = ?", (LATE_ONE,))
        assert late.fetchone()[0] == 0


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("f", FILTERS, ids=repr)
def test_a_query_selects_what_the_filter_means(
    built: Built, layout: tuple[str, SQLiteTrail], f: EventFilter, limit: int | None
) -> None:
    _, trail = layout
    whole = _memory_seqs(built.memory, f)
    want = whole if limit is None else whole[:limit]
    assert [e.seq for e in trail.query(dataclasses.replace(f, limit=limit))] == want


@pytest.mark.parametrize("f", ALERT_FILTERS, ids=repr)
def test_an_alert_query_by_container_selects_what_the_filter_means(
    built: Built, layout: tuple[str, SQLiteTrail], f: AlertFilter
) -> None:
    _, trail = layout
    assert [a.seq for a in trail.query_alerts(f)] == _memory_seqs(built.memory, f)


def test_the_filters_find_something(built: Built) -> None:
    """The cases above are not vacuous: most select events, some past `THROUGH`."""
    found = [_memory_seqs(built.memory, f) for f in FILTERS]
    assert sum(1 for seqs in found if seqs) >= len(FILTERS) - 4
    assert sum(1 for seqs in found if seqs and (seqs[-1] or 0) > THROUGH) >= 10


@pytest.mark.parametrize("limit", [None, 5])
@pytest.mark.parametrize("f", [f for f in FILTERS if f.image != "*"], ids=repr)  # `*`: all
def test_no_query_scans_the_events(built: Built, f: EventFilter, limit: int | None) -> None:
    with SQLiteTrail(built.path) as trail:
        plan = trail.query_plan(dataclasses.replace(f, limit=limit))
    assert not [line for line in plan if line.startswith("SCAN events")], plan


TIMELINES = ["db-main", "cache-new", "old-a", "new-a", "late-1", "backend", "nginx:1", A[:4]]
TIMELINES += [A[:3], NET_ONLY, NET_ONLY[:8], LATE_ONE[:12], "zzzz", ""]


@pytest.mark.parametrize("value", TIMELINES)
def test_the_served_timeline_finds_what_it_found_before(
    built: Built, old: Path, behind: Path, value: str
) -> None:
    """`docktrail serve`'s canned `container_timeline` (static SQL: the trail's layout
    picks it) selects, through the actor index, what it selects on the old layout."""
    params = {"container": value}
    found = {}
    for path in (built.path, behind, old):
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            sql = serve.canned_queries(serve.has_actor_index(path))["container_timeline"]["sql"]
            found[path] = conn.execute(sql, params).fetchall()
            plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
            if path != old:
                assert not [line for line in plan if line.startswith("SCAN events")], plan
    assert found[built.path] == found[behind] == found[old]
    # a prefix shorter than 4 is no prefix; the container a network event names, whole
    assert bool(found[old]) == (value not in (A[:3], NET_ONLY[:8], "zzzz", ""))


def test_the_served_timeline_is_picked_by_layout(built: Built, old: Path) -> None:
    assert serve.has_actor_index(built.path) and not serve.has_actor_index(old)
    assert serve.canned_queries(False)["container_timeline"]["sql"] == serve.CONTAINER_TIMELINE
    indexed = serve.canned_queries(True)["container_timeline"]["sql"]
    assert indexed == serve.INDEXED_CONTAINER_TIMELINE and "actor_names" in indexed
