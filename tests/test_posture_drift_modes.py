"""Drift executables: the overlay2 upper directory is lstat-ed, never followed out of.

The stat logic runs on a directory tree built like an upper directory (with
links pointing out of it); the live path runs on the private dockerd and
checks against its storage driver what the event says.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.models import RulesConfig
from config.posture import DriftConfig
from listener.posture.drift import DriftWatch
from listener.posture.upperdir import OVERLAY2, components, executables, upper_dir
from listener.rules.engine import RuleEngine
from listener.sources.docker_engine import EngineClient
from sinks.memory import MemoryTrail
from tests.dockerd import BUSYBOX_REF, Dockerd

FOREVER = float("inf")


def _file(path: Path, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)


@pytest.fixture
def upper(tmp_path: Path) -> Path:
    """An upper directory; outside it, an executable that links point to."""
    outside = tmp_path / "host"
    _file(outside / "secret-tool", 0o755)
    root = tmp_path / "upper"
    _file(root / "tmp/dropper", 0o700)
    _file(root / "usr/bin/only-group", 0o610)
    _file(root / "etc/config", 0o644)
    (root / "usr/lib").mkdir(parents=True)
    (root / "tmp/link").symlink_to(outside / "secret-tool")
    (root / "escape").symlink_to(outside)
    return root


def test_executable_files_are_found_anywhere_links_and_dotdot_are_not(upper: Path) -> None:
    paths = ["/tmp/dropper", "/usr/bin/only-group", "/etc/config", "/usr/lib", "/tmp/link"]
    paths += ["/escape/secret-tool", "/tmp/../../host/secret-tool", "/gone"]
    scan = executables(str(upper), paths, 100, FOREVER)
    assert scan.scan == OVERLAY2 and not scan.truncated
    assert scan.executables == ("/tmp/dropper", "/usr/bin/only-group")


def test_paths_that_could_leave_the_root_are_refused() -> None:
    assert components("/usr/bin/x") == ["usr", "bin", "x"]
    for bad in ("/a/../b", "/a/./b", "//a", "relative", "/a/", "/a\0b"):
        assert components(bad) is None, bad


def test_the_scan_is_bounded_by_count_and_deadline(upper: Path) -> None:
    paths = ["/tmp/dropper", "/usr/bin/only-group"]
    limited = executables(str(upper), paths, 1, FOREVER)
    assert limited.executables == ("/tmp/dropper",) and limited.truncated
    late = executables(str(upper), paths, 100, time.monotonic() - 1)
    assert late.executables == () and late.truncated


def test_other_drivers_and_unreadable_upper_dirs_are_said(tmp_path: Path) -> None:
    assert upper_dir({"GraphDriver": {"Name": "vfs", "Data": None}}) == (
        None,
        "storage driver vfs: no file modes",
    )
    assert upper_dir({"GraphDriver": {"Name": OVERLAY2, "Data": {}}})[0] is None
    good = {"GraphDriver": {"Name": OVERLAY2, "Data": {"UpperDir": str(tmp_path)}}}
    assert upper_dir(good) == (str(tmp_path), OVERLAY2)
    scan = executables(str(tmp_path / "missing"), ["/x"], 10, FOREVER)
    assert scan.scan.startswith("upper directory unreadable") and scan.executables == ()


@pytest.fixture
def engine(dockerd: Dockerd) -> Iterator[EngineClient]:
    client = EngineClient(dockerd.host, 30.0)
    yield client
    client.close()


def test_live_a_new_executable_in_tmp_is_flagged_when_the_driver_allows(
    dockerd: Dockerd, engine: EngineClient
) -> None:
    name = f"drift-x-{uuid.uuid4().hex[:8]}"
    cid = dockerd.docker("run", "-d", "--name", name, BUSYBOX_REF, "sleep", "300").strip()
    try:
        script = "echo x > /tmp/plain && echo x > /tmp/tool && chmod 755 /tmp/tool"
        dockerd.docker("exec", cid, "sh", "-c", script)
        listed = [c for c in engine.containers() if c["Id"] == cid]
        (event,) = DriftWatch(DriftConfig(), "drift-modes").sweep(engine, listed, "periodic")
        upper, _ = upper_dir(engine.inspect_container(cid))
        readable = upper is not None and os.access(upper, os.R_OK | os.X_OK)
        if not readable:
            assert event.attributes["modes"] != OVERLAY2 and not event.attributes["executables"]
            assert "added /tmp/tool" in event.attributes["paths"]  # today's behaviour is kept
            return
        assert event.attributes["modes"] == OVERLAY2
        assert event.attributes["executables"] == ["/tmp/tool"]
        stored = MemoryTrail().append([event]).stored
        (alert,) = [a for a in RuleEngine(RulesConfig()).alerts_for(stored)]
        assert alert.rule == "container-drift" and "/tmp/tool" in alert.summary
    finally:
        dockerd.docker("rm", "--force", name, check=False)
