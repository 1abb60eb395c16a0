"""The rules' fast paths give what the plain code gave, on ordinary and on odd input.

Each helper made faster (remembered verdicts, a fingerprint without a call per
value, an engine that skips calls that do nothing) is compared here with a
copy of the code it replaced: the same result, or the same error.
"""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config.models import RulesConfig, UntrustedImageRule
from listener.model.alert import alert_id
from listener.model.event import Actor, Event, Who, natural_id, time_ordered_id
from listener.rules import churn, container, image
from listener.rules.activity import CHURN_ACTIONS, activity_state
from listener.rules.base import ENGINE_SOCKETS, Finding, RuleContext, engine_sockets
from listener.rules.fingerprint import config_fingerprint
from listener.rules.registry import RULES, evaluate
from listener.rules.snapshot import encode

# -- the code replaced, as it was -------------------------------------------------------

_SKIPPED = frozenset({"origin", "argv_differences", "image_repo_digests", "image_references",
                      "image_intermediate", "socket_sources", "healthcheck"})  # fmt: skip
_SCALARS = frozenset({str, int, float, bool, type(None)})


def _previous_fingerprint(config: Mapping[str, Any]) -> str:
    canonical = {k: _previous_canonical(v) for k, v in config.items() if v and k not in _SKIPPED}
    body = orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:32]


def _previous_canonical(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, Mapping):
        return {str(k): _previous_canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_previous_canonical(v) for v in value]
        if len(items) < 2:
            return items
        return sorted(items, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
    return value


def _previous_socket_reason(
    mount: Mapping[str, Any], sockets: set[str], engines: set[str]
) -> str | None:
    if mount.get("type", "bind") != "bind":
        return None
    source = _previous_normal(str(mount.get("source") or ""))
    destination = _previous_normal(str(mount.get("destination") or ""))
    host_path = container._host_path
    if host_path(source) in engines:
        return "the Engine's socket"
    if posixpath.basename(source) in container.SOCKET_NAMES:
        return "a Docker or containerd socket"
    if source in sockets:
        return "a Unix socket"
    if source not in ("", "/") and any(
        s.startswith(host_path(source).rstrip("/") + "/") for s in engines
    ):
        return "a directory holding the Engine's socket"
    if posixpath.basename(destination) in container.SOCKET_NAMES:
        return "mounted where clients look for the Docker socket"
    return None


def _previous_normal(path: Any) -> str:
    return posixpath.normpath(path) if path else ""


def _previous_untrusted_reason(reference: Any, policy: UntrustedImageRule) -> str | None:
    if reference.startswith("sha256:") or not reference:
        return "referenced by image id: no registry to trust"
    normal = image.normalize_reference(reference)
    if policy.require_digest and "@sha256:" not in normal:
        return "not pinned by digest (require_digest)"
    if any(fnmatch.fnmatchcase(normal, pattern) for pattern in tuple(policy.trusted)):
        return None
    return "registry/repository not in the trusted list"


def outcome(call: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What `call(*args)` gives: its value, or its error's type and message."""
    try:
        return "value", call(*args)
    except Exception as exc:
        return type(exc).__name__, str(exc)


# -- the fingerprint ---------------------------------------------------------------------

ODD_CONFIGS: list[dict[str, Any]] = [
    {"mounts": ({"source": "/b"}, {"source": "/a"}), "cap_add": ("X", "A")},  # tuples
    {"labels": OrderedDict([("b", 1), ("a", [3, 1, 2])]), "user": 0},
    {"sysctls": {1: "one", "2": {"z": [], "y": None}}, "privileged": 1.5},
    {"devices": [[2, 1], [1, 2], "x", None, True], "origin": "argv", "healthcheck": "x"},
    {"mounts": [{"source": "/a", "opts": ["b", "a"]}, {"source": "/a", "opts": ["a"]}]},
    {"ports": [2**70, 1]},  # orjson cannot sort it: both raise
    {"user": "root", "memory_bytes": 2**70},  # nor write it
    {"weird": object()},
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    | st.lists(inner, max_size=3).map(tuple),
    max_leaves=20,
)  # fmt: skip


@pytest.mark.parametrize("config", ODD_CONFIGS)
def test_odd_configurations_fingerprint_as_before(config: dict[str, Any]) -> None:
    assert outcome(config_fingerprint, config) == outcome(_previous_fingerprint, config)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([*_SKIPPED, "mounts", "user", "cap_add", "x"]), json_values))
