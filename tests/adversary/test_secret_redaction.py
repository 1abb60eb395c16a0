"""Command-line secrets never reach the trail, `query`, `timeline` or alerts (issue 19.3).

Real captured-file ingest into a real SQLite trail; the secrets are then
looked for in the database file's bytes and in every output.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from listener.cli import main
from listener.redact import MARKER, Redactor, load_key

SECRETS = {
    "hunter2",
    "tok123",
    "sk999",
    "s3cretpw",
    "pw2",
    "npm123",
    "hpass",
    "imgpass",
    "pw4",
    "lab9",
    "pw5short",
    "dbpw7",
    "curlpw8",
}


def _arg(value: str) -> str:
    if value.isascii() and value.isprintable() and " " not in value and '"' not in value:
        return f'"{value}"'
    return value.encode().hex().upper()


def cli_call(serial: int, argv: Sequence[str], time_s: float) -> list[str]:
    stamp = f"{time_s:.3f}:{serial}"
    args = " ".join(f"a{i}={_arg(a)}" for i, a in enumerate(argv))
    title = "\0".join(argv).encode().hex().upper()
    return [
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 a0=1 "
        f"a1=2 a2=3 a3=4 items=2 ppid=10 pid={serial} auid=1000 uid=1000 gid=1000 euid=1000 "
        f'suid=1000 fsuid=1000 egid=1000 sgid=1000 fsgid=1000 tty=pts0 ses=3 comm="docker" '
        f'exe="/usr/bin/docker" key="docker-cli"',
        f"type=EXECVE msg=audit({stamp}): argc={len(argv)} {args}",
        f'type=CWD msg=audit({stamp}): cwd="/home/alice"',
        f"type=PROCTITLE msg=audit({stamp}): proctitle={title}",
        f"type=EOE msg=audit({stamp}): ",
    ]


def file_write(serial: int, title: Sequence[str], time_s: float) -> list[str]:
    stamp = f"{time_s:.3f}:{serial}"
    proctitle = "\0".join(title).encode().hex().upper()
    return [
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=257 success=yes exit=3 "
        f"a0=ffffff9c a1=1 a2=241 a3=1b6 items=2 ppid=1 pid={serial} auid=1000 uid=0 gid=0 "
        f'euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="tee" '
        f'exe="/usr/bin/tee" key="docker"',
        f'type=CWD msg=audit({stamp}): cwd="/root"',
        f'type=PATH msg=audit({stamp}): item=0 name="/etc/docker/" inode=1 dev=08:01 '
        f"mode=040755 ouid=0 ogid=0 rdev=00:00 nametype=PARENT cap_fp=0 cap_fi=0 cap_fe=0 "
        f"cap_fver=0 cap_frootid=0",
        f'type=PATH msg=audit({stamp}): item=1 name="/etc/docker/daemon.json" inode=2 '
        f"dev=08:01 mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype=CREATE cap_fp=0 cap_fi=0 "
        f"cap_fe=0 cap_fver=0 cap_frootid=0",
        f"type=PROCTITLE msg=audit({stamp}): proctitle={proctitle}",
        f"type=EOE msg=audit({stamp}): ",
    ]


T0 = 1_700_000_000
CALLS: list[list[str]] = [
    ["docker", "run", "-d", "-e", "DB_PASSWORD=hunter2", "-e", "PLAIN=visible",
     "--env=API_TOKEN=tok123", "-eAWS_SECRET_ACCESS_KEY=sk999", "-p", "8080:80",
     "--name", "web", "nginx:1.27"],
    ["docker", "login", "-u", "alice", "-p", "s3cretpw", "registry.example"],
    ["docker", "login", "--password=pw2", "registry.example"],
    ["docker", "login", "-ppw5short", "registry.example"],
    ["docker", "build", "--build-arg", "NPM_TOKEN=npm123", "--build-arg", "MODE=prod", "."],
    ["docker", "-H", "tcp://bob:hpass@10.0.0.1:2376", "ps"],
    ["docker", "pull", "https://carol:imgpass@registry.example/team/app:1"],
    ["docker", "exec", "-u", "1000:1000", "web", "mysql", "-pdbpw7", "-e", "select 1"],
    ["docker", "exec", "web", "sh", "-c", "curl -u ops:curlpw8 http://h/x | sh"],
]  # fmt: skip


def engine_create(name: str, time_s: int) -> dict[str, Any]:
    return {
        "Type": "container",
        "Action": "create",
        "Actor": {
            "ID": "ab" * 32,
            "Attributes": {"name": name, "image": "nginx:1.27", "db_password": "lab9"},
        },
        "scope": "local",
        "time": time_s,
        "timeNano": time_s * 1_000_000_000 + 200_000_000,
    }


def engine_exec_start(time_s: int) -> dict[str, Any]:
    """The Engine names an exec's command in its action: `exec_start: CMD`."""
    event = engine_create("web", time_s)
    event["Action"] = "exec_start: mysql -pdbpw7 -e select 1"
    event["Actor"]["Attributes"] = {"name": "web", "image": "nginx:1.27", "execID": "e" * 64}
    return event


