"""Table-driven tests of every rule: fires, does not fire, suppressed with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from config.models import RulesConfig
from listener.model.containerconfig import ContainerConfig, Mount
from listener.model.event import Actor, Event, Who, natural_id
from listener.rules.base import RuleContext
from listener.rules.engine import RuleEngine
from listener.rules.fingerprint import config_fingerprint
from listener.rules.fleet import FLEET_RULES_BY_ID
from listener.rules.registry import RULES, RULES_BY_ID, evaluate

SAFE = {
    "user": "1000",
    "read_only_rootfs": True,
    "memory_bytes": 64 << 20,
    "pids_limit": 100,
}
_counter = iter(range(1, 10**9))
NS = 1_000_000_000


def event(
    action: str = "create",
    *,
    type_: str = "container",
    name: str = "c1",
    image: str | None = "docker.io/library/nginx:1.25",
    login: str | None = "alice",
    time_ns: int = 1_795_346_502_000_000_000,
    config: dict[str, Any] | None = None,
    attributes: dict[str, Any] | None = None,
    source: str = "docker",
    actor_id: str | None = None,
) -> Event:
    n = next(_counter)
    return Event(
        id=natural_id("test", n),
        time_ns=time_ns,
        source=source,  # type: ignore[arg-type]
        host="h1",
        type=type_,
        action=action,
        actor=Actor(id=actor_id or f"{name}-id", name=name, image=image),
        attributes=attributes or {},
        who=Who(login=login, method="auditd-cli" if login else "unknown"),
        config=config or {},
    )


def container(origin: str = "inspect", **settings: Any) -> Event:
    config = ContainerConfig(origin=origin, **{**SAFE, **settings})  # type: ignore[arg-type]
    return event(config=config.as_event_config())


def rules_fired(ev: Event, ctx: RuleContext | None = None) -> dict[str, str]:
    found = evaluate(ev, ctx or RuleContext())
    return {f.rule: f.severity for f in found if f.suppressed_by is None}


CONFIG_CASES = [
    ("privileged-container", {"privileged": True}, "critical"),
    (
        "docker-socket-mount",
        {"mounts": [Mount(source="/var/run/docker.sock", destination="/var/run/docker.sock")]},
        "critical",
    ),
    (
        "docker-socket-mount",
        {"mounts": [Mount(source="/run/containerd/containerd.sock", destination="/c.sock")]},
        "critical",
    ),
    ("sensitive-mount", {"mounts": [Mount(source="/etc", destination="/host-etc")]}, "high"),
    ("sensitive-mount", {"mounts": [Mount(source="/", destination="/host")]}, "high"),
    (
        "sensitive-mount",
        {"mounts": [Mount(source="/var/lib/docker/volumes", destination="/v")]},
        "high",
    ),
    ("dangerous-capability", {"cap_add": ["SYS_ADMIN"]}, "high"),
    ("dangerous-capability", {"cap_add": ["CAP_NET_ADMIN"]}, "high"),
    ("host-namespace", {"network_mode": "host"}, "high"),
    ("host-namespace", {"pid_mode": "host"}, "high"),
    ("security-profile-disabled", {"seccomp": "unconfined"}, "high"),
    ("security-profile-disabled", {"apparmor": "unconfined"}, "high"),
    ("security-profile-disabled", {"selinux_disabled": True}, "high"),
    ("no-resource-limits", {"memory_bytes": None}, "low"),
    ("no-resource-limits", {"pids_limit": None}, "low"),
    ("writable-rootfs", {"read_only_rootfs": False}, "low"),
    ("runs-as-root", {"user": None}, "low"),
    ("runs-as-root", {"user": "0:0"}, "low"),
    ("runs-as-root", {"user": "root"}, "low"),
]


@pytest.mark.parametrize("origin", ["inspect", "argv"])
@pytest.mark.parametrize(("rule", "settings", "severity"), CONFIG_CASES)
def test_config_rule_fires(origin: str, rule: str, settings: dict[str, Any], severity: str) -> None:
    assert rules_fired(container(origin, **settings)) == {rule: severity}


def test_label_disable_the_engine_adds_is_not_a_finding() -> None:
    implied = {"privileged": True, "security_opt": ["label=disable"], "selinux_disabled": True}
    assert "security-profile-disabled" not in rules_fired(container(**implied))
    host_pid = {"pid_mode": "host", "selinux_disabled": True}
    assert "security-profile-disabled" not in rules_fired(container(**host_pid))


def test_hardened_container_fires_nothing() -> None:
    assert rules_fired(container()) == {}
    harmless = [
        Mount(source="/srv/app", destination="/app"),
        Mount(type="volume", source="data", destination="/data"),
    ]
    assert rules_fired(container(mounts=harmless, cap_add=["CHOWN"], network_mode="bridge")) == {}


def test_config_rules_ignore_other_actions() -> None:
    ev = container(privileged=True)
    started = ev.model_copy(update={"action": "start"})
    assert rules_fired(started) == {}


def test_exception_suppresses_with_reason_and_keeps_the_finding() -> None:
    rules = RulesConfig.model_validate(
        {
            "privileged-container": {
                "exceptions": [{"image": "registry.internal/tools/*", "reason": "node exporter"}]
            }
        }
    )
    ctx = RuleContext(rules=rules)
    ev = container(privileged=True).model_copy(
        update={"actor": Actor(id="x", name="exp", image="registry.internal/tools/exporter:1")}
    )
    (found,) = [f for f in evaluate(ev, ctx) if f.rule == "privileged-container"]
    assert found.suppressed_by == "node exporter"
    other = container(privileged=True)
    assert evaluate(other, ctx)[0].suppressed_by is None


@pytest.mark.parametrize(
    ("exception", "suppressed"),
    [
        ({"container": "c*", "reason": "r"}, True),
        ({"container": "other", "reason": "r"}, False),
        ({"user": "alice", "reason": "r"}, True),
        ({"user": "bob", "reason": "r"}, False),
        ({"label": "team=infra", "reason": "r"}, True),
        ({"label": "team=web", "reason": "r"}, False),
    ],
)
def test_exceptions_by_container_user_label(exception: dict[str, str], suppressed: bool) -> None:
    rules = RulesConfig.model_validate({"host-namespace": {"exceptions": [exception]}})
    ev = container(network_mode="host")
    ev.attributes["labels"] = {"team": "infra"}
    (found,) = evaluate(ev, RuleContext(rules=rules))
    assert (found.suppressed_by == "r") is suppressed


def test_disabled_rule_and_severity_override() -> None:
    rules = RulesConfig.model_validate(
        {"privileged-container": {"enabled": False}, "host-namespace": {"severity": "critical"}}
    )
    ev = container(privileged=True, network_mode="host")
    assert rules_fired(ev, RuleContext(rules=rules)) == {"host-namespace": "critical"}


@pytest.mark.parametrize(
    ("kind", "action", "name", "image", "fires"),
    [
        ("image", "tag", "docker.io/randomuser/cryptominer:latest", None, True),
        ("image", "pull", "randomuser/cryptominer", None, True),
        ("image", "pull", "nginx:1.25", None, False),  # docker.io/library/* is trusted
        ("image", "import", "sha256:7d1f59067bf3", None, False),  # the tag names it
        ("image", "tag", "registry.internal/web/nginx:1.25", None, False),
        ("container", "create", "miner", "docker.io/randomuser/cryptominer:latest", True),
        ("container", "create", "web", "registry.internal/web/nginx:1.25", False),
        ("container", "start", "miner", "docker.io/randomuser/cryptominer:latest", False),
    ],
)
def test_untrusted_image(kind: str, action: str, name: str, image: str | None, fires: bool) -> None:
    rules = RulesConfig.model_validate(
        {"untrusted-image": {"trusted": ["docker.io/library/*", "registry.internal/*"]}}
    )
    ev = event(action, type_=kind, name=name, image=image, config=SAFE if kind != "image" else {})
    found = {f.rule for f in evaluate(ev, RuleContext(rules=rules))}
    assert ("untrusted-image" in found) is fires


def test_require_digest() -> None:
    rules = RulesConfig.model_validate(
        {"untrusted-image": {"trusted": ["docker.io/library/*"], "require_digest": True}}
    )
    ctx = RuleContext(rules=rules)
    pinned = event("pull", type_="image", name="nginx@sha256:" + "a" * 64, image=None)
    loose = event("pull", type_="image", name="nginx:1.25", image=None)
    assert not evaluate(pinned, ctx)
    (found,) = evaluate(loose, ctx)
    assert "digest" in found.details["reason"]


def _exec(command: str, config: dict[str, Any] | None = None, name: str = "web") -> Event:
    return event(
        "exec_start", name=name, attributes={"action_detail": command}, config=config or {}
    )


def test_exec_severity_rises_for_root_shell_and_privileged() -> None:
    ctx = RuleContext()
    evaluate(
        container(user="1000").model_copy(update={"actor": Actor(id="web-id", name="web")}), ctx
    )
    assert rules_fired(_exec("ls -l"), ctx) == {"exec-in-container": "medium"}
    assert rules_fired(_exec("sh"), ctx) == {"exec-in-container": "high"}
    assert rules_fired(_exec("sh -c id"), ctx) == {"exec-in-container": "medium"}
    assert rules_fired(_exec("ls", {"user": "0"}), ctx) == {"exec-in-container": "high"}
    assert rules_fired(_exec("ls", {"privileged": True}), ctx) == {"exec-in-container": "high"}
    unknown = _exec("ls", name="never-seen")
    found = evaluate(unknown, RuleContext())
    assert found[0].severity == "high" and "as root" in found[0].details["risks"]


def test_churn_fires_once_per_window_per_burst() -> None:
    ctx = RuleContext(rules=RulesConfig.model_validate({"container-churn": {"threshold": 20}}))
    start = 1_795_346_500_000_000_000
    fired = []
    for i in range(30):
        for j, action in enumerate(("create", "destroy")):
            t = start + (2 * i + j) * 100_000_000  # 60 changes in 6 s
            ev = event(action, name=f"churn-{i}", login="bob", time_ns=t, config={})
            fired += [f for f in evaluate(ev, ctx) if f.rule == "container-churn"]
    assert len(fired) == 1
    assert fired[0].details["scopes"]["user h1/bob"] == 21
    later = event("create", name="x", login="bob", time_ns=start + 120 * 10**9)
    assert not [f for f in evaluate(later, ctx) if f.rule == "container-churn"]


def test_churn_below_threshold_is_quiet() -> None:
    ctx = RuleContext()
    for i in range(20):
        ev = event("create", name=f"c{i}", time_ns=1_795_346_500_000_000_000 + i * 10**9)
        assert not [f for f in evaluate(ev, ctx) if f.rule == "container-churn"]


def test_sprawl_fires_when_stopped_exceed_running_by_margin() -> None:
    ctx = RuleContext(rules=RulesConfig.model_validate({"container-sprawl": {"margin": 2}}))
    fired = []
    for i in range(5):
        for action in ("create", "start", "die"):
            ev = event(
                action, name=f"s{i}", actor_id=f"s{i}", config=SAFE if action == "create" else {}
            )
            fired += [f for f in evaluate(ev, ctx) if f.rule == "container-sprawl"]
    assert len(fired) == 1 and fired[0].details == {"stopped": 3, "running": 0, "margin": 2}


def _observed(name: str, change: str, state: str) -> Event:
    attributes = {"change": change, "state": state, "reason": "reconnect"}
    return event("observed", name=name, actor_id=name, source="docktrail", attributes=attributes)


def _stop_cycle(name: str, ctx: RuleContext) -> list[str]:
    fired = []
    for action in ("create", "start", "die"):
        ev = event(action, name=name, actor_id=name, config=SAFE if action == "create" else {})
        fired += [f.rule for f in evaluate(ev, ctx)]
    return fired


def test_sprawl_forgets_containers_a_reconciliation_found_gone() -> None:
    ctx = RuleContext(rules=RulesConfig.model_validate({"container-sprawl": {"margin": 2}}))
    assert "container-sprawl" not in _stop_cycle("a", ctx) + _stop_cycle("b", ctx)
    for name in ("a", "b"):  # removed while nobody listened
        evaluate(_observed(name, "disappeared", "gone"), ctx)
    fired = _stop_cycle("c", ctx) + _stop_cycle("d", ctx)
    assert "container-sprawl" not in fired  # 2 stopped, not 4
    state = ctx.state["activity"]
    assert sorted(state.containers) == ["c", "d"] and state.states["stopped"] == 2


def test_activity_follows_states_a_reconciliation_observed() -> None:
    ctx = RuleContext(rules=RulesConfig.model_validate({}))
    evaluate(event("create", name="w", actor_id="w", config=SAFE), ctx)
    evaluate(_observed("w", "started", "running"), ctx)
    evaluate(_observed("new", "appeared", "exited"), ctx)  # inspect failed: no config
    state = ctx.state["activity"]
    assert state.containers["w"].state == "running" and state.containers["new"].state == "stopped"
    evaluate(_observed("w", "stopped", "exited"), ctx)
    assert +state.states == {"stopped": 2}


def _unattributed_start(observed: Event | None) -> list[str]:
    ctx = RuleContext(attribution_available=True)
    t = 1_795_346_502_000_000_000
    for action, when in (("create", t), ("start", t + NS)):
        evaluate(event(action, name="w", actor_id="w", time_ns=when), ctx)
    if observed is not None:  # stopped while nobody listened, found by the next start
        evaluate(observed, ctx)
    later = event("start", name="w", actor_id="w", login=None, time_ns=t + 600 * NS)
    return [f.rule for f in evaluate(later, ctx)]


def test_a_start_after_a_reconciliation_found_the_container_stopped_is_judged() -> None:
    assert "unattributed-change" not in _unattributed_start(None)  # daemon restoring it
    stopped = _observed("w", "stopped", "exited")
    assert "unattributed-change" in _unattributed_start(stopped)
    forged = event("observed", name="w", actor_id="w", attributes=stopped.attributes)
    assert "unattributed-change" not in _unattributed_start(forged)  # only docktrail's own


def _daemon_file(action: str, login: str | None, time_ns: int) -> Event:
    return event(
        action,
        type_="daemon-file",
        name="/etc/docker/daemon.json",
        image=None,
        source="auditd",
        login=login,
        time_ns=time_ns,
    )


def test_daemon_config_change_on_writes_only() -> None:
    t = 1_795_346_512_000_000_000
    assert rules_fired(_daemon_file("write", "alice", t)) == {"daemon-config-change": "high"}
    assert rules_fired(_daemon_file("read", "alice", t)) == {}
    assert rules_fired(_daemon_file("exec", None, t)) == {}


def test_daemon_config_follow_up_by_same_or_no_login_is_info() -> None:
    ctx = RuleContext()
    t = 1_795_346_512_000_000_000
    assert rules_fired(_daemon_file("create", "alice", t), ctx) == {"daemon-config-change": "high"}
    assert rules_fired(_daemon_file("delete", None, t + 10**7), ctx) == {
        "daemon-config-change": "info"
    }
    assert rules_fired(_daemon_file("write", "bob", t + 2 * 10**7), ctx) == {
        "daemon-config-change": "high"
    }
    later = _daemon_file("write", "bob", t + 60 * 10**9)
    assert rules_fired(later, ctx) == {"daemon-config-change": "high"}


def test_unattributed_change_only_when_attribution_is_available() -> None:
    ev = container().model_copy(update={"who": Who()})
    assert "unattributed-change" not in rules_fired(ev, RuleContext())
    ctx = RuleContext(attribution_available=True)
    assert rules_fired(ev, ctx) == {"unattributed-change": "medium"}
    known = container()
    assert "unattributed-change" not in rules_fired(known, RuleContext(attribution_available=True))


def test_every_rule_id_is_registered_once_with_metadata() -> None:
    ids = [rule.meta.id for rule in RULES]
    assert len(ids) == len(set(ids)) == 29
    for rule in RULES:
        assert rule.meta.cis and rule.meta.description
        assert rule.settings(RulesConfig()) is not None
    assert set(RULES_BY_ID) | set(FLEET_RULES_BY_ID) == {
        name for name, field in RulesConfig.model_fields.items() for name in [field.alias or name]
    }


# ---------------------------------------------------------------------- judged once


def _stored(ev: Event, action: str, **update: Any) -> Event:
    """`ev` as another stored event of the same container (`observed`, `posture` …)."""
    n = next(_counter)
    return ev.model_copy(
        update={"id": natural_id("test", n), "seq": n, "action": action, **update}, deep=True
    )


def _alerted(engine: RuleEngine, ev: Event) -> set[str]:
    return {alert.rule for alert in engine.alerts_for_event(ev)}


def test_a_configuration_is_judged_once_per_container() -> None:
    engine = RuleEngine(RulesConfig())
    created = _stored(container(privileged=True, user=None), "create")
    assert _alerted(engine, created) == {"privileged-container", "runs-as-root"}
    # Seen again by a reconciliation or a sweep: same container, same configuration.
    for action in ("observed", "posture"):
        assert _alerted(engine, _stored(created, action, source="docktrail")) == set()
    # The CLI's view of it (origin, argv_differences) is the same configuration.
    same = {**created.config, "argv_differences": {"user": "0"}, "origin": "argv"}
    assert _alerted(engine, _stored(created, "posture", config=same)) == set()
    # Changed (docker update): judged again, every finding of the new configuration.
    updated = {**created.config, "memory_bytes": 32 << 20}
    assert _alerted(engine, _stored(created, "posture", config=updated)) == {
        "privileged-container", "runs-as-root"
    }  # fmt: skip
    assert _alerted(engine, _stored(created, "observed", config=updated)) == set()
    # Another container with the same configuration is another judgement.
    other = _stored(created, "posture", actor=Actor(id="other-id", name="other"))
    assert _alerted(engine, other) == {"privileged-container", "runs-as-root"}


def test_a_restarted_engine_remembers_what_was_judged() -> None:
    created = _stored(container(network_mode="host"), "create")
    engine = RuleEngine(RulesConfig())
    engine.prime([created], recent_from_ns=created.time_ns + 1)  # older than the recent window
    assert _alerted(engine, _stored(created, "posture", source="docktrail")) == set()
    fresh = RuleEngine(RulesConfig())
    assert _alerted(fresh, _stored(created, "posture")) == {"host-namespace"}


def test_config_fingerprint_is_canonical() -> None:
    mounts = [Mount(source="/srv/a", destination="/a"), Mount(source="/srv/b", destination="/b")]
    config = ContainerConfig(origin="inspect", mounts=mounts, cap_add=["CHOWN", "KILL"])
    base = config_fingerprint(config.as_event_config())
    shuffled = config.model_copy(update={"mounts": mounts[::-1], "cap_add": ["KILL", "CHOWN"]})
    assert config_fingerprint(shuffled.as_event_config()) == base
    digests = config.model_copy(update={"image_repo_digests": ["app@sha256:" + "1" * 64]})
    assert config_fingerprint(digests.as_event_config()) == base
    # A setting added to the model later, unset, is the configuration of an older trail.
    assert config_fingerprint({**config.as_event_config(), "new_setting": None}) == base
    limited = config.model_copy(update={"pids_limit": 100})
    assert config_fingerprint(limited.as_event_config()) != base


def test_posture_events_are_for_the_config_rules_only() -> None:
    """Not a create or destroy (churn), a start or stop (sprawl), a change (unattributed)."""
    ctx = RuleContext(
        rules=RulesConfig.model_validate(
            {"container-churn": {"threshold": 1}, "container-sprawl": {"margin": 0}}
        ),
        attribution_available=True,
    )
    for i in range(3):
        ev = container(privileged=True).model_copy(
            update={"action": "posture", "source": "docktrail", "who": Who(),
                    "actor": Actor(id=f"p{i}", name=f"p{i}", image="evil/miner:1")}
        )  # fmt: skip
        assert rules_fired(ev, ctx) == {"privileged-container": "critical"}


def _fingerprint_as_first_written(config: dict[str, Any]) -> str:
    """The fingerprint's first implementation: the trail stores fingerprints
    (`previous_config_fingerprint`, the rules' saved state), so a faster one must
    give the same digests."""
    import hashlib

    import orjson

    skipped = {"origin", "argv_differences", "image_repo_digests", "image_references",
               "image_intermediate", "socket_sources", "healthcheck"}  # fmt: skip

    def canonical(value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k): canonical(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [canonical(v) for v in value]
            return sorted(items, key=lambda v: orjson.dumps(v, option=orjson.OPT_SORT_KEYS))
        return value

    kept = {k: canonical(v) for k, v in config.items()
            if k not in skipped and v not in (None, False, "", [], {})}  # fmt: skip
    return hashlib.sha256(orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@pytest.mark.parametrize(
    "config",
    [
        {
            "privileged": True,
            "cap_add": ["SYS_ADMIN", "NET_ADMIN", "ALL"],
            "user": "",
            "memory_bytes": 0,
            "pids_limit": None,
            "security_opt": [],
            "sysctls": {},
            "origin": "inspect",
            "healthcheck": "curl -f localhost",
        },
        {
            "mounts": [
                {"source": "/var/run/docker.sock", "destination": "/s", "mode": "rw"},
                {"source": "/etc", "destination": "/h/etc", "read_only": True},
            ],
            "devices": ["/dev/kmsg"],
            "env_names": ["B", "A"],
            "read_only_rootfs": False,
            "network_mode": "host",
            "cpu_shares": 0.0,
            "labels": {"b": ["y", "x"], "a": 1},
        },
        {"mounts": [{"source": "/data", "destination": "/data"}], "cap_add": ["NET_RAW"]},
        {},
    ],
)
def test_config_fingerprints_stay_what_the_trail_already_stores(config: dict[str, Any]) -> None:
    assert config_fingerprint(config) == _fingerprint_as_first_written(config)


def test_a_config_fingerprint_is_pinned() -> None:
    config = ContainerConfig(
        origin="inspect",
        privileged=True,
        cap_add=["SYS_ADMIN"],
        mounts=[Mount(source="/etc", destination="/etc", mode="ro", read_only=True)],
    ).as_event_config()
    assert config_fingerprint(config) == "00a2119d71a1a648d48c2a5c7707cb50"


def test_untrusted_image_is_judged_on_creates_and_image_arrivals_only() -> None:
    from listener.model.catalogue import UNTRUSTED
    from listener.rules.image import IMAGE_ACTIONS

    assert UNTRUSTED.actions == IMAGE_ACTIONS | {"create"}
    untrusted = "evil.example/miner:1"
    ctx = RuleContext()
    assert "untrusted-image" in rules_fired(event("create", image=untrusted), ctx)
    assert "untrusted-image" not in rules_fired(event("start", image=untrusted), ctx)


def test_the_dispatch_table_stays_bounded_on_a_file_of_made_up_actions() -> None:
    from listener.rules import registry

    ctx = RuleContext()
    for n in range(registry._DISPATCH_MAX + 500):
        evaluate(event(f"exec_create: sh -c 'echo {n}'"), ctx)
    assert len(ctx.dispatch) == registry._DISPATCH_MAX
    # past the bound the rules still apply, only unremembered
    assert "privileged-container" in rules_fired(container(privileged=True), ctx)


def test_an_alert_built_from_a_finding_is_what_validation_would_build() -> None:
    from listener.model.alert import Alert

    ev = container(privileged=True, user="0")
    ev.seq = 7
    alerts = RuleEngine(RulesConfig(), attribution_available=True).alerts_for_event(ev)
    assert len(alerts) >= 2
    for alert in alerts:
        validated = Alert.model_validate(alert.model_dump())
        assert alert == validated
        assert alert.model_fields_set == validated.model_fields_set - {"seq", "hash", "prev_hash"}
        assert list(alert.__dict__) == list(Alert.model_fields)  # every field, in order
        assert alert.model_dump_json() == validated.model_dump_json()


def test_churn_scopes_of_one_off_images_are_swept_and_churn_still_fires() -> None:
    from listener.rules import activity

    rules = RulesConfig.model_validate({"container-churn": {"threshold": 20}})
    ctx = RuleContext(rules=rules)
    window_ns = rules.container_churn.window_secs * 10**9
    start = 1_795_346_500_000_000_000
    for i in range(3 * activity.SCOPES_SWEPT_FROM):  # a CI host: a new tag per build
        t = start + i * window_ns // 4
        evaluate(event("create", name=f"ci-{i}", image=f"ci/app:build-{i}", time_ns=t), ctx)
    state = activity.activity_state(ctx)
    assert len(state.windows) < activity.SCOPES_SWEPT_FROM + 10  # not one per tag ever seen
    assert len(state.quiet_until) < activity.SCOPES_SWEPT_FROM

    burst = start + 3 * activity.SCOPES_SWEPT_FROM * window_ns
    fired = []
    for i in range(30):
        ev = event("create", name=f"b{i}", image="ci/app:burst", time_ns=burst + i * 10**8)
        fired += [f for f in evaluate(ev, ctx) if f.rule == "container-churn"]
    assert len(fired) == 1 and fired[0].details["scopes"]["image h1/ci/app:burst"] == 21


def test_fleet_images_gone_quiet_are_swept_and_the_fleet_rule_still_fires() -> None:
    from listener.rules import fleet

    rules = RulesConfig()
    ctx = RuleContext(rules=rules)
    check = FLEET_RULES_BY_ID["fleet-untrusted-image"].check
    window_ns = rules.fleet_untrusted_image.window_secs * 10**9
    start = 1_795_346_500_000_000_000

    def created(image: str, host: str, time_ns: int) -> list[Any]:
        ev = event("create", name=f"{host}-x", image=image, time_ns=time_ns)
        ev.attributes[fleet.FLEET_KEY] = {"publisher": host}
        return list(check(ev, ctx))

    for i in range(3 * fleet._IMAGES_SWEPT_FROM):  # one-off untrusted tags on one host
        created(f"evil.example/app:{i}", "h1", start + i * window_ns // 4)
    state = fleet.fleet_state(ctx)
    assert len(state.image_hosts) < fleet._IMAGES_SWEPT_FROM + 10

    later = start + 3 * fleet._IMAGES_SWEPT_FROM * window_ns
    hosts = [f"h{n}" for n in range(rules.fleet_untrusted_image.min_hosts)]
    found = [
        f for n, host in enumerate(hosts) for f in created("evil.example/x:1", host, later + n)
    ]
    assert len(found) == 1 and found[0].details["hosts"] == sorted(hosts)


def test_daemon_file_changes_past_the_window_are_forgotten() -> None:
    from listener.rules import activity

    ctx = RuleContext()
    start = 1_795_346_500_000_000_000
    for i in range(5 * 1_024):  # files created one by one under a watched directory
        ev = event("create", type_="daemon-file", name=f"/etc/docker/certs.d/{i}", image=None,
                   time_ns=start + i * activity.DAEMON_FILE_WINDOW_NS // 8)  # fmt: skip
        assert [f.rule for f in evaluate(ev, ctx)] == ["daemon-config-change"]
    assert len(ctx.state["daemon-files"]) <= 1_024 + 1
    again = event("write", type_="daemon-file", name="/etc/docker/certs.d/5119", image=None,
                  time_ns=start + 5119 * activity.DAEMON_FILE_WINDOW_NS // 8 + 1)  # fmt: skip
    (follow_up,) = evaluate(again, ctx)
    assert follow_up.severity == "info"  # the recent change is still remembered