def test_any_configuration_fingerprints_as_before(config: dict[str, Any]) -> None:
    assert outcome(config_fingerprint, config) == outcome(_previous_fingerprint, config)


# -- socket mounts: verdicts remembered per path -----------------------------------------

SOURCES: list[Any] = [
    "/var/run/docker.sock", "/run/docker.sock", "/var/run", "/run", "/run/containerd",
    "/srv/app.sock", "/home/u/docker.sock", "/", "", "data", "/srv/../var/run/",
    "/var/run/docker.sock/", "/x" + "/y" * 700, 5, 0, None, ["a"], {"b": 1}, True,
]  # fmt: skip
DESTINATIONS: list[Any] = ["/var/run/docker.sock", "/data", "", None, 7, "/x/containerd.sock"]
ENGINES = [ENGINE_SOCKETS, engine_sockets("unix:///srv/docker/api.sock"), ()]


@pytest.mark.parametrize("engines", ENGINES, ids=["default", "docker.host", "none"])
def test_socket_mounts_are_judged_as_before(engines: tuple[str, ...]) -> None:
    previous_engines = {container._host_path(s) for s in engines}
    for sockets in (set(), {"/srv/app.sock"}):
        for source in SOURCES:
            for destination in DESTINATIONS:
                for kind in ("bind", "volume", None, ["bind"]):
                    mount: dict[str, Any] = {"source": source, "destination": destination}
                    if kind is not None:
                        mount["type"] = kind
                    expected = outcome(_previous_socket_reason, mount, sockets, previous_engines)
                    for _ in range(2):  # worked out, then remembered
                        paths = container._engine_paths(engines)
                        found = outcome(container._socket_reason, mount, sockets, paths)
                        assert found == expected, (mount, sockets, engines)


@pytest.mark.parametrize("path", [*SOURCES, "a/b/../c", "//x//y/", "x" * 2000, 2.5, b"/etc"])
def test_paths_are_normalised_as_before(path: Any) -> None:
    for _ in range(2):
        assert outcome(container._normal, path) == outcome(_previous_normal, path)


def test_the_engine_paths_of_a_context_that_is_not_a_tuple_are_worked_out() -> None:
    assert container._engine_paths(list(ENGINE_SOCKETS)) == container._engine_paths(ENGINE_SOCKETS)  # type: ignore[arg-type]


# -- image verdicts remembered per reference ---------------------------------------------

REFERENCES: list[Any] = [
    "nginx", "docker.io/library/nginx:1.25", "evil.example/miner:1", "localhost:5000/app",
    "registry.internal/a/b@sha256:" + "a" * 64, "sha256:" + "b" * 64, "", "busybox:latest",
    "quay.io/x/y" + "z" * 2000, 5, None, ["nginx"], True,
]  # fmt: skip
POLICIES = [
    UntrustedImageRule(),
    UntrustedImageRule(trusted=["registry.internal/*", "docker.io/library/*"]),
    UntrustedImageRule(trusted=["*"], require_digest=True),
    UntrustedImageRule(trusted=[]),
]


@pytest.mark.parametrize("policy", POLICIES, ids=["default", "internal", "digest", "nothing"])
def test_images_are_judged_as_before(policy: UntrustedImageRule) -> None:
    for reference in REFERENCES:
        expected = outcome(_previous_untrusted_reason, reference, policy)
        for _ in range(2):  # judged, then remembered
            assert outcome(image.untrusted_reason, reference, policy) == expected


def test_a_verdict_follows_a_changed_policy() -> None:
    policy = UntrustedImageRule(trusted=["docker.io/library/*"])
    assert image.untrusted_reason("evil.example/miner:1", policy) is not None
    policy.trusted = ["evil.example/*"]
    assert image.untrusted_reason("evil.example/miner:1", policy) is None
    policy.require_digest = True
    assert image.untrusted_reason("evil.example/miner:1", policy) is not None


