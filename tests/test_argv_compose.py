"""docker-compose v1 (a Python script), the compose v2 plugin's own execve, and the
interpreters and wrappers auditd records in front of a known CLI (issue 24, item 1)."""

from __future__ import annotations

import pytest

from listener.argv import parse_docker_argv, program_argv

V1 = ["/usr/bin/python3", "/usr/bin/docker-compose"]


def test_compose_v1_as_auditd_records_it_with_connection_flags() -> None:
    call = parse_docker_argv([*V1, "-H", "unix:///run/d.sock", "-p", "Shop", "up", "-d"])
    assert call.command == "compose up" and call.compose is not None
    assert (call.compose.project, call.compose.project_given) == ("shop", True)
    assert call.global_options["host"] == ("unix:///run/d.sock",)
    assert call.flag("detach") and not call.errors and not call.remote
    assert call.argv[:2] == tuple(V1)  # the record keeps what ran


def test_compose_v1_files_and_project_directory_derive_the_project() -> None:
    by_file = parse_docker_argv([*V1, "-f", "/srv/billing/compose.yml", "down"], cwd="/")
    assert by_file.compose is not None and by_file.compose.project == "billing"
    assert by_file.command == "compose down"
    by_dir = parse_docker_argv([*V1, "--project-directory", "/srv/Web.App", "up"], cwd="/")
    assert by_dir.compose is not None and by_dir.compose.project == "webapp"
    by_cwd = parse_docker_argv([*V1, "up", "-d", "web"], cwd="/home/alice/shop")
    assert by_cwd.compose is not None and by_cwd.compose.project == "shop"
    assert by_cwd.compose.services == ("web",) and not by_cwd.compose.project_given


def test_compose_v1_to_another_engine_is_remote() -> None:
    assert parse_docker_argv([*V1, "-H", "tcp://10.1.2.3:2375", "up"]).remote
    assert parse_docker_argv([*V1, "--host=ssh://ops@db", "down"]).remote


def test_compose_v2_plugin_execve_is_compose() -> None:
    plugin = "/usr/libexec/docker/cli-plugins/docker-compose"
    call = parse_docker_argv([plugin, "compose", "-p", "api", "up", "-d", "db"])
    assert call.command == "compose up" and call.compose is not None
    assert (call.compose.project, call.compose.services) == ("api", ("db",))
    assert not call.errors


@pytest.mark.parametrize(
    "front",
    [
        ["/usr/bin/env", "python3"],
        ["/usr/bin/env", "-i", "PATH=/usr/bin", "python3", "-u"],
        ["python3.11", "-E"],
        ["/bin/sh"],
        ["bash", "--"],
        ["sudo", "-u", "root", "-E"],
        ["nice", "-n", "5", "timeout", "30"],
    ],
)
def test_interpreters_and_wrappers_in_front_are_skipped(front: list[str]) -> None:
    call = parse_docker_argv([*front, "/usr/local/bin/docker-compose", "-p", "x", "down"])
    assert call.command == "compose down"
    docker = parse_docker_argv([*front, "/usr/bin/docker", "rm", "-f", "web"])
    assert (docker.command, docker.args) == ("rm", ("web",))


def test_other_programs_are_left_alone() -> None:
    assert program_argv(["python3", "-c", "import docker"]) == ["python3", "-c", "import docker"]
    assert program_argv(["python3", "/opt/tool.py", "up"]) == ["python3", "/opt/tool.py", "up"]
