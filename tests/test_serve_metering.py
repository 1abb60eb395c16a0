"""`docktrail serve` shows the metering snapshots beside the trail, read-only and escaped.

The real server runs as a subprocess on a trail and its `<trail>.metering.db`
written by the metering store itself; read over HTTP.
"""

from __future__ import annotations

import hashlib
import html
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from listener.cli import main
from listener.posture.metering import MeteringStore, Sample
from tests.shared_data import missing_component
from tests.test_serve import CONFIG, HOSTILE, Server, _hostile_events, fetch, get_json

MIB = 1024 * 1024


def _sample(name: str, time_ns: int, memory_mib: int, cpu: float | None) -> Sample:
    cid = hashlib.sha256(name.encode()).hexdigest()
    return Sample(time_ns, cid, name, 1, 1, 2, cpu, memory_mib * MIB, 0, 3, 10, 20, False)


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small trail and snapshots: an older one (with a container gone since), the last."""
    tmp = tmp_path_factory.mktemp("serve-metering")
    (tmp / "docktrail.yaml").write_text(CONFIG)
    _hostile_events(tmp / "hostile.jsonl")
    args = ["-c", str(tmp / "docktrail.yaml"), "--db", str(tmp / "t.db"), "ingest"]
    result = CliRunner().invoke(main, [*args, "--docker-events", str(tmp / "hostile.jsonl")])
    assert result.exit_code == 0, result.output
    now = time.time_ns()
    earlier = now - 300 * 10**9
    store = MeteringStore(tmp / "t.metering.db")
    try:
        store.add([_sample("web", earlier, 900, 1.0), _sample("gone", earlier, 5000, 99.0)], 30)
        last = [
            _sample("web", now, 300, 5.0),
            _sample("db", now - 2 * 10**9, 100, 80.0),
            _sample(HOSTILE, now - 10**9, 200, None),
        ]
        store.add(last, 30)
    finally:
        store.close()
    return tmp


@pytest.fixture(scope="module")
def server(trail: Path) -> Iterator[Server]:
    snapshots = trail / "t.metering.db"
    before = hashlib.sha256(snapshots.read_bytes()).hexdigest()
    running = Server(trail)
    running.wait()
    yield running
    running.stop()
    assert hashlib.sha256(snapshots.read_bytes()).hexdigest() == before
    assert stat.S_IMODE(snapshots.stat().st_mode) == 0o600


def test_the_last_snapshot_by_memory_and_by_cpu(server: Server) -> None:
    by_memory = get_json(server, "/metering/top_memory.json?_shape=array")
    assert [row["name"] for row in by_memory] == ["web", HOSTILE, "db"]
    assert by_memory[0]["memory_bytes"] == 300 * MIB
    by_cpu = get_json(server, "/metering/top_cpu.json?_shape=array")
    assert [row["name"] for row in by_cpu] == ["db", "web", HOSTILE]
    history = get_json(server, "/metering/container_usage.json?container=web&_shape=array")
    assert [row["memory_bytes"] for row in history] == [300 * MIB, 900 * MIB]


def test_both_databases_are_listed_and_linked(server: Server) -> None:
    names = [db["name"] for db in get_json(server, "/-/databases.json")]
    assert names == ["trail", "metering"]
    assert {t["name"] for t in get_json(server, "/metering.json")["tables"]} == {"samples"}
    status, page = fetch(server.url + "/")
    assert status == 200 and 'href="/metering/top_memory"' in page


def test_snapshots_are_read_only_and_names_stay_text(server: Server) -> None:
    status, _ = fetch(server.url + "/metering.json?sql=delete+from+samples")
    assert status == 400  # Datasette refuses a write before asking permissions
    for path in ("/metering.json?sql=select+1", "/metering.db"):
        status, _ = fetch(server.url + path)
        assert status == 403, path
    for path in ("/metering/top_memory", "/metering/samples"):
        status, page = fetch(server.url + path)
        assert status == 200 and HOSTILE not in page
        assert html.escape(HOSTILE) in page or "&lt;img" in page


def test_top_memory_in_headless_chromium(server: Server, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing_component("chromium is not installed (apt-get install chromium)")
        return
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom"]  # fmt: skip
    url = server.url + "/metering/top_memory"
    dom = subprocess.run([*flags, url], capture_output=True, text=True, timeout=120,
                         check=True).stdout  # fmt: skip
    assert "Top containers by memory" in dom and ">web<" in dom
    assert "onerror" not in dom.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "<img" not in dom  # the hostile name stayed text
