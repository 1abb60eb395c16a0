"""`docktrail run` without a Docker daemon or audit log keeps running and stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def test_run_reports_what_is_missing_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "docktrail.yaml"
    config.write_text(
        f"trail:\n  path: {tmp_path / 't.db'}\n"
        f"docker:\n  host: unix://{tmp_path / 'no-docker.sock'}\n"
        f"auditd:\n  log_file: {tmp_path / 'no-audit.log'}\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    child = subprocess.Popen(
        [sys.executable, "-m", "listener", "-c", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert child.stderr is not None
    records = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = child.stderr.readline()
        if not line:
            break
        records.append(json.loads(line))  # not a terminal: JSON lines
        said = [r["message"] for r in records if r["level"] == "warning"]
        if any(m.startswith("Docker Engine") for m in said) and any(
            m.startswith("audit log") for m in said
        ):
            break  # both said (other warnings, e.g. of posture checks, may come between)
    warnings = {r["message"]: r for r in records if r["level"] == "warning"}
    assert child.poll() is None, "run must keep running without Docker and auditd"
    docker = next(m for m in warnings if m.startswith("Docker Engine not reachable"))
    assert "no-docker.sock" in docker and "start dockerd" in warnings[docker]["fix"]
    audit = next(m for m in warnings if m.startswith("audit log"))
    assert "does not exist" in audit and "auditd.enabled: false" in warnings[audit]["fix"]
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == 0
    assert (tmp_path / "t.db").exists() and (tmp_path / "t.key").exists()