# -- the engine's calls ------------------------------------------------------------------


def _event(type_: str, action: str) -> Event:
    image_id = "sha256:" + "c" * 64
    return Event(
        id=natural_id("fast", type_, action),
        time_ns=1_795_346_502_000_000_000,
        source="docker",
        host="h1",
        type=type_,
        action=action,
        actor=Actor(id=image_id, name="evil.example/miner:1"),
        attributes={"image_id": image_id, "repo_tags": ["evil.example/miner:1"]},
        who=Who(login="alice", method="auditd-cli"),
    )


TYPES = [
    "image", "docker-cli", "network", "volume", "daemon-file", "plugin", "daemon", "host",
    "audit-rules", "api-call", "secret", "config", "node", "service", "exec-command",
]  # fmt: skip


@pytest.mark.parametrize("type_", TYPES)
@pytest.mark.parametrize("action", ["pull", "build", "tag", "load", "delete", "create"])
def test_the_engine_skips_image_tracking_only_where_it_learns_nothing(
    type_: str, action: str
) -> None:
    """If `track_image` learns from another type one day, TRACKED_TYPES must say so."""
    ctx = RuleContext()
    image.track_image(_event(type_, action), ctx)
    learned = bool(ctx.state.get("image-refs") or ctx.state.get("builds"))
    if type_ not in image.TRACKED_TYPES:
        assert not learned, f"track_image learns from {type_} {action}: add it to TRACKED_TYPES"
    through_engine = RuleContext()
    evaluate(_event(type_, action), through_engine)
    assert through_engine.state.get("image-refs") == ctx.state.get("image-refs")
    assert through_engine.state.get("builds") == ctx.state.get("builds")


def test_every_rule_still_fires_through_the_engine() -> None:
    """The dispatch and the skipped calls leave each rule reachable for what it judges."""
    rules = RulesConfig.model_validate({"undeclared-deployment": {"enabled": True}})
    ctx = RuleContext(rules=rules, attribution_available=True)
    for rule in RULES:
        for type_ in sorted(rule.meta.types) or TYPES:
            for action in sorted(rule.meta.actions or {"create", "start"}):
                reached: list[str] = []
                original = rule.check

                def spy(
                    event: Event, c: RuleContext, original: Any = original, seen: Any = reached
                ) -> Any:
                    seen.append(event.type)
                    return original(event, c)

                object.__setattr__(rule, "check", spy)
                try:
                    evaluate(_event(type_, action), ctx)
                finally:
                    object.__setattr__(rule, "check", original)
                ctx.dispatch.clear()  # the spy must not stay in the table
                assert reached == [type_], (rule.meta.id, type_, action)


def test_an_alert_id_is_the_time_ordered_id_of_its_parts() -> None:
    for n, rule in enumerate(["privileged-container", "exec-in-container", "x" * 300]):
        event = _event("container", "create").model_copy(update={"id": f"{n}\x1f{rule}", "seq": 1})
        for index in (0, 1, 12):
            expected = time_ordered_id(event.time_ns, "alert", event.id, rule, index)
            assert alert_id(event, rule, index) == expected


# -- container churn: the windows counted in one pass -----------------------------------


