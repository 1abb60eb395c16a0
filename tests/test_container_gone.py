"""A container a start's reconciliation found gone (removed while nobody listened) is
removed for the timeline, the intents' live containers and the expiry watch, as a
destroy is; only docktrail's own `observed` events can say so."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

from listener.cli.intent import _live_containers
from listener.expiry import Deadline, ExpiryWatch
from listener.intents import IntentBook, IntentStage
from listener.model.event import Actor, Event, container_gone, natural_id
from listener.timeline import build_timelines, render_text
from sinks.sqlite import SQLiteTrail

T = 1_795_346_502_000_000_000
NS = 1_000_000_000
CID = "c1" + "0" * 62


def container_event(action: str, seq: int, source: str = "docker", **attributes: object) -> Event:
    return Event(
        id=natural_id("gone-test", action, seq, source),
        time_ns=T + seq * NS,
        source=source,
        host="h1",
        type="container",
        action=action,
        actor=Actor(id=CID, name="web", image="registry.internal/web:1"),
        attributes=dict(attributes),
    )


GONE = {"change": "disappeared", "state": "gone", "reason": "start"}
CREATED = container_event("create", 1, intent={"id": "intent-1"})
FOUND_GONE = container_event("observed", 3, "docktrail", **GONE)


def test_only_a_destroy_or_docktrails_own_finding_is_gone() -> None:
    assert container_gone(container_event("destroy", 1))
    assert container_gone(FOUND_GONE)
    assert not container_gone(container_event("observed", 2, **GONE))  # an Engine event
    assert not container_gone(container_event("observed", 2, "docktrail", change="stopped"))


def test_timeline_and_intent_containers_know_it_is_gone(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append([CREATED, container_event("start", 2)])
        assert _live_containers(trail, {"intent-1"}) == {"intent-1": ["web"]}
        text = render_text(build_timelines(trail, "web"), UTC)
        assert "(not removed)" in text
        trail.append([FOUND_GONE])
        assert _live_containers(trail, {"intent-1"}) == {}
        text = render_text(build_timelines(trail, "web"), UTC)
        assert "removed  before 2026-11-22T11:21:45" in text and "(found gone then)" in text


async def test_the_expiry_watch_forgets_a_container_found_gone() -> None:
    watch = ExpiryWatch("h1")
    watch.note(CID, Deadline(T + 3600 * NS, "label"))
    stage = IntentStage(trail=None, book=IntentBook(), expiry=watch)
    await stage.before_write([container_event("start", 2)])
    assert CID in watch.deadlines
    await stage.before_write([FOUND_GONE])
    assert CID not in watch.deadlines
