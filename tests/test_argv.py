"""Tests for listener.argv (docker CLI argv as the docker CLI parses it) and merge_configs."""

from __future__ import annotations

import pytest

from listener.argv import (
    container_config,
    exec_options,
    normalize_image_ref,
    parse_docker_argv,
    parse_memory,
)
from listener.model.containerconfig import ContainerConfig, Mount, merge_configs


def parse(*words: str, cwd: str | None = None):  # type: ignore[no-untyped-def]
    return parse_docker_argv(["docker", *words], cwd=cwd)


def config(*words: str) -> ContainerConfig:
    found = container_config(parse(*words))
    assert found is not None
    return found


# ----------------------------------------------------------------------------- parsing


def test_long_flags_with_equals_or_next_word_and_the_image_ends_flags() -> None:
    call = parse("run", "--name=web", "--network", "host", "-d", "nginx", "sh", "-c", "--rm")
    assert call.command == "run"
    assert call.opt("name") == "web" and call.opt("network") == "host"
    assert call.flag("detach") and not call.flag("rm")  # --rm belongs to the command
    assert call.args == ("nginx", "sh", "-c", "--rm") and call.image == "nginx"


def test_combined_short_flags_and_attached_values() -> None:
    call = parse("run", "-itd", "-p8080:80", "-v/a:/b", "-eX=1", "-itv/c:/d", "img")
    assert call.flag("interactive") and call.flag("tty") and call.flag("detach")
    assert call.options["publish"] == ("8080:80",)
    assert call.options["volume"] == ("/a:/b", "/c:/d")
    assert call.options["env"] == ("X=1",) and call.image == "img"
    assert parse("run", "-d=false", "img").flag("detach") is False


def test_a_value_flag_takes_the_next_word_whatever_it_looks_like() -> None:
    call = parse("run", "-e", "-x", "--label", "--privileged", "img")
    assert call.options["env"] == ("-x",) and call.options["label"] == ("--privileged",)
    assert call.image == "img" and not call.flag("privileged")


def test_double_dash_and_lone_dash() -> None:
    assert parse("run", "--", "-img-").image == "-img-"
    call = parse("import", "-", "registry.internal/base/busybox:1.36")
    assert call.args == ("-", "registry.internal/base/busybox:1.36")
    assert call.image == "registry.internal/base/busybox:1.36"


def test_booleans_accept_explicit_values() -> None:
    assert config("run", "--privileged=false", "img").privileged is False
    assert config("run", "--privileged=true", "--read-only=1", "img").read_only_rootfs is True


def test_interspersed_flags_after_arguments_for_other_commands() -> None:
    call = parse("rm", "web-1", "-f", "web-2")
    assert call.command == "rm" and call.flag("force") and call.args == ("web-1", "web-2")
    stop = parse("stop", "-t", "1", "web-1")
    assert stop.opt("time") == "1" and stop.args == ("web-1",)


def test_global_options_and_management_commands() -> None:
    call = parse("--context", "prod", "-D", "container", "run", "--rm", "img")
    assert call.command == "run" and call.global_options["context"] == ("prod",)
    assert parse("image", "rm", "img").command == "rmi"
    assert parse("container", "ls", "-a").command == "ps" and parse("ps").read_only
    assert parse("network", "create", "-d", "bridge", "net1").args == ("net1",)
    assert parse("volume", "remove", "v1").command == "volume rm"
    assert parse("buildx", "build", "-t", "app:1", ".").command == "build"
    assert parse().command == "" and parse().read_only
    assert parse("-v").command == ""  # `docker -v` prints the version


def test_remote_engines_are_recognised() -> None:
    assert parse("-H", "tcp://10.0.0.5:2376", "ps").remote
    assert parse("--host=ssh://ops@build", "ps").remote
    assert not parse("-H", "unix:///var/run/docker.sock", "ps").remote
    assert not parse("-H", "tcp://127.0.0.1:2375", "ps").remote
    assert not parse("ps").remote


