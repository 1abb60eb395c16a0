"""Declared deployment intents (issue 16), live: `docktrail run` (a real process,
auditd enabled, rules on, the intent endpoint on) follows the session dockerd
while real logins, seen by the private auditd of `tests.test_audit_live`, deploy:

* an intent declared over the HTTP endpoint, then a matching `docker run` by the
  declared login (why from the intent) and by another one (`intent-mismatch`);
* a deployment that outlives its expiry (`expired-deployment` at that moment,
  with no periodic sweep to help), from an intent and from an `audit.expires` label;
* an undeclared deployment under the `undeclared-deployment` policy;
* bad requests to the endpoint: a clear 4xx each, and nothing stored.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests import test_audit_live
from tests.dockerd import BUSYBOX_REF, Dockerd, wait_until
from tests.test_audit_live import Person, PrivateAuditd, as_login
from tests.test_run_scenario_live import ScenarioService, started

audit_daemon = test_audit_live.audit_daemon
engine = test_audit_live.engine
people = test_audit_live.people

TOKEN = "it-token-0123456789abcdef"
Json = dict[str, Any]


class IntentService(ScenarioService):
    """The scenario service with the intent endpoint on an ephemeral port and the policy on."""

    def __init__(self, tmp_path: Path, daemon: Dockerd, audit_log: Path) -> None:
        super().__init__(tmp_path, daemon, audit_log)
        token = tmp_path / "intent.token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        self.config.write_text(
            self.config.read_text()
            + "  undeclared-deployment:\n    enabled: true\n    names: ['it-*']\n"
            + f"intents:\n  api:\n    enabled: true\n    port: 0\n    token_file: {token}\n"
            + "    max_body_bytes: 4096\n"
        )
        self.port = 0

    def start(self) -> IntentService:
        super().start()
        record = self.wait_for_log(lambda r: r["message"] == "intent endpoint listening")
        self.port = int(record["port"])
        return self

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Json]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def declare(self, **fields: object) -> str:
        status, answer = self.post("/v1/intents", json.dumps(fields).encode(), _auth())
        assert status == 201, answer
        return str(answer["id"])


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, audit_daemon: PrivateAuditd, engine: Dockerd
) -> Iterator[IntentService]:
    yield from started(
        IntentService(tmp_path_factory.mktemp("intents-live"), engine, audit_daemon.log_file)
    )


def stored(service: IntentService, **where: Any) -> list[Any]:
    with SQLiteTrail(service.trail_path) as trail:
        return list(trail.query(EventFilter(**where)))


def create_of(service: IntentService, name: str) -> Any:
    found: list[Any] = []

    def seen() -> bool:
        found[:] = stored(service, source="docker", type="container", action="create",
                          container=name)  # fmt: skip
        return bool(found)

    assert wait_until(seen, 20), service.log_text()
    return found[0]


def alerts_on(service: IntentService, rule: str, container: str, timeout: float = 10) -> list[Json]:
    found: list[Json] = []

    def seen() -> bool:
        found[:] = [a for a in service.json_lines("alerts", "-f", f"rule={rule}")
                    if a["container"] == container]  # fmt: skip
        return bool(found)

    wait_until(seen, timeout)
    return found


def run(person: Person, daemon: Dockerd, name: str, *options: str) -> None:
    as_login(person, daemon, "run", "-d", "--name", name, "--stop-timeout", "1", *options,
             BUSYBOX_REF, "sleep", "300")  # fmt: skip


def test_intent_over_http_explains_the_declared_logins_run(
    service: IntentService, engine: Dockerd, people: dict[str, Person]
) -> None:
    alice = people["dt-alice"]
    intent_id = service.declare(
        name="it-web-*", who=alice.name, why="release 2026.12.1", ticket="CHG-1234", expires="7d"
    )
    declared = stored(service, source="docktrail", type="intent")
    assert [(e.action, e.actor.id, e.who.method) for e in declared][-1:] == [
        ("declare", intent_id, "api-token")
    ]
    run(alice, engine, "it-web-1")
    created = create_of(service, "it-web-1")
    assert (created.who.login, created.who.method) == (alice.name, "auditd-cli")
    assert created.why.source == "intent"
    assert (created.why.reason, created.why.ticket) == ("release 2026.12.1", "CHG-1234")
    assert created.why.expires is not None
    assert created.attributes["intent"]["id"] == intent_id
    assert created.attributes["intent"]["who"] == alice.name
    time.sleep(1.5)  # the rules of the create
    assert alerts_on(service, "intent-mismatch", "it-web-1", timeout=0) == []
    assert alerts_on(service, "undeclared-deployment", "it-web-1", timeout=0) == []
    timeline = service.cli("timeline", "it-web-1")
    assert timeline.returncode == 0, timeline.stderr
    assert f"intent   {intent_id} declared for {alice.name}" in timeline.stdout
    assert "why      release 2026.12.1 [CHG-1234]" in timeline.stdout
    listed = service.json_lines("intent", "list")
    assert intent_id in {row["id"] for row in listed}


def test_a_run_by_another_login_than_declared_raises_intent_mismatch(
    service: IntentService, engine: Dockerd, people: dict[str, Person]
) -> None:
    alice, bob = people["dt-alice"], people["dt-bob"]
    intent_id = service.declare(name="it-api-*", who=alice.name, why="api rollout")
    run(bob, engine, "it-api-1")
    created = create_of(service, "it-api-1")
    assert created.who.login == bob.name and created.why.source == "intent"
    found = alerts_on(service, "intent-mismatch", "it-api-1")
    assert len(found) == 1, service.log_text()
    assert found[0]["severity"] == "high"
    assert found[0]["details"]["declared_who"] == alice.name
    assert found[0]["details"]["evidence_who"] == bob.name
    assert found[0]["details"]["intent"] == intent_id


def test_a_closed_intent_no_longer_explains_and_the_deploy_is_undeclared(
    service: IntentService, engine: Dockerd, people: dict[str, Person]
) -> None:
    alice = people["dt-alice"]
    intent_id = service.declare(name="it-job-*", who=alice.name, why="batch job")
    closed = service.cli("intent", "close", intent_id)
    assert closed.returncode == 0, closed.stderr
    run(alice, engine, "it-job-1")
    created = create_of(service, "it-job-1")
    assert created.why.source is None and "intent" not in created.attributes
    found = alerts_on(service, "undeclared-deployment", "it-job-1")
    assert len(found) == 1, service.log_text()
    # a why label is a declared why too: no alert
    run(alice, engine, "it-lab-1", "--label", "audit.why=lab test")
    assert create_of(service, "it-lab-1").why.source == "label"
    time.sleep(1.5)
    assert alerts_on(service, "undeclared-deployment", "it-lab-1", timeout=0) == []


def test_a_deployment_running_past_its_expiry_raises_expired_deployment_then(
    service: IntentService, engine: Dockerd, people: dict[str, Person]
) -> None:
    alice = people["dt-alice"]
    service.declare(name="it-tmp-*", who=alice.name, why="short test", expires="8s")
    run(alice, engine, "it-tmp-1")
    assert create_of(service, "it-tmp-1").why.source == "intent"
    soon = (datetime.now(UTC) + timedelta(seconds=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    run(alice, engine, "it-lbl-1", "--label", f"audit.expires={soon}", "--label", "audit.why=x")
    create_of(service, "it-lbl-1")
    # The periodic sweep runs every 900 s: only the expiry timer can find these in time.
    for name, source in (("it-tmp-1", "intent"), ("it-lbl-1", "label")):
        found = alerts_on(service, "expired-deployment", name, timeout=30)
        assert len(found) == 1, service.log_text()
        assert found[0]["details"]["expires_from"] == source
    expired = stored(service, source="docktrail", type="container", action="expired")
    assert {e.actor.name for e in expired} >= {"it-tmp-1", "it-lbl-1"}


def _raw(port: int, request: bytes) -> tuple[int, Json]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def test_bad_requests_get_a_clear_4xx_and_store_nothing(service: IntentService) -> None:
    before = stored(service, source="docktrail", type="intent")
    good = {"name": "it-bad-*", "who": "dt-alice", "why": "never stored"}
    body = json.dumps(good).encode()
    cases: list[tuple[str, int, tuple[int, Json]]] = [
        ("no token", 401, service.post("/v1/intents", body, {"Content-Type": "application/json"})),
        ("bad token", 401, service.post("/v1/intents", body, _auth("x" * 24))),
        ("malformed JSON", 400, service.post("/v1/intents", b'{"who": "dt-alice",', _auth())),
        ("not an object", 400, service.post("/v1/intents", b"[1, 2]", _auth())),
        ("unknown field", 422,
         service.post("/v1/intents", json.dumps({**good, "admin": True}).encode(), _auth())),
        ("no pattern", 422,
         service.post("/v1/intents", json.dumps({"who": "a", "why": "b"}).encode(), _auth())),
        ("expiry in the past", 422,
         service.post("/v1/intents", json.dumps({**good, "expires": "2020-01-01"}).encode(),
                      _auth())),
        ("close of no intent", 404,
         service.post("/v1/intents/in-000000000000/close", b"", _auth())),
        ("huge body", 413, _raw(service.port,
         b"POST /v1/intents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
         + b"\r\nContent-Type: application/json\r\nContent-Length: 10000000\r\n\r\n")),
    ]  # fmt: skip
    for what, expected, (status, answer) in cases:
        assert status == expected, (what, answer)
        assert isinstance(answer.get("error"), str) and answer["error"], what
    time.sleep(0.5)
    assert stored(service, source="docktrail", type="intent") == before
    assert TOKEN not in service.log_text()
    assert "x" * 24 not in service.log_text()
