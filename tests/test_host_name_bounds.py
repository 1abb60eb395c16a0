"""An audit log's `node=` names are whatever the file says: the state keyed by them is
bounded (the coverage of captured files, the rules' recent builds), and what is
said about them stays short."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from listener.coverage import HOSTS_KEPT, SpanCoverage
from listener.model.event import Actor, Event, Who
from listener.rules.image import BUILD_HOSTS_KEPT, is_build_step, track_image

T0 = 1_700_000_000_000_000_000


def _event(host: str, type_: str, action: str, time_ns: int, image: str = "") -> Event:
    return Event(
        id=f"{host}-{type_}-{action}-{time_ns}",
        time_ns=time_ns,
        source="auditd" if type_ == "docker-cli" else "docker",
        host=host,
        type=type_,
        action=action,
        actor=Actor(id="c" * 64, image=image or None),
        who=Who(),
    )


def test_captured_files_coverage_keeps_a_bounded_set_of_hosts_and_a_short_note() -> None:
    span = SpanCoverage(default_host="h")
    for n in range(3 * HOSTS_KEPT):
        span.add(T0 + n, f"node-{n:05d}")
    assert len(span.hosts) == HOSTS_KEPT and span.more_hosts
    assert span.missing(_event("node-00007", "container", "create", T0 + 5)) is None
    note = span.missing(_event("node-02999", "container", "create", T0 + 5))
    assert note is not None and note.endswith("not node-02999")
    assert f"and {HOSTS_KEPT - 8} more (the first {HOSTS_KEPT} kept)" in note
    assert len(note) < 300


def test_the_rules_remember_the_latest_builds_of_a_bounded_number_of_hosts() -> None:
    ctx: Any = SimpleNamespace(state={})
    for n in range(3 * BUILD_HOSTS_KEPT):
        track_image(_event(f"node-{n}", "docker-cli", "build", T0 + n), ctx)
    track_image(_event("node-0", "docker-cli", "build", T0 + 10**9), ctx)  # built again
    assert len(ctx.state["builds"]) == BUILD_HOSTS_KEPT
    step = "sha256:" + "ab" * 32

    def in_build(host: str) -> bool:
        return is_build_step(_event(host, "container", "create", T0 + 2 * 10**9, step), ctx)

    assert in_build("node-0") and in_build(f"node-{3 * BUILD_HOSTS_KEPT - 1}")
    assert not in_build("node-1")  # among the least recent: forgotten