def _previous_check_churn(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    """`check_churn` as it was, with its counting generator."""
    if event.type != "container" or event.action not in CHURN_ACTIONS:
        return
    settings = ctx.rules.container_churn
    window_ns = settings.window_secs * 1_000_000_000
    state = activity_state(ctx)
    crossed = []
    keys = churn._churn_keys(event)
    for key, count, learned in _previous_count_churn(event, keys, settings, state):
        threshold = max(settings.threshold, learned or 0)
        quiet = state.quiet_until.get(key, 0)
        if count > threshold and event.time_ns >= quiet:
            crossed.append((key, count, threshold, learned))
    if not crossed:
        return
    for key in keys:
        state.quiet_until[key] = event.time_ns + window_ns
    scope, count, threshold, learned = crossed[0]
    yield Finding(
        "container-churn",
        "medium",
        f"{count} {threshold} {learned} {churn._scope_text(scope)}",
        {"crossed": crossed, "history": churn._history_windows(state, scope)},
    )


def _previous_count_churn(
    event: Event, keys: list[tuple[str, ...]], settings: Any, state: Any
) -> Iterator[tuple[tuple[str, ...], int, int | None]]:
    window_ns = settings.window_secs * 1_000_000_000
    learn = settings.baseline == "learn"
    windows = state.windows
    for key in keys:
        times = windows.get(key)
        if times is None:
            times = windows[key] = deque()
        times.append(event.time_ns)
        while times and times[0] <= event.time_ns - window_ns:
            times.popleft()
        learned = None
        if learn:
            baseline = churn._baseline(state, key)
            learned = baseline.learned
            baseline.observe(event.time_ns // window_ns, len(times), settings)
        yield key, len(times), learned
    if len(windows) >= state.sweep_scopes_at:
        churn._forget_quiet_scopes(state, event.time_ns, window_ns)


def _churn_events(count: int, seed: int) -> Iterator[Event]:
    """Bursts and lulls on a few hosts, images (many one-off tags) and logins."""
    import random

    draw = random.Random(seed)
    time_ns = 1_795_346_502_000_000_000
    for n in range(count):
        time_ns += draw.choice([1, 10, 200, 900, 5_000, 70_000]) * 1_000_000
        image_name = draw.choice(["nginx:1", "redis:7", f"ci/app:{n}", None])
        yield Event(
            id=natural_id("churn", seed, n),
            time_ns=time_ns,
            source="docker",
            host=draw.choice(["h1", "h2"]),
            type="container",
            action=draw.choice(["create", "destroy", "start"]),
            actor=Actor(id=f"c{n}", name=f"c{n}", image=image_name),
            who=Who(login=draw.choice(["alice", "bob", None]), method="auditd-cli"),
        )


@pytest.mark.parametrize(
    "settings",
    [
        {"threshold": 3, "window_secs": 2, "baseline": "learn", "baseline_min_windows": 2},
        {"threshold": 2, "window_secs": 1, "baseline": "fixed"},
        {"threshold": 5, "window_secs": 60, "baseline_min_windows": 1, "baseline_factor": 1},
    ],
)
def test_churn_crosses_and_learns_as_before(settings: dict[str, Any]) -> None:
    rules = RulesConfig.model_validate({"container-churn": settings})
    now, then = RuleContext(rules=rules), RuleContext(rules=rules)
    for ctx in (now, then):  # one-off tags' scopes are swept soon, as well as counted
        activity_state(ctx).sweep_scopes_at = 64
    for event in _churn_events(12_000, seed=len(str(settings))):
        found = [(f.summary, f.details["scopes"]) for f in churn.check_churn(event, now)]
        before = [(f.summary, f.details["crossed"]) for f in _previous_check_churn(event, then)]
        assert len(found) == len(before)
        if found:
            (summary, scopes), (old_summary, crossed) = found[0], before[0]
            assert scopes == {churn._scope_text(key): n for key, n, _, _ in crossed}
            assert summary.split(" ")[0] == old_summary.split(" ")[0]
    assert encode(now.state) == encode(then.state)
    assert activity_state(now).sweep_scopes_at != 64  # swept
    learned = [b.learned for b in activity_state(now).baselines.values() if b.learned]
    if settings.get("baseline", "learn") == "learn":
        assert learned  # the learned thresholds took part


def test_a_row_read_back_is_the_validated_event_with_its_chain() -> None:
    from sinks.sqlite.queries import event_from_row

    body = _event("container", "create").model_dump_json()
    read = event_from_row(7, body, "a" * 64, "b" * 64)
    validated = Event.model_validate_json(body)
    validated.prev_hash, validated.hash = "a" * 64, "b" * 64
    assert read == validated
    assert read.model_fields_set == validated.model_fields_set
    assert list(read.__dict__) == list(validated.__dict__)
