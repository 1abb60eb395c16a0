"""The private dockerd fixture (tests/dockerd.py) works and cleans up after itself."""

from __future__ import annotations

import json
from pathlib import Path

from tests.dockerd import (
    BUSYBOX_APPLETS,
    BUSYBOX_REF,
    Dockerd,
    DockerdError,
    mounts_under,
    unavailable_reason,
)
from tests.shared_data import missing_component


def test_daemon_answers_on_its_private_socket(dockerd: Dockerd) -> None:
    assert dockerd.ping()
    assert dockerd.host == f"unix://{dockerd.socket_path}"
    assert dockerd.env["DOCKER_HOST"] == dockerd.host
    status, body = dockerd.api_get("/version")
    assert status == 200
    assert json.loads(body)["ApiVersion"]
    info = json.loads(dockerd.docker("info", "--format", "{{json .}}"))
    assert info["DockerRootDir"] == str(dockerd.data_root)


def test_busybox_image_is_imported(dockerd: Dockerd) -> None:
    tags = dockerd.docker("image", "inspect", "--format", "{{json .RepoTags}}", BUSYBOX_REF)
    assert BUSYBOX_REF in json.loads(tags)
    script = "echo hello; id -u; ls /bin"
    output = dockerd.docker("run", "--rm", BUSYBOX_REF, "sh", "-c", script).split()
    assert output[:2] == ["hello", "0"]
    assert set(BUSYBOX_APPLETS) <= set(output[2:])


def test_container_create_start_exec_remove(dockerd: Dockerd) -> None:
    name = "fixture-life"
    dockerd.docker("create", "--name", name, "--stop-timeout", "1", BUSYBOX_REF, "sleep", "60")
    dockerd.docker("start", name)
    assert dockerd.docker("exec", name, "cat", "/etc/passwd").startswith("root:")
    dockerd.docker("rm", "--force", name)
    assert name not in dockerd.docker("ps", "--all", "--format", "{{.Names}}").split()


def test_privileged_container_can_be_created(dockerd: Dockerd) -> None:
    # Starting it may fail on this kernel (capabilities); creating must work, since
    # rules tests need the create event of a privileged container.
    name = "fixture-priv"
    dockerd.docker("create", "--name", name, "--privileged", BUSYBOX_REF, "true")
    inspect = dockerd.docker("inspect", "--format", "{{.HostConfig.Privileged}}", name)
    assert inspect.strip() == "true"
    dockerd.docker("rm", "--force", name)


def test_crash_restart_and_stop_leave_nothing_behind() -> None:
    """A second, private daemon: kill() it with a running container, restart, stop."""
    reason = unavailable_reason()
    if reason is not None:
        missing_component(reason)
    daemon = Dockerd()
    root = daemon.root
    try:
        daemon.start()
        daemon.import_busybox()
        daemon.docker("network", "create", "crash-net")
        run = ("run", "--detach", "--name", "survivor", "--stop-timeout", "1")
        daemon.docker(*run, "--network", "crash-net", BUSYBOX_REF, "sleep", "60")
        assert _has_overlay_and_netns(mounts_under(root))
        daemon.kill()
        assert not daemon.ping()
        assert _has_overlay_and_netns(mounts_under(root)), "a crash leaves mounts behind"
        daemon.restart()
        names = daemon.docker("ps", "--all", "--format", "{{.Names}}").split()
        assert "survivor" in names
        daemon.docker("start", "survivor")
    finally:
        daemon.stop()
    assert mounts_under(root) == []
    assert not root.exists()
    assert _processes_mentioning(str(root)) == []


def test_start_failure_names_the_log() -> None:
    reason = unavailable_reason()
    if reason is not None:
        missing_component(reason)
    daemon = Dockerd(start_timeout=20, extra_args=("--no-such-flag",))
    try:
        daemon.start()
        raise AssertionError("dockerd started with a bad flag")
    except DockerdError as exc:
        assert "no-such-flag" in str(exc)
    finally:
        daemon.stop()


def _has_overlay_and_netns(points: list[str]) -> bool:
    overlay = any(p.endswith("/merged") for p in points)
    netns = any("/netns/" in p for p in points)
    return overlay and netns


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found
