"""`docktrail serve`: the real server as a subprocess, read over HTTP and in headless chromium."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from listener.cli import main
from tests.notify_servers import WebhookServer
from tests.shared_data import DATA, missing_component

SCENARIO = DATA / "scenario-a"
CONFIG = 'rules:\n  untrusted-image:\n    trusted: ["registry.internal/*"]\n'
HOSTILE = "<img src=x onerror=alert(1)>pwn"
TOKEN = "s3cret-token-for-tests"


def _hostile_events(path: Path) -> None:
    """A privileged container whose name is markup: rendered, it must stay text."""
    base = 1795346600 * 10**9
    lines = []
    for offset, action in enumerate(("create", "start")):
        lines.append(
            {
                "Type": "container",
                "Action": action,
                "Actor": {"ID": "f" * 64, "Attributes": {"name": HOSTILE, "image": "evil:1"}},
                "scope": "local",
                "time": (base + offset) // 10**9,
                "timeNano": base + offset,
            }
        )
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "docktrail.yaml").write_text(CONFIG)
    hostile = tmp / "hostile.jsonl"
    _hostile_events(hostile)
    args = ["-c", str(tmp / "docktrail.yaml"), "--db", str(tmp / "t.db"), "ingest"]
    for events in (SCENARIO / "events.jsonl", hostile):
        command = [*args, "--docker-events", str(events)]
        if events != hostile:
            command += ["--audit-log", str(SCENARIO / "audit.log.gz")]
        result = CliRunner().invoke(main, command, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return tmp


class Server:
    def __init__(self, trail: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config, db = str(trail / "docktrail.yaml"), str(trail / "t.db")
        command = [sys.executable, "-m", "listener", "-c", config, "--db", db,
                   "serve", "--port", str(self.port), *args]  # fmt: skip
        self.process = subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stderr=subprocess.PIPE, text=True
        )

    def wait(self, headers: dict[str, str] | None = None) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()  # type: ignore[union-attr]
            try:
                fetch(self.url + "/-/versions.json", headers)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise AssertionError("serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def server(trail: Path) -> Iterator[Server]:
    before = hashlib.sha256((trail / "t.db").read_bytes()).hexdigest()
    running = Server(trail)
    running.wait()
    yield running
    running.stop()
    assert hashlib.sha256((trail / "t.db").read_bytes()).hexdigest() == before


def get_json(server: Server, path: str) -> Any:
    status, body = fetch(server.url + path)
    assert status == 200, body
    return json.loads(body)


def test_tables_json_and_facets(server: Server) -> None:
    events = get_json(server, "/trail/events.json?_shape=array&_size=max")
    assert len(events) == 284
    alerts = get_json(server, "/trail/alerts.json?_facet=rule&_facet=severity&_size=0")
    rules = {f["value"]: f["count"] for f in alerts["facet_results"]["rule"]["results"]}
    assert rules["privileged-container"] >= 1
    facets = get_json(server, "/trail/events.json?_size=0")["facet_results"]
    assert {"type", "action", "who_login", "source", "host"} <= set(facets)


def test_canned_queries(server: Server) -> None:
    timeline = get_json(server, "/trail/container_timeline.json?container=web-1&_shape=array")
    assert timeline[0]["who_login"] == "alice"
    assert {"create", "start", "destroy"} <= {row["action"] for row in timeline}
    alice = get_json(server, "/trail/user_activity.json?user=bob&since=&until=&_shape=array")
    assert alice and all("bob" in (r["who_login"], r["who_user"]) for r in alice)
    none = get_json(
        server, "/trail/user_activity.json?user=bob&since=2030-01-01&until=&_shape=array"
    )
    assert none == []
    privileged = get_json(server, "/trail/privileged_runs.json?_shape=array")
    assert {"debug-priv"} <= {row["actor_name"] for row in privileged}
    untrusted = get_json(server, "/trail/untrusted_images.json?_shape=array")
    assert any("cryptominer" in (r["image"] or "") or r["container"] == "miner" for r in untrusted)
    execs = get_json(server, "/trail/execs.json?_shape=array")
    assert any(row["actor_name"] == "web-1" for row in execs)
    by_rule = get_json(server, "/trail/alerts_by_rule.json?_shape=array")
    assert (
        sum(row["alerts"] for row in by_rule)
        == get_json(server, "/trail/alerts.json?_size=0")["filtered_table_rows_count"]
    )
    for name in ("unattributed_changes", "gaps", "deliveries"):
        assert isinstance(get_json(server, f"/trail/{name}.json?_shape=array"), list)


def test_sql_secrets_and_downloads_are_refused(server: Server) -> None:
    for path in (
        "/trail.json?sql=select+*+from+deliveries",
        "/trail/events?_where=1=1",
        "/trail.db",
        "/trail/source_state",
        "/trail/delivery_attempts.json",
        "/trail/_migrations.json",
    ):
        status, _ = fetch(server.url + path)
        assert status == 403, path
    listed = {table["name"] for table in get_json(server, "/trail.json")["tables"]}
    assert listed == {"events", "alerts", "checkpoints"}
    assert [db["name"] for db in get_json(server, "/-/databases.json")] == ["trail"]
    deliveries = get_json(server, "/trail/deliveries.json")
    assert "last_error" not in deliveries["columns"] and "url" not in deliveries["columns"]


def test_timeline_page_escapes_names_from_the_trail(server: Server) -> None:
    status, page = fetch(server.url + "/-/timeline")
    assert status == 200
    assert "284 events and" in page
    assert HOSTILE not in page
    assert "&lt;img src=x onerror=alert(1)&gt;pwn" in page


def test_a_token_guards_every_page(trail: Path) -> None:
    guarded = Server(trail, env={"DOCKTRAIL_SERVE_TOKEN": TOKEN})
    try:
        guarded.wait({"Authorization": f"Bearer {TOKEN}"})
        assert fetch(guarded.url + "/trail/events.json")[0] == 401
        assert fetch(guarded.url + "/-/timeline", {"Authorization": "Bearer wrong"})[0] == 401
        basic = base64.b64encode(f"auditor:{TOKEN}".encode()).decode()
        assert fetch(guarded.url + "/-/timeline", {"Authorization": f"Basic {basic}"})[0] == 200
    finally:
        guarded.stop()


def test_a_public_address_needs_a_token_or_a_proxy(trail: Path) -> None:
    command = ["-c", str(trail / "docktrail.yaml"), "--db", str(trail / "t.db"),
               "serve", "--host", "0.0.0.0"]  # fmt: skip
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2
    assert "DOCKTRAIL_SERVE_TOKEN" in result.stderr


def _png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Rows of RGB(A) pixels of an 8-bit, non-interlaced PNG (what chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[x] = (line[x] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, channels, rows


def _count_colour(path: Path, rgb: tuple[int, int, int]) -> int:
    width, channels, rows = _png_pixels(path)
    target = bytes(rgb)
    return sum(row[x * channels : x * channels + 3] == target for row in rows for x in range(width))


def test_timeline_page_in_headless_chromium(server: Server, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing_component("chromium is not installed (apt-get install chromium)")
        return
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1100,900"]  # fmt: skip
    url = server.url + "/-/timeline"
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    assert "Events and alerts over time" in dom
    assert "284 events and" in dom
    assert "privileged-container" in dom
    assert "onerror" not in dom.replace("&lt;img src=x onerror=alert(1)&gt;", "")
    assert "<img" not in dom  # the hostile name stayed text
    shot = tmp_path / "timeline.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=120,
                   check=True)  # fmt: skip
    events_blue = _count_colour(shot, (0x2B, 0x6C, 0xB0))
    alerts_red = _count_colour(shot, (0xC5, 0x30, 0x30))
    assert events_blue > 500, events_blue  # the bars were drawn, not just the text
    assert alerts_red > 200, alerts_red


def _copy_trail(trail: Path, into: Path) -> Path:
    import sqlite3

    into.mkdir()
    (into / "docktrail.yaml").write_text(CONFIG)
    shutil.copy(trail / "t.key", into / "t.key")
    source = sqlite3.connect(trail / "t.db")
    target = sqlite3.connect(into / "t.db")
    source.backup(target)
    source.close()
    target.close()
    return into


def test_a_trail_being_written_is_served_as_it_grows(trail: Path, tmp_path: Path) -> None:
    live = _copy_trail(trail, tmp_path / "live")
    running = Server(live)
    try:
        running.wait()
        assert get_json(running, "/trail/events.json?_size=0")["filtered_table_rows_count"] == 284
        later = tmp_path / "later.jsonl"
        later.write_text((trail / "hostile.jsonl").read_text().replace("1795346600", "1795346700"))
        command = ["-c", str(live / "docktrail.yaml"), "--db", str(live / "t.db"),
                   "ingest", "--docker-events", str(later)]  # fmt: skip
        result = CliRunner().invoke(main, command, catch_exceptions=False)
        assert result.exit_code == 0, result.output  # serving never blocks the writer
        assert get_json(running, "/trail/events.json?_size=0")["filtered_table_rows_count"] == 286
    finally:
        running.stop()


def test_immutable_mode_serves_a_copy(trail: Path, tmp_path: Path) -> None:
    copy = _copy_trail(trail, tmp_path / "copy")
    running = Server(copy, "--immutable")
    try:
        running.wait()
        rows = get_json(running, "/trail/alerts_by_rule.json?_shape=array")
        assert any(row["rule"] == "privileged-container" for row in rows)
        assert fetch(running.url + "/trail.json?sql=select+1")[0] == 403
    finally:
        running.stop()


def test_timeline_page_takes_a_period(server: Server) -> None:
    events = get_json(server, "/trail/events.json?_shape=array&_size=max&_sort=time_ns")
    middle = events[len(events) // 2]["time_ns"]
    until = middle // 10**9
    status, page = fetch(server.url + f"/-/timeline?until={until}")
    assert status == 200
    before = sum(e["time_ns"] < until * 10**9 for e in events)
    assert 0 < before < len(events)
    assert f"{before} events and" in page
    status, page = fetch(server.url + "/-/timeline?since=2099-01-01T00:00:00Z")
    assert status == 200 and "No events in this period." in page
    status, page = fetch(server.url + "/-/timeline?since=%3Cb%3Eyesterday")
    assert status == 400 and "cannot read time" in page and "<b>yesterday" not in page


def test_deliveries_show_names_never_urls(
    trail: Path, tmp_path: Path, webhook_server: WebhookServer
) -> None:
    """Destinations with secrets in their URLs, one that works and one that is down."""
    import sqlite3

    from tests.notify_servers import free_port

    secret_hook = webhook_server.json_url().replace("json://", "json://ops:Pa55w0rdX@")
    secret_hook += "?token=qq81Zmx0Y"
    down = f"json://ops:Dn7Secret@127.0.0.1:{free_port()}/hook?token=zz42Down"
    live = tmp_path / "notified"
    live.mkdir()
    (live / "docktrail.yaml").write_text(
        CONFIG + "notifications:\n  destinations:\n"
        f"    - name: secops\n      url: '{secret_hook}'\n      min_severity: critical\n"
        f"    - name: pager\n      url: '{down}'\n      min_severity: critical\n"
    )
    command = ["-c", str(live / "docktrail.yaml"), "--db", str(live / "t.db"), "ingest",
               "--docker-events", str(SCENARIO / "events.jsonl"),
               "--audit-log", str(SCENARIO / "audit.log.gz"), "--notify", "live"]  # fmt: skip
    result = CliRunner().invoke(main, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert webhook_server.wait_for(1, 20)
    with sqlite3.connect(live / "t.db") as db:
        assert db.execute("SELECT count(*) FROM delivery_attempts").fetchone()[0] > 0
    running = Server(live)
    try:
        running.wait()
        rows = get_json(running, "/trail/deliveries.json?_shape=array")
        assert {row["destination"] for row in rows} == {"secops", "pager"}
        assert {"sent"} <= {row["status"] for row in rows}
        pages = ["/", "/trail", "/trail.json", "/trail/deliveries", "/trail/deliveries.csv",
                 "/-/timeline", "/-/metadata.json", "/-/settings.json",
                 "/trail/events.json?_size=max", "/trail/alerts.json?_size=max",
                 "/trail/checkpoints.json"]  # fmt: skip
        for page in pages:
            status, body = fetch(running.url + page)
            assert status == 200, page
            for secret in ("Pa55w0rdX", "qq81Zmx0Y", "Dn7Secret", "zz42Down"):
                assert secret not in body, (page, secret)
    finally:
        running.stop()