def test_unknown_flags_are_errors_and_parsed_as_booleans() -> None:
    call = parse("run", "--no-such-flag", "img")
    assert call.errors == ("unknown flag: --no-such-flag",) and call.image == "img"
    assert parse("run", "--name").errors == ("flag needs an argument: --name",)


def test_compose_project_given_or_derived() -> None:
    call = parse("compose", "-p", "Shop.Prod", "up", "-d", "web", "db")
    assert call.command == "compose up" and call.compose is not None
    assert (call.compose.project, call.compose.project_given) == ("shopprod", True)
    assert call.compose.services == ("web", "db") and call.flag("detach")
    derived = parse("compose", "up", "-d", cwd="/home/alice/My_App")
    assert derived.compose is not None
    assert (derived.compose.project, derived.compose.project_given) == ("my_app", False)
    by_file = parse("compose", "-f", "/srv/billing/compose.yaml", "down", cwd="/")
    assert by_file.compose is not None and by_file.compose.project == "billing"
    assert by_file.command == "compose down"
    assert parse("compose", "ps").read_only
    standalone = parse_docker_argv(["/usr/local/bin/docker-compose", "-p", "x", "down"])
    assert standalone.command == "compose down" and standalone.compose is not None
    assert standalone.compose.project == "x"


# ----------------------------------------------------------------------------- config


def test_run_config_from_argv() -> None:
    found = config(
        "run",
        "-d",
        "--name",
        "web-1",
        "--privileged",
        "--cap-add",
        "sys_admin,CAP_NET_ADMIN",
        "--cap-drop=ALL",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock:ro,rshared",
        "--mount",
        "type=bind,source=/etc,target=/host-etc,readonly",
        "-v",
        "data:/data",
        "-v",
        "/anon",
        "--tmpfs",
        "/run:rw,size=64m",
        "--net",
        "host",
        "--pid=host",
        "--ipc",
        "host",
        "--uts",
        "host",
        "--userns",
        "host",
        "--security-opt",
        "seccomp:unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--security-opt",
        "label=disable",
        "--security-opt",
        "no-new-privileges",
        "-u",
        "0:0",
        "--read-only",
        "-m",
        "64m",
        "--pids-limit",
        "100",
        "--cpus",
        "1.5",
        "-c",
        "512",
        "--device",
        "/dev/sda:/dev/xvda:r",
        "--restart",
        "on-failure:3",
        "-l",
        "audit.why=hotfix",
        "--label",
        "flag",
        "registry.internal/web/nginx:1.25",
        "nginx",
        "-g",
        "daemon off;",
    )
    assert found.origin == "argv" and found.image == "registry.internal/web/nginx:1.25"
    assert found.privileged and found.cap_add == ["SYS_ADMIN", "NET_ADMIN"]
    assert found.cap_drop == ["ALL"]
    assert found.mounts == [
        Mount(
            type="bind",
            source="/var/run/docker.sock",
            destination="/var/run/docker.sock",
            read_only=True,
            mode="ro,rshared",
            propagation="rshared",
        ),
        Mount(type="volume", source="data", destination="/data", mode=""),
        Mount(type="volume", source="", destination="/anon"),
        Mount(type="bind", source="/etc", destination="/host-etc", read_only=True),
        Mount(type="tmpfs", destination="/run", mode="rw,size=64m"),
    ]
    assert (found.network_mode, found.pid_mode, found.ipc_mode) == ("host", "host", "host")
    assert (found.uts_mode, found.userns_mode) == ("host", "host")
    assert (found.seccomp, found.apparmor) == ("unconfined", "unconfined")
    assert found.selinux_disabled and found.no_new_privileges
    assert found.user == "0:0" and found.read_only_rootfs
    assert (found.memory_bytes, found.pids_limit, found.nano_cpus) == (64 << 20, 100, 15 * 10**8)
    assert found.cpu_shares == 512 and found.devices == ["/dev/sda:/dev/xvda:r"]
    assert found.restart_policy == "on-failure:3"
    assert found.labels == {"audit.why": "hotfix", "flag": ""}


