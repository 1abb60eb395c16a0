"""The long-form image test: a Debian base from debootstrap + `docker import`, the
Dockerfile built on it by the real test dockerd (no registry, no network in the build),
and the container run against that same daemon until it records an event.

Slow (debootstrap downloads a Debian base: minutes), so opt-in: DOCKTRAIL_IMAGE_TEST=1.
DOCKTRAIL_DEBIAN_MIRROR overrides the mirror; DOCKTRAIL_IMAGE_CACHE names a directory
where the base tarball and the wheels are kept between runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dockerd import BUSYBOX_REF, Dockerd, wait_until
from tests.shared_data import missing_component

ROOT = Path(__file__).resolve().parents[1]
BASE_REF = "docktrail-test/debian-python:bookworm"
IMAGE_REF = "docktrail-test/docktrail:image-test"
SOURCES = ("pyproject.toml", "README.md", "listener", "sinks", "notifiers", "config")

pytestmark = pytest.mark.skipif(
    os.environ.get("DOCKTRAIL_IMAGE_TEST") != "1",
    reason="long-form image test: set DOCKTRAIL_IMAGE_TEST=1 (debootstrap, minutes)",
)


def _cache_dir() -> Path:
    configured = os.environ.get("DOCKTRAIL_IMAGE_CACHE")
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / "docktrail-image"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def debian_base_tarball(cache: Path) -> Path:
    """A minbase bookworm with python3 and venv, as a tarball (built once per cache)."""
    tarball = cache / "bookworm-python.tar"
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        missing_component("debootstrap is not installed (package debootstrap)")
    mirror = os.environ.get("DOCKTRAIL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    with tempfile.TemporaryDirectory(dir=cache) as tree:
        subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-venv",
             "bookworm", tree, mirror],
            check=True, capture_output=True, timeout=1800,
        )  # fmt: skip
        partial = tarball.with_suffix(".partial")
        subprocess.run(["tar", "-C", tree, "-cf", str(partial), "."], check=True)
        partial.rename(tarball)
    return tarball


def wheelhouse(cache: Path, sources: Path) -> Path:
    """Wheels of docktrail's dependencies and build backend, for an offline build.

    Built from the copy in `sources`: setuptools writes build/ next to what it builds.
    """
    wheels = cache / "wheels"
    if not (wheels / ".complete").exists():
        pip = [sys.executable, "-m", "pip"]
        subprocess.run([*pip, "wheel", "-q", "--wheel-dir", str(wheels), str(sources)], check=True)
        subprocess.run(
            [*pip, "download", "-q", "--dest", str(wheels), "setuptools>=68", "wheel"], check=True
        )
        (wheels / ".complete").touch()
    return wheels


def copy_sources(target: Path) -> Path:
    target.mkdir()
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(source, target / name, ignore=ignore)
        else:
            shutil.copy2(source, target / name)
    return target


def build_context(tmp: Path, cache: Path) -> Path:
    context = copy_sources(tmp / "context")
    wheels = wheelhouse(cache, copy_sources(tmp / "wheel-sources"))
    shutil.copytree(wheels, context / "wheels", ignore=shutil.ignore_patterns("docktrail-*"))
    shutil.copy2(ROOT / "deploy" / "Dockerfile", context / "Dockerfile")
    shutil.copy2(ROOT / ".dockerignore", context / ".dockerignore")
    return context


@pytest.fixture(scope="module")
def image(dockerd: Dockerd) -> Iterator[str]:
    cache = _cache_dir()
    tarball = debian_base_tarball(cache)
    with tarball.open("rb") as stream:
        subprocess.run(
            ["docker", "import", "-", BASE_REF], stdin=stream, env=dockerd.env,
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        context = build_context(Path(tmp), cache)
        env = {**dockerd.env, "DOCKER_BUILDKIT": "0"}  # the daemon has no buildx; classic builder
        result = subprocess.run(
            ["docker", "build", "--network", "none", "-t", IMAGE_REF,
             "--build-arg", f"BASE={BASE_REF}",
             "--build-arg", "PIP_OPTIONS=--no-index --find-links /src/wheels", str(context)],
            env=env, capture_output=True, text=True, timeout=1800,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    size = int(dockerd.docker("image", "inspect", "-f", "{{.Size}}", IMAGE_REF))
    base = int(dockerd.docker("image", "inspect", "-f", "{{.Size}}", BASE_REF))
    print(f"\nimage {IMAGE_REF}: {size / 1e6:.1f} MB ({(size - base) / 1e6:.1f} MB over the base)")
    yield IMAGE_REF
    dockerd.docker("image", "rm", "--force", IMAGE_REF, check=False)


def test_image_runs_non_root_read_only_and_records_an_event(dockerd: Dockerd, image: str) -> None:
    socket_gid = str(dockerd.socket_path.stat().st_gid)
    name = "docktrail-image-test"
    dockerd.docker(
        "run", "--detach", "--name", name, "--network", "none", "--read-only",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--group-add", socket_gid,
        "-v", f"{dockerd.socket_path}:/var/run/docker.sock",
        "-e", "DOCKTRAIL_AUDITD__ENABLED=false", "-e", "DOCKTRAIL_HOST=image-test",
        "--health-interval", "2s", "--health-start-period", "30s",
        image,
    )  # fmt: skip
    try:
        _check_running_container(dockerd, name)
    finally:
        print(dockerd.docker("logs", "--tail", "20", name, check=False))
        dockerd.docker("rm", "--force", "--volumes", name, check=False)
        dockerd.docker("rm", "--force", "image-probe", check=False)


def _check_running_container(dockerd: Dockerd, name: str) -> None:
    def status() -> str:
        return dockerd.docker("inspect", "-f", "{{.State.Health.Status}}", name).strip()

    assert wait_until(lambda: status() == "healthy", 90), status()
    dockerd.docker("create", "--name", "image-probe", "--privileged", BUSYBOX_REF, "true")

    def recorded() -> list[dict[str, object]]:
        out = dockerd.docker(
            "exec", name, "docktrail", "query", "-f", "container=image-probe", "--format", "json"
        )
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    assert wait_until(lambda: any(e["action"] == "create" for e in recorded()), 60)
    alerts = dockerd.docker("exec", name, "docktrail", "alerts", "--format", "json")
    assert '"privileged-container"' in alerts
    assert dockerd.docker("exec", name, "id", "-u").strip() == "10001"
    touched = subprocess.run(
        ["docker", "exec", name, "touch", "/etc/x"], env=dockerd.env, capture_output=True
    )
    assert touched.returncode != 0  # read-only root file system
    mode = dockerd.docker("exec", name, "stat", "-c", "%a", "/var/lib/docktrail/docktrail.db")
    assert int(mode.strip(), 8) & 0o007 == 0  # not world-readable
