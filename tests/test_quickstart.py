"""The README's quick start, run as written: the block between the quickstart markers
is executed by bash against the test dockerd; the alert reaches the local webhook, the
trail verifies, /metrics counts the alert, and the service stops cleanly."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from tests.dockerd import BUSYBOX_REF, Dockerd

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"<!-- quickstart:begin -->\n```sh\n(.*?)```\n<!-- quickstart:end -->", flags=re.DOTALL
)


def quickstart_script() -> str:
    found = BLOCK.search((ROOT / "README.md").read_text())
    assert found, "README.md has no quickstart block"
    return found.group(1)


def test_readme_quick_start_runs_as_documented(dockerd: Dockerd, tmp_path: Path) -> None:
    dockerd.docker("tag", BUSYBOX_REF, "busybox:latest")  # the README's `busybox`
    (tmp_path / "demo").mkdir()
    shutil.copy2(ROOT / "demo" / "print_webhook.py", tmp_path / "demo")
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "DOCKER_HOST": dockerd.host,
        "DOCKER_CONFIG": dockerd.env["DOCKER_CONFIG"],
    }
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    with out_file.open("w") as stdout, err_file.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", "-e", "-c", quickstart_script()],
            cwd=tmp_path,
            env=env,
            stdout=stdout,  # files, not pipes: background jobs must not hold the test up
            stderr=stderr,
            start_new_session=True,  # its background jobs can be ended with it, whatever happens
        )
        try:
            process.wait(timeout=180)
        finally:
            end_group(process.pid)
    out, err = out_file.read_text(), err_file.read_text()
    assert process.returncode == 0, out[-3000:] + err[-3000:]
    assert re.search(r"\[webhook\] \[CRITICAL\] privileged-container", out), out
    assert re.search(r"^intact: \d+ events", out, flags=re.MULTILINE), out
    assert re.search(r'docktrail_alerts_total\{rule="privileged-container"', out), out
    assert "priv-test" in out.split("intact:")[0]  # alerts and timeline name it
    assert "ok: docktrail.yaml" in out  # validate names the file it found
    assert re.search(r"^[1-9][0-9]*$", out, flags=re.MULTILINE), out  # the explorer shows it
    assert '"docktrail running"' in (tmp_path / "docktrail.log").read_text()


def end_group(pgid: int) -> None:
    """The script's leftovers (webhook, service) when it failed before its own `kill`."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