def test_only_stated_settings_are_set() -> None:
    found = config("run", "busybox")
    assert found.model_fields_set == {"origin", "image"}
    assert config("run", "-m", "0", "--pids-limit", "-1", "img").memory_bytes is None
    assert config("create", "--pids-limit", "-1", "img").pids_limit is None
    assert container_config(parse("start", "web")) is None


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64m", 64 << 20),
        ("1g", 1 << 30),
        ("1.5GB", 3 << 29),
        ("512k", 512 << 10),
        ("100", 100),
        ("2 MiB", 2 << 20),
        ("1T", 1 << 40),
        ("x", None),
        ("-1", None),
    ],
)
def test_memory_sizes_like_the_docker_cli(text: str, size: int | None) -> None:
    assert parse_memory(text) == size


def test_exec_options() -> None:
    options = exec_options(
        parse("exec", "-u", "0", "-it", "--privileged", "web-1", "sh", "-c", "id")
    )
    assert options is not None
    assert (options.user, options.privileged, options.interactive, options.tty) == (
        "0",
        True,
        True,
        True,
    )
    assert options.command == ["sh", "-c", "id"]
    assert exec_options(parse("run", "img")) is None


@pytest.mark.parametrize(
    ("ref", "normal"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("randomuser/cryptominer:latest", "docker.io/randomuser/cryptominer:latest"),
        ("docker.io/randomuser/cryptominer", "docker.io/randomuser/cryptominer:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("registry.internal/web/nginx:1.25", "registry.internal/web/nginx:1.25"),
        ("localhost:5000/app@sha256:ab", "localhost:5000/app@sha256:ab"),
        ("sha256:7d1f59", "sha256:7d1f59"),
    ],
)
def test_image_references_in_the_engines_normal_form(ref: str, normal: str) -> None:
    assert normalize_image_ref(ref) == normal


# ----------------------------------------------------------------------------- merge


def inspected(**fields: object) -> ContainerConfig:
    base: dict[str, object] = {"origin": "inspect", "image": "nginx", "network_mode": "default"}
    return ContainerConfig.model_validate(base | fields)


def test_merge_keeps_inspect_and_no_differences_when_they_agree() -> None:
    argv = config(
        "run",
        "--name",
        "w",
        "--cap-add",
        "NET_ADMIN",
        "-v",
        "/a:/b",
        "-l",
        "k=v",
        "--restart",
        "on-failure",
        "--network",
        "bridge",
        "-u",
        "",
        "--device",
        "/dev/fuse",
        "docker.io/nginx",
    )
    inspect = inspected(
        image="nginx",
        cap_add=["CAP_NET_ADMIN"],
        network_mode="bridge",
        mounts=[Mount(type="bind", source="/a/", destination="/b", propagation="rprivate")],
        labels={"k": "v", "maintainer": "image label"},
        restart_policy="on-failure:0",
        devices=["/dev/fuse:/dev/fuse:rwm"],
        image_digest="sha256:1",
    )
    merged = merge_configs(inspect, argv)
    assert merged.origin == "inspect" and merged.argv_differences == {}
    assert merged.image_digest == "sha256:1" and merged.cap_add == ["CAP_NET_ADMIN"]


def test_merge_records_what_argv_said_otherwise() -> None:
    argv = config("run", "--privileged", "-m", "64m", "-v", "/etc:/x:ro", "-l", "a=1", "img")
    inspect = inspected(
        image="img",
        memory_bytes=32 << 20,
        mounts=[Mount(source="/etc", destination="/x")],
        labels={"a": "2"},
    )
    merged = merge_configs(inspect, argv)
    assert merged.privileged is False and merged.memory_bytes == 32 << 20  # inspect wins
    assert merged.argv_differences == {
        "privileged": True,
        "memory_bytes": 64 << 20,
        "mounts": [
            {
                "type": "bind",
                "source": "/etc",
                "destination": "/x",
                "read_only": True,
                "mode": "ro",
                "propagation": "",
            }
        ],
        "labels": {"a": "1"},
    }
    assert "network_mode" not in merged.argv_differences  # argv left it to the default
