"""`Event.config` from `docker inspect`, and the small helpers of the live source."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from listener.model.event import Actor, Event
from listener.sources.docker_engine import describe_error, parse_engine_time_ns, since_arg
from listener.sources.docker_inspect import container_config_from_inspect
from listener.sources.docker_state import KnownState, load_known_state
from sinks.memory import MemoryTrail

# Trimmed from dockerd 20.10 (API 1.41): `docker create --privileged --cap-add SYS_ADMIN
# --cap-drop NET_RAW -v /var/run/docker.sock:/var/run/docker.sock -v myvol:/data:ro
# --tmpfs /run:rw,size=1m --mount type=bind,src=/tmp,dst=/hosttmp,bind-propagation=rshared
# --pid host --ipc host --uts host --security-opt seccomp=unconfined --security-opt
# apparmor=unconfined --security-opt label=disable --security-opt no-new-privileges
# --read-only --memory 64m --pids-limit 50 --cpus 0.5 --cpu-shares 512 --user 1000
# --device /dev/null:/dev/xnull:r --restart on-failure:3 -p 127.0.0.1:8080:80
# --sysctl net.ipv4.ip_forward=1 --group-add 10 --label a=b busybox sleep 5`
FULL: dict[str, Any] = {
    "Image": "sha256:b71c296662e35051d35f50a83ac5c642409874a6cb9387ab6f9764e1d0c96725",
    "AppArmorProfile": "unconfined",
    "HostConfig": {
        "NetworkMode": "default",
        "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
        "CapAdd": ["CAP_SYS_ADMIN"],
        "CapDrop": ["CAP_NET_RAW"],
        "CgroupnsMode": "host",
        "GroupAdd": ["10"],
        "IpcMode": "host",
        "PidMode": "host",
        "Privileged": True,
        "PublishAllPorts": False,
        "ReadonlyRootfs": True,
        "SecurityOpt": [
            "seccomp=unconfined",
            "apparmor=unconfined",
            "label=disable",
            "no-new-privileges",
        ],
        "Tmpfs": {"/run": "rw,size=1m"},
        "UTSMode": "host",
        "UsernsMode": "",
        "Sysctls": {"net.ipv4.ip_forward": "1"},
        "Runtime": "runc",
        "CpuShares": 512,
        "Memory": 67108864,
        "NanoCpus": 500000000,
        "CgroupParent": "",
        "Devices": [
            {"PathOnHost": "/dev/null", "PathInContainer": "/dev/xnull", "CgroupPermissions": "r"}
        ],
        "OomKillDisable": False,
        "PidsLimit": 50,
    },
    "Mounts": [
        {"Type": "bind", "Source": "/tmp", "Destination": "/hosttmp", "Mode": "", "RW": True,
         "Propagation": "rshared"},
        {"Type": "bind", "Source": "/var/run/docker.sock", "Destination": "/var/run/docker.sock",
         "Mode": "", "RW": True, "Propagation": "rprivate"},
        {"Type": "volume", "Name": "myvol", "Source": "/var/lib/docker/volumes/myvol/_data",
         "Destination": "/data", "Driver": "local", "Mode": "ro", "RW": False, "Propagation": ""},
    ],
    "Config": {
        "User": "1000",
        "Image": "registry.internal/base/busybox:1.36",
        "Labels": {"a": "b"},
    },
}  # fmt: skip


def test_full_inspect_maps_every_setting() -> None:
    config = container_config_from_inspect(FULL, ["busybox@sha256:abc"]).as_event_config()
    assert config["origin"] == "inspect"
    assert config["image"] == "registry.internal/base/busybox:1.36"
    assert config["image_digest"] == FULL["Image"]
    assert config["image_repo_digests"] == ["busybox@sha256:abc"]
    assert config["privileged"] is True
    assert (config["cap_add"], config["cap_drop"]) == (["SYS_ADMIN"], ["NET_RAW"])
    assert config["mounts"] == [
        {"type": "bind", "source": "/tmp", "destination": "/hosttmp", "read_only": False,
         "mode": "", "propagation": "rshared"},
        {"type": "bind", "source": "/var/run/docker.sock", "destination": "/var/run/docker.sock",
         "read_only": False, "mode": "", "propagation": "rprivate"},
        {"type": "volume", "source": "myvol", "destination": "/data", "read_only": True,
         "mode": "ro", "propagation": ""},
        {"type": "tmpfs", "source": "", "destination": "/run", "read_only": False,
         "mode": "rw,size=1m", "propagation": ""},
    ]  # fmt: skip
    modes = ("network_mode", "pid_mode", "ipc_mode", "uts_mode", "userns_mode", "cgroupns_mode")
    assert [config[m] for m in modes] == ["default", "host", "host", "host", None, "host"]
    assert config["seccomp"] == "unconfined" and config["apparmor"] == "unconfined"
    assert config["selinux_disabled"] is True and config["no_new_privileges"] is True
    assert config["user"] == "1000" and config["read_only_rootfs"] is True
    assert (config["memory_bytes"], config["pids_limit"]) == (64 * 1024 * 1024, 50)
    assert (config["nano_cpus"], config["cpu_shares"]) == (500_000_000, 512)
    assert config["devices"] == ["/dev/null:/dev/xnull:r"]
    assert config["restart_policy"] == "on-failure:3"
    assert config["labels"] == {"a": "b"}
    assert config["ports"] == ["127.0.0.1:8080->80/tcp"]
    assert config["group_add"] == ["10"] and config["sysctls"] == {"net.ipv4.ip_forward": "1"}
    assert config["runtime"] == "runc" and config["cgroup_parent"] is None


def test_defaults_mean_unlimited_root_and_no_profile_changes() -> None:
    plain = {
        "Image": "sha256:1",
        "HostConfig": {"Memory": 0, "PidsLimit": None, "NanoCpus": 0, "CpuShares": 0,
                       "RestartPolicy": {"Name": "", "MaximumRetryCount": 0}, "IpcMode": "private",
                       "SecurityOpt": None, "CapAdd": None, "Tmpfs": None, "PortBindings": {}},
        "Mounts": [],
        "Config": {"User": "", "Image": "busybox", "Labels": None},
    }  # fmt: skip
    config = container_config_from_inspect(plain).as_event_config()
    assert config["memory_bytes"] is config["pids_limit"] is config["nano_cpus"] is None
    assert config["user"] is None and config["privileged"] is False
    assert config["seccomp"] is config["apparmor"] is None
    assert config["restart_policy"] == "no" and config["ipc_mode"] == "private"
    assert config["cap_add"] == [] and config["mounts"] == [] and config["labels"] == {}


@pytest.mark.parametrize("limit", [0, -1, None])
def test_pids_limit_zero_minus_one_and_none_are_unlimited(limit: int | None) -> None:
    inspect = copy.deepcopy(FULL)
    inspect["HostConfig"]["PidsLimit"] = limit
    assert container_config_from_inspect(inspect).pids_limit is None


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (["seccomp:unconfined"], {"seccomp": "unconfined"}),
        (["apparmor:docker-default"], {"apparmor": "docker-default"}),
        (["label:disable"], {"selinux_disabled": True}),
        (["label=type:svirt_apache_t"], {"selinux_disabled": False}),
        (["no-new-privileges:true"], {"no_new_privileges": True}),
        (["no-new-privileges=false"], {"no_new_privileges": False}),
    ],
)
def test_security_opt_syntaxes(opts: list[str], expected: dict[str, object]) -> None:
    inspect = {"HostConfig": {"SecurityOpt": opts}, "Config": {}}
    config = container_config_from_inspect(inspect).as_event_config()
    assert {key: config[key] for key in expected} == expected
    assert config["security_opt"] == opts


def test_a_seccomp_profile_is_kept_as_a_digest() -> None:
    # The docker CLI sends the profile file's JSON, which can be tens of KiB.
    profile = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})
    inspect = {"HostConfig": {"SecurityOpt": [f"seccomp={profile}"]}, "Config": {}}
    config = container_config_from_inspect(inspect)
    assert config.seccomp == "custom"
    (opt,) = config.security_opt
    assert opt.startswith("seccomp=<profile sha256:") and len(opt) < 60


def test_since_arg_and_engine_times() -> None:
    assert since_arg(1_795_433_189_438_341_792) == "1795433189.438341792"
    assert since_arg(5) == "0.000000005"
    assert parse_engine_time_ns("2026-11-23T11:16:11.832767579Z") == 1_795_432_571_832_767_579
    assert parse_engine_time_ns("2026-11-23T11:16:11Z") == 1_795_432_571_000_000_000
    assert parse_engine_time_ns("2026-11-23T12:16:11.5+01:00") == 1_795_432_571_500_000_000
    assert parse_engine_time_ns("0001-01-01T00:00:00Z") is None
    assert parse_engine_time_ns("yesterday") is None


def test_describe_error_finds_the_os_error_behind_wrappers() -> None:
    # docker-py: DockerException from requests.ConnectionError(ProtocolError(text, OSError))
    inner = FileNotFoundError(2, "No such file or directory")
    wrapped = ConnectionError(RuntimeError("Connection aborted.", inner))
    try:
        raise ValueError("outer") from wrapped
    except ValueError as exc:
        assert describe_error(exc) == "No such file or directory"
    assert describe_error(RuntimeError("plain")) == "plain"


# ---------------------------------------------------------------------- known state


def event(
    action: str,
    time_ns: int,
    actor_id: str = "c1",
    *,
    type_: str = "container",
    source: str = "docker",
    host: str = "h",
    **attributes: Any,
) -> Event:
    return Event(
        id=f"{source}-{type_}-{action}-{actor_id}-{time_ns}",
        time_ns=time_ns,
        source=source,
        host=host,
        type=type_,
        action=action,
        actor=Actor(id=actor_id, name=f"name-{actor_id}"),
        attributes=attributes,
    )


def test_known_state_folds_container_lifecycles() -> None:
    state = KnownState.from_events(
        [
            event("create", 10),
            event("start", 20),
            event("create", 30, "c2"),
            event("start", 40, "c2"),
            event("die", 50, "c2"),
            event("create", 60, "c3"),
            event("destroy", 70, "c3"),
        ]
    )
    assert {cid: (c.state, c.started_ns) for cid, c in state.containers.items()} == {
        "c1": ("running", 20),
        "c2": ("exited", 40),
    }
    assert state.removed_since("c3", 70) and not state.removed_since("c3", 71)
    assert state.last_docker_ns == 70


def test_known_state_ignores_replayed_older_events() -> None:
    # After a stall, events recovered from the Engine's buffer come after newer ones.
    state = KnownState.from_events([event("destroy", 50), event("create", 10), event("die", 40)])
    assert state.containers == {}
    state = KnownState.from_events([event("start", 50), event("die", 40)])
    assert state.containers["c1"].state == "running"


def test_known_state_applies_observed_events_and_images() -> None:
    observed = event(
        "observed", 100, source="docktrail", change="restarted", state="running",
        started_at_ns=90,
    )  # fmt: skip
    gone = event("observed", 100, "c2", source="docktrail", change="disappeared", state="gone")
    image = "sha256:" + "a" * 64
    state = KnownState.from_events(
        [
            event("create", 10, "c2"),
            observed,
            gone,
            event("pull", 20, "busybox:1", type_="image", image_id=image),
            event("tag", 30, image, type_="image"),
            event("delete", 40, "sha256:" + "b" * 64, type_="image"),
        ]
    )
    assert state.containers["c1"].state == "running"
    assert state.containers["c1"].started_ns == 90
    assert "c2" not in state.containers
    assert state.images == {image: 30}


def test_load_known_state_reads_one_host_of_the_trail() -> None:
    trail = MemoryTrail()
    trail.open()
    trail.append(
        [
            event("create", 10),
            event("start", 20),
            event("exec_start", 25),
            event("create", 30, "v1", type_="volume"),
            event("create", 40, "other", host="elsewhere"),
            event("gap", 50, "daemon-id", type_="daemon", source="docktrail"),
        ]
    )
    state = load_known_state(trail, "h")
    assert list(state.containers) == ["c1"]
    assert state.containers["c1"].state == "running"
    assert state.last_docker_ns == 30  # the last Engine event of this host
    assert load_known_state(trail, "nobody").last_docker_ns is None


def test_last_docker_time_behind_many_other_events() -> None:
    trail = MemoryTrail()
    trail.open()
    trail.append([event("create", 10)])
    trail.append([event("syscall", 20 + i, f"a{i}", type_="audit", source="auditd")
                  for i in range(2100)])  # fmt: skip
    assert load_known_state(trail, "h").last_docker_ns == 10
