"""deploy/: the systemd unit (verified and scored by systemd-analyze), the compose file
(parsed by docker-compose: socket proxy, read-only mounts) and the Dockerfile's shape.
The image itself is built and run in tests/test_image_build.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.shared_data import missing_component

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "deploy" / "systemd" / "docktrail.service"
COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

# The Engine API docktrail's Docker source calls: what the proxy must let through.
PROXY_SECTIONS = {
    "EVENTS",
    "PING",
    "VERSION",
    "INFO",
    "CONTAINERS",
    "IMAGES",
    "EXEC",
    "NETWORKS",
    "VOLUMES",
}


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


@pytest.fixture
def local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's docktrail (verify checks it exists)."""
    if shutil.which("systemd-analyze") is None:
        missing_component("systemd-analyze is not installed (package systemd)")
    docktrail = Path(sys.executable).with_name("docktrail")
    unit = tmp_path / "docktrail.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/docktrail", str(docktrail)))
    return unit


def test_unit_validates_before_start_and_is_hardened() -> None:
    settings = unit_settings()
    assert settings["ExecStartPre"] == [
        "/usr/local/bin/docktrail -c /etc/docktrail/docktrail.yaml validate"
    ]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadOnlyPaths"] == ["/var/log/audit"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["UMask"] == ["0027"]
    # the one capability: audit barriers (README, "Audit barriers")
    assert settings["CapabilityBoundingSet"] == ["CAP_AUDIT_WRITE"]
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"][0].split()


def test_systemd_verifies_the_unit(local_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local_unit)], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_systemd_exposure_score_is_low(local_unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(local_unit)],
        capture_output=True,
        text=True,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 3.0  # the unit before hardening scored 9.6 (UNSAFE)


def compose_config() -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        missing_component("docker-compose is not installed (package docker-compose)")
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        cwd=COMPOSE.parent,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin"},
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def mount_of(service: dict[str, Any], target: str) -> tuple[str, bool]:
    """(source, read-only) of the mount at `target`; compose v1 prints the short form."""
    for volume in service["volumes"]:
        if isinstance(volume, str):
            source, path, *mode = volume.split(":")
            if path == target:
                return source, mode == ["ro"]
        elif volume["target"] == target:
            return volume["source"], bool(volume.get("read_only"))
    raise AssertionError(f"nothing mounted at {target}")


def test_compose_runs_docktrail_behind_a_read_only_socket_proxy() -> None:
    config = compose_config()
    docktrail = config["services"]["docktrail"]
    proxy = config["services"]["socket-proxy"]
    mounts = [json.dumps(volume) for volume in docktrail["volumes"]]
    assert not any("docker.sock" in mount for mount in mounts)  # only the proxy has it
    assert mount_of(docktrail, "/var/log/audit") == ("/var/log/audit", True)
    assert docktrail["environment"]["DOCKTRAIL_DOCKER__HOST"] == "tcp://socket-proxy:2375"
    assert docktrail["read_only"] is True and docktrail["cap_drop"] == ["ALL"]
    assert docktrail["user"] != "0" and not docktrail["user"].startswith("0:")
    assert "no-new-privileges:true" in docktrail["security_opt"]
    allowed = {key for key, value in proxy["environment"].items() if value == "1"}
    assert allowed == PROXY_SECTIONS
    assert proxy["environment"]["POST"] == "0"
    assert config["networks"]["docker-api"]["internal"] is True
    assert "docker-api" not in proxy.get("ports", [])


def test_compose_config_file_is_valid() -> None:
    from config.loader import load_config

    config = load_config(COMPOSE.parent / "docktrail.yaml", environ={})
    assert config.metrics.enabled and config.metrics.address == "127.0.0.1"


def test_dockerfile_takes_its_base_as_an_argument_and_drops_root() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE=", text, flags=re.MULTILINE)
    assert re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE) == ["${BASE}", "${BASE}"]
    users = re.findall(r"^USER (\S+)", text, flags=re.MULTILINE)
    assert users == ["docktrail"]
    assert "HEALTHCHECK" in text and "/healthz" in text
