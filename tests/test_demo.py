"""`make demo`: the scripted scenario on its own private dockerd; every alert of the
scenario reaches the local webhook and is printed; the trail verifies; nothing is left."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.dockerd import unavailable_reason
from tests.shared_data import missing_component

ROOT = Path(__file__).resolve().parents[1]


def test_make_demo_prints_the_alerts_and_tears_down() -> None:
    reason = unavailable_reason()
    if reason is not None:
        missing_component(reason)
    result = subprocess.run(
        ["make", "-s", "demo", "DEMO_ARGS=--no-wait"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    webhook = [line for line in out.splitlines() if "[webhook]" in line]
    for rule in ("privileged-container", "untrusted-image", "exec-in-container",
                 "container-churn"):  # fmt: skip
        assert any(rule in line for line in webhook), f"{rule} not printed:\n{out}"
    hardened = out.split("1. a hardened deploy")[1].split("2. a privileged")[0]
    assert "[webhook]" not in hardened  # the hardened deploy raises nothing
    assert re.search(r"intact: \d+ events", out)
    assert "explorer:" in out  # the explorer hook ran (serve, or says it is absent)
    daemon_root = re.search(r"private dockerd \(unix://(\S+)/docker\.sock\)", out)
    assert daemon_root and not Path(daemon_root.group(1)).exists()
    assert "tearing down" in out.splitlines()[-1]
