"""A new container's configuration read from the Engine's own files (`docker_files`).

Against the private dockerd: the files give the same `config` as inspect for
containers with every kind of security setting, the live source stores a
`create` from them (`attributes.inspect = "engine-files"`), and anything that
cannot be trusted as much as the Engine falls back to inspect.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from listener.model.containerconfig import ContainerConfig
from listener.rules.fingerprint import config_fingerprint
from listener.sources.docker_files import EngineFiles, inspect_shaped
from listener.sources.docker_inspect import container_config_from_inspect, container_launch
from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.test_docker_source import eventually, of, running

CONTAINER_ID = "ab" * 32

# Every setting container_config_from_inspect reads, in a few containers.
SETTINGS: dict[str, list[str]] = {
    "privileged": ["--privileged", "--pid", "host", "--ipc", "host", "--uts", "host"],
    "mounts": [
        "-v", "/:/host:ro", "-v", "/etc:/host-etc:rslave", "-v", "files-vol:/data",
        "--mount", "type=tmpfs,destination=/scratch", "--tmpfs", "/run:rw,size=64k",
        "--read-only",
    ],
    "capabilities": [
        "--cap-add", "NET_ADMIN", "--cap-add", "SYS_PTRACE", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--security-opt", "seccomp=unconfined",
        "--security-opt", "apparmor=unconfined", "--user", "1000:1000", "--group-add", "10",
    ],
    "limits": [
        "--memory", "64m", "--pids-limit", "50", "--cpus", "0.5", "--cpu-shares", "512",
        "--restart", "on-failure:3", "--device", "/dev/null:/dev/x", "-p", "127.0.0.1:8080:80",
        "--sysctl", "net.ipv4.ip_forward=1", "--label", "team=ops",
        "--health-cmd", "true", "--network", "none", "--userns", "host",
        "--cgroupns", "host", "--oom-kill-disable",
    ],
}  # fmt: skip


@pytest.fixture
def created(dockerd: Dockerd) -> Iterator[Callable[..., str]]:
    """Creates containers for this test (never started); removes them after it."""
    made: list[str] = []

    def create(*args: str) -> str:
        name = f"files-{uuid.uuid4().hex[:8]}"
        made.append(name)
        return dockerd.docker("create", "--name", name, *args, BUSYBOX_REF, "sleep", "5").strip()

    yield create
    for name in made:
        dockerd.docker("rm", "--force", "--volumes", name, check=False)


def inspect(dockerd: Dockerd, container_id: str) -> dict[str, Any]:
    status, body = dockerd.api_get(f"/containers/{container_id}/json")
    assert status == 200
    data: dict[str, Any] = json.loads(body)
    return data


def comparable(config: ContainerConfig) -> dict[str, Any]:
    data = config.model_dump()
    data["mounts"] = sorted(data["mounts"], key=lambda m: (m["destination"], m["type"]))
    return data


@pytest.mark.parametrize("kind", sorted(SETTINGS))
def test_the_files_say_what_inspect_says(
    dockerd: Dockerd, created: Callable[..., str], kind: str
) -> None:
    container_id = created(*SETTINGS[kind])
    files = EngineFiles.for_engine(dockerd.host, str(dockerd.data_root))
    assert files is not None
    from_files = files.created(container_id)
    assert from_files is not None
    inspected = inspect(dockerd, container_id)
    assert comparable(container_config_from_inspect(from_files)) == comparable(
        container_config_from_inspect(inspected)
    )
    assert container_launch(from_files) == container_launch(inspected)
    # the sweep re-inspects running containers: the same fingerprint means no second judgement
    assert config_fingerprint(container_config_from_inspect(from_files).as_event_config()) == (
        config_fingerprint(container_config_from_inspect(inspected).as_event_config())
    )
    assert from_files["Name"] == inspected["Name"] and from_files["Image"] == inspected["Image"]


def test_a_privileged_create_reads_as_privileged(
    dockerd: Dockerd, created: Callable[..., str]
) -> None:
    """Not only equal: the setting that matters most is there (an empty config is equal
    to an empty config)."""
    container_id = created("--privileged", "-v", "/:/host")
    files = EngineFiles.for_engine(dockerd.host, str(dockerd.data_root))
    assert files is not None
    data = files.created(container_id)
    assert data is not None
    config = container_config_from_inspect(data)
    assert config.privileged is True
    assert [(m.source, m.destination) for m in config.mounts] == [("/", "/host")]


async def test_the_live_source_stores_a_create_from_the_files(
    dockerd: Dockerd, created: Callable[..., str]
) -> None:
    async with running(dockerd) as (source, stored):
        assert source.files is not None
        container_id = created("--privileged", "--cap-add", "SYS_ADMIN")
        await eventually(lambda: any(e.actor.id == container_id for e in of(stored)))
    (create,) = [e for e in of(stored, action="create") if e.actor.id == container_id]
    assert create.attributes["inspect"] == "engine-files"
    assert create.config is not None
    assert create.config["privileged"] is True and create.config["cap_add"] == ["SYS_ADMIN"]


async def test_a_run_stores_its_create_from_the_files_and_its_start_from_inspect(
    dockerd: Dockerd,
) -> None:
    name = f"files-run-{uuid.uuid4().hex[:8]}"
    try:
        async with running(dockerd) as (_, stored):
            container_id = dockerd.docker(
                "run", "-d", "--name", name, "--cap-add", "NET_RAW", BUSYBOX_REF, "sleep", "30"
            ).strip()
            await eventually(
                lambda: any(e.actor.id == container_id for e in of(stored, action="start"))
            )
    finally:
        dockerd.docker("rm", "--force", name, check=False)
    create = next(e for e in of(stored, action="create") if e.actor.id == container_id)
    start = next(e for e in of(stored, action="start") if e.actor.id == container_id)
    assert create.attributes["inspect"] == "engine-files"
    assert "inspect" not in start.attributes
    assert create.config is not None and start.config is not None
    assert create.config["cap_add"] == start.config["cap_add"] == ["NET_RAW"]


async def test_turned_off_a_create_is_inspected(
    dockerd: Dockerd, created: Callable[..., str]
) -> None:
    async with running(dockerd, read_engine_files=False) as (source, stored):
        assert source.files is None
        container_id = created("--privileged")
        await eventually(lambda: any(e.actor.id == container_id for e in of(stored)))
    (create,) = [e for e in of(stored, action="create") if e.actor.id == container_id]
    assert "inspect" not in create.attributes
    assert create.config is not None and create.config["privileged"] is True


# ---------------------------------------------------------------------- what is not trusted


def engine_root(tmp_path: Path, container_id: str = CONTAINER_ID, **saved: Any) -> Path:
    """A data root laid out as dockerd's, 0710/0600 like dockerd's own."""
    folder = tmp_path / "containers" / container_id
    folder.mkdir(parents=True)
    for directory in (tmp_path / "containers", folder):
        directory.chmod(0o710)
    document = {"ID": container_id, "Name": "/x", "Image": "sha256:1", "Config": {}, **saved}
    (folder / "config.v2.json").write_text(json.dumps(document))
    (folder / "hostconfig.json").write_text(json.dumps({"Privileged": True}))
    for file in folder.iterdir():
        file.chmod(0o600)
    return tmp_path


def test_a_well_laid_out_root_is_read(tmp_path: Path) -> None:
    files = EngineFiles.for_engine("unix:///run/docker.sock", str(engine_root(tmp_path)))
    assert files is not None
    data = files.created(CONTAINER_ID)
    assert data is not None and data["HostConfig"] == {"Privileged": True}


@pytest.mark.parametrize("host", ["tcp://10.0.0.2:2376", "ssh://root@builder", "npipe:////./x"])
def test_a_remote_engine_is_always_inspected(tmp_path: Path, host: str) -> None:
    assert EngineFiles.for_engine(host, str(engine_root(tmp_path))) is None


def test_no_data_root_or_a_missing_one_is_inspected(tmp_path: Path) -> None:
    assert EngineFiles.for_engine("unix:///run/docker.sock", "") is None
    assert EngineFiles.for_engine("unix:///run/docker.sock", str(tmp_path / "none")) is None


def test_a_root_others_may_write_is_not_trusted(tmp_path: Path) -> None:
    root = engine_root(tmp_path)
    (root / "containers").chmod(0o730)
    assert EngineFiles.for_engine("unix:///run/docker.sock", str(root)) is None


def test_a_container_folder_or_file_others_may_write_is_not_read(tmp_path: Path) -> None:
    root = engine_root(tmp_path)
    files = EngineFiles(root)
    folder = root / "containers" / CONTAINER_ID
    (folder / "hostconfig.json").chmod(0o622)
    assert files.created(CONTAINER_ID) is None
    (folder / "hostconfig.json").chmod(0o600)
    folder.chmod(0o777)
    assert files.created(CONTAINER_ID) is None


def test_a_file_of_another_owner_is_not_read(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a file away")  # tests run as root in CI
    root = engine_root(tmp_path)
    os.chown(root / "containers" / CONTAINER_ID / "config.v2.json", 1234, 1234)
    assert EngineFiles(root).created(CONTAINER_ID) is None


def test_a_symlinked_file_is_not_followed(tmp_path: Path) -> None:
    root = engine_root(tmp_path)
    folder = root / "containers" / CONTAINER_ID
    (folder / "hostconfig.json").rename(tmp_path / "elsewhere.json")
    (folder / "hostconfig.json").symlink_to(tmp_path / "elsewhere.json")
    assert EngineFiles(root).created(CONTAINER_ID) is None


@pytest.mark.parametrize("container_id", ["../../etc", "AB" * 32, "ab" * 31, "", "ab" * 32 + "/"])
def test_an_id_that_is_not_a_plain_id_is_never_a_path(tmp_path: Path, container_id: str) -> None:
    assert EngineFiles(engine_root(tmp_path)).created(container_id) is None


def test_files_of_another_container_or_in_another_layout_are_not_used(tmp_path: Path) -> None:
    root = engine_root(tmp_path, ID="cd" * 32)
    assert EngineFiles(root).created(CONTAINER_ID) is None
    assert inspect_shaped(CONTAINER_ID, {"ID": CONTAINER_ID, "Config": []}, {}) is None
    assert inspect_shaped(CONTAINER_ID, {"ID": CONTAINER_ID, "Config": {}}, []) is None
    points = {"ID": CONTAINER_ID, "Config": {}, "MountPoints": {"/x": "bad"}}
    assert inspect_shaped(CONTAINER_ID, points, {}) is None


def test_a_broken_file_is_not_used(tmp_path: Path) -> None:
    root = engine_root(tmp_path)
    (root / "containers" / CONTAINER_ID / "config.v2.json").write_text("{not json")
    assert EngineFiles(root).created(CONTAINER_ID) is None
    (root / "containers" / CONTAINER_ID / "config.v2.json").unlink()
    assert EngineFiles(root).created(CONTAINER_ID) is None  # removed: inspect says gone


def test_saved_mount_points_read_as_inspect_shows_them() -> None:
    saved = {
        "ID": CONTAINER_ID,
        "Config": {},
        "MountPoints": {
            "/host": {"Source": "/", "Destination": "/host", "RW": False, "Type": "bind",
                      "Relabel": "ro", "Propagation": "rslave", "Name": "", "Driver": ""},
            "/data": {"Source": "/var/lib/docker/volumes/v/_data", "Destination": "/data",
                      "RW": True, "Type": "volume", "Name": "v", "Driver": "local"},
        },
    }  # fmt: skip
    data = inspect_shaped(CONTAINER_ID, saved, {})
    assert data is not None
    mounts = container_config_from_inspect(data).mounts
    assert [(m.type, m.source, m.destination, m.read_only, m.mode) for m in mounts] == [
        ("volume", "v", "/data", False, ""),
        ("bind", "/", "/host", True, "ro"),
    ]