@pytest.fixture
def trail_dir(tmp_path: Path) -> Path:
    lines: list[str] = []
    for serial, argv in enumerate(CALLS, start=1):
        lines += cli_call(serial, argv, T0 + serial)
    lines += file_write(50, ["bash", "-c", "DB_PASSWORD=pw4 tee /etc/docker/daemon.json"], T0 + 20)
    (tmp_path / "audit.log").write_text("\n".join(lines) + "\n")
    engine = [engine_create("web", T0 + 1), engine_exec_start(T0 + 8)]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in engine))
    result = cli(
        tmp_path, "ingest", "--host", "h1", "--audit-log", str(tmp_path / "audit.log"),
        "--docker-events", str(tmp_path / "events.jsonl"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "malformed 0" in result.stdout
    return tmp_path


def cli(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", str(tmp_path / "t.db"), *args], catch_exceptions=False)


def leaked(text: str | bytes) -> set[str]:
    data = text.encode() if isinstance(text, str) else text
    return {secret for secret in SECRETS if secret.encode() in data}


def test_no_secret_in_the_trail_file(trail_dir: Path) -> None:
    for path in trail_dir.glob("t.db*"):
        assert leaked(path.read_bytes()) == set(), path


def test_no_secret_in_query_timeline_or_alerts(trail_dir: Path) -> None:
    outputs = [
        cli(trail_dir, "query", "--format", "json").stdout,
        cli(trail_dir, "query").stdout,
        cli(trail_dir, "timeline", "web").stdout,
        cli(trail_dir, "alerts", "--format", "json").stdout,
    ]
    assert "web" in outputs[2] and MARKER in outputs[2]
    for output in outputs:
        assert leaked(output) == set()


def events(trail_dir: Path) -> list[dict[str, Any]]:
    result = cli(trail_dir, "query", "--format", "json")
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_names_kept_and_values_fingerprinted_with_the_trail_key(trail_dir: Path) -> None:
    key_file = trail_dir / "t.redact-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    redactor = Redactor(load_key(key_file))
    cli_events = {
        e["attributes"]["audit_id"]: e for e in events(trail_dir) if e["type"] == "docker-cli"
    }
    run = cli_events[f"{T0 + 1}.000:1"]
    fp = redactor.fingerprint
    assert run["attributes"]["argv"] == [
        "docker", "run", "-d", "-e", f"DB_PASSWORD={fp('hunter2')}", "-e", "PLAIN=visible",
        f"--env=API_TOKEN={fp('tok123')}", f"-eAWS_SECRET_ACCESS_KEY={fp('sk999')}", "-p",
        "8080:80", "--name", "web", "nginx:1.27",
    ]  # fmt: skip
    assert f"DB_PASSWORD={fp('hunter2')}" in run["who"]["command"]
    login = cli_events[f"{T0 + 2}.000:2"]["attributes"]["argv"]
    assert login == ["docker", "login", "-u", "alice", "-p", fp("s3cretpw"), "registry.example"]
    build = cli_events[f"{T0 + 5}.000:5"]["attributes"]["argv"]
    assert f"NPM_TOKEN={fp('npm123')}" in build and "MODE=prod" in build
    remote = cli_events[f"{T0 + 6}.000:6"]["attributes"]["argv"]
    assert remote[2] == f"tcp://bob:{fp('hpass')}@10.0.0.1:2376"
    # Keyed: another key gives other fingerprints; the value cannot be guessed offline.
    assert Redactor(b"k" * 32).fingerprint("hunter2") != fp("hunter2")
    assert fp("hunter2").startswith(MARKER) and len(fp("hunter2")) == len(MARKER) + 12


def test_file_writer_command_line_and_labels_redacted(trail_dir: Path) -> None:
    redactor = Redactor(load_key(trail_dir / "t.redact-key"))
    by_type = {e["type"]: e for e in events(trail_dir)}
    write = by_type["daemon-file"]
    assert f"DB_PASSWORD={redactor.fingerprint('pw4')}" in write["who"]["command"]
    create = next(e for e in events(trail_dir) if e["action"] == "create")
    assert create["attributes"]["labels"]["db_password"] == redactor.fingerprint("lab9")


def test_a_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "t.redact-key"
    load_key(key)
    key.chmod(0o644)
    (tmp_path / "e.jsonl").write_text("")
    result = cli(tmp_path, "ingest", "--docker-events", str(tmp_path / "e.jsonl"))
    assert result.exit_code == 2
    assert "readable by others" in result.output


_SAME = None  # expected: the argv unchanged
ARGV_FORMS: list[tuple[list[str], list[str] | None]] = [
    (["docker", "run", "-p", "80:80", "img", "login"], _SAME),
    (["docker", "run", "-e", "HOME", "img"], _SAME),
    (["docker", "run", "--env", "GITHUB_TOKEN=x y z", "img"],
     ["docker", "run", "--env", "GITHUB_TOKEN=#", "img"]),
    (["sh", "-c", "export PGPASSWORD=abc; psql"], ["sh", "-c", "export PGPASSWORD=#; psql"]),
    (["docker", "login", "--password-stdin", "-u", "a"], _SAME),
    (["docker", "login", "--password", "x"], ["docker", "login", "--password", "#"]),
    (["docker", "swarm", "join", "--token", "SWMTKN-1-x", "10.0.0.1:2377"],
     ["docker", "swarm", "join", "--token", "#", "10.0.0.1:2377"]),
    (["docker", "swarm", "join", "--token=SWMTKN-1-x"], ["docker", "swarm", "join", "--token=#"]),
    (["docker", "pull", "nginx:1@sha256:" + "a" * 64], _SAME),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "expected"), ARGV_FORMS)
def test_argv_forms(argv: list[str], expected: list[str] | None) -> None:
    expected = argv if expected is None else expected
    redactor = Redactor(b"k" * 32)
    redacted = redactor.argv(argv)
    marked = [part.replace(MARKER, "#") for part in redacted]
    assert [_shorten(part) for part in marked] == expected
    assert redactor.argv(redacted) == redacted  # idempotent: a redacted value stays


def _shorten(part: str) -> str:
    """`#` + 12 hex digits -> `#`."""
    out, index = [], 0
    while index < len(part):
        if part[index] == "#":
            out.append("#")
            index += 13
        else:
            out.append(part[index])
            index += 1
    return "".join(out)


def test_an_investigator_matches_a_known_value_with_the_key(trail_dir: Path) -> None:
    result = CliRunner().invoke(
        main, ["--db", str(trail_dir / "t.db"), "fingerprint"], input="hunter2\nwrong\n"
    )
    assert result.exit_code == 0, result.output
    known, other = result.stdout.split()
    run = next(e for e in events(trail_dir) if e["action"] == "run")
    assert f"DB_PASSWORD={known}" in run["attributes"]["argv"]
    assert other != known and other.startswith(MARKER)


def test_the_password_flags_of_programs_run_through_docker_are_redacted(trail_dir: Path) -> None:
    stored = events(trail_dir)
    argvs = [e["attributes"]["argv"] for e in stored if "argv" in e.get("attributes", {})]
    mysql = next(argv for argv in argvs if "mysql" in argv)
    assert mysql[3] == "1000:1000"  # a user:group, not a secret
    assert mysql[6].startswith("-p" + MARKER)
    detail = next(e["attributes"]["action_detail"] for e in stored if e["action"] == "exec_start")
    assert detail.startswith("mysql -p" + MARKER)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["redis-cli", "-a", "pw", "get", "k"], ["redis-cli", "-a", None, "get", "k"]),
        (["sshpass", "-p", "pw", "ssh", "h"], ["sshpass", "-p", None, "ssh", "h"]),
        (["curl", "-u", "ops:pw", "http://h"], ["curl", "-u", "ops:" + "*", "http://h"]),
        (["docker", "run", "-p", "8080:80", "-u", "1:2", "img"], None),
        (["docker", "run", "img", "mysql", "-p"], None),
    ],
)
def test_program_password_flags(argv: list[str], expected: list[str | None] | None) -> None:
    redacted = Redactor(b"k" * 32).argv(argv)
    if expected is None:
        assert redacted == argv
        return
    for got, want in zip(redacted, expected, strict=True):
        if want is None:
            assert got.startswith(MARKER)
        elif want.endswith("*"):
            assert got.startswith(want[:-1] + MARKER)
        else:
            assert got == want
