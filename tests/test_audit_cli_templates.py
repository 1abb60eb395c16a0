"""A docker CLI call converted from the template of an earlier call of the same kind
(`listener.sources.auditd.templates`) is exactly what the full conversion gives: the
event, its Who, the CLI call the correlator gets; the ids, times and process ids its
own. Failed name look-ups are tried again, a re-read passwd file is seen, secrets stay
redacted, and odd process ids take the full path."""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from typing import Any

import pytest

from config.errors import InputError
from config.models import AuditdConfig
from listener.sources.auditd import names as names_module
from listener.sources.auditd.convert import AuditConverter, Converted
from listener.sources.auditparse import AuditAssembler, AuditEvent

SCENARIO = Path(__file__).parent / "data" / "scenario-a" / "audit.log.gz"
GS = "\x1d"


def cli_lines() -> list[list[str]]:
    """The lines of every docker CLI execve event of scenario-a, one list per event."""
    by_stamp: dict[str, list[str]] = {}
    with gzip.open(SCENARIO, "rt", encoding="utf-8", errors="surrogateescape") as log:
        for line in log:
            stamp = line.partition("msg=audit(")[2].partition(")")[0]
            by_stamp.setdefault(stamp, []).append(line.rstrip("\n"))
    return [lines for lines in by_stamp.values() if any('key="docker-cli"' in x for x in lines)]


def restamped(lines: list[str], round_: int, serial: int) -> list[str]:
    """`lines` as a later call of the same command: new stamp, serial, pid and ppid."""
    stamp = f"{1795400000 + round_}.{serial % 1000:03d}:{serial}"
    out = []
    for line in lines:
        line = re.sub(r"msg=audit\([^)]*\)", f"msg=audit({stamp})", line)
        line = re.sub(r" pid=\d+", f" pid={40000 + serial}", line)
        line = re.sub(r" ppid=\d+", f" ppid={30000 + serial}", line)
        out.append(line)
    return out


def assembled(lines: list[str]) -> AuditEvent:
    asm = AuditAssembler("t")
    (event,) = [e for e in asm.feed_lines(lines) + asm.flush_all() if isinstance(e, AuditEvent)]
    return event


def converter(tmp_path: Path, **settings: Any) -> AuditConverter:
    config = AuditdConfig(log_file=tmp_path / "audit.log", start_at="end", **settings)
    return AuditConverter(config, "h1")


def shape(item: Converted | None) -> dict[str, Any]:
    """Everything a conversion hands on, fields set included."""
    assert item is not None and item.call is not None
    call, found = item.call, {}
    found["call"] = (call.time_ns, call.audit_id, call.call, call.event_id, call.who.model_dump())
    found["who_set"] = call.who.model_fields_set
    if item.event is not None:
        event = item.event
        found["event"] = event.model_dump()
        found["sets"] = [m.model_fields_set for m in (event, event.actor, event.who, event.why)]
        found["same_who"] = event.who is call.who
    return found


@pytest.mark.parametrize("cli_events", ["all", "changes", "none"])
def test_every_scenario_call_from_a_template_is_what_the_full_conversion_gives(
    tmp_path: Path, cli_events: str
) -> None:
    kinds = cli_lines()
    assert len(kinds) == 41
    warm = converter(tmp_path, passwd_file=None, cli_events=cli_events)
    serial = 1
    for round_ in range(3):
        for lines in kinds:
            event = assembled(restamped(lines, round_, serial))
            fresh = converter(tmp_path, passwd_file=None, cli_events=cli_events)
            assert shape(warm.convert_bounded(event)) == shape(fresh.convert_bounded(event))
            serial += 1
    # the first two calls of each kind in full (the second makes the template), the third
    # from its template
    assert warm.templates.hits == len(kinds)
    assert warm.counters.calls == 3 * len(kinds) and warm.counters.kept == 3 * len(kinds)


SYSCALL = (
    "type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 items=1 "
    "ppid={ppid} pid={pid} auid=1000 uid=1000 gid=1000 euid=1000 egid=1000 tty=pts0 ses=3 "
    'comm="docker" exe="/usr/bin/docker" key="docker-cli"'
)


def call_lines(n: int, argv: list[str], pid: int = 0) -> list[str]:
    stamp = f"1795400000.{n:03d}:{n}"
    args = " ".join(f'a{i}="{a}"' for i, a in enumerate(argv))
    return [
        SYSCALL.format(stamp=stamp, ppid=n + 100, pid=pid or n + 200),
        f"type=EXECVE msg=audit({stamp}): argc={len(argv)} {args}",
        f'type=CWD msg=audit({stamp}): cwd="/home/alice"',
    ]


@pytest.fixture
def passwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A passwd file the converter looks at again at once when an id is missing."""
    monkeypatch.setattr(names_module, "RECHECK_SECS", 0.0)
    return tmp_path / "passwd"


def test_a_user_added_while_running_is_named_as_without_templates(
    tmp_path: Path, passwd: Path
) -> None:
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    conv = converter(tmp_path, passwd_file=passwd, group_file=None)
    first = conv.convert_bounded(assembled(call_lines(1, ["docker", "ps"])))
    assert first is not None and first.event is not None and first.event.who.login is None
    passwd.write_text("root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    second = conv.convert_bounded(assembled(call_lines(2, ["docker", "ps"])))
    assert second is not None and second.event is not None
    assert (second.event.who.login, second.event.who.user) == ("alice", "alice")
    conv.convert_bounded(assembled(call_lines(3, ["docker", "ps"])))  # makes the template
    fourth = conv.convert_bounded(assembled(call_lines(4, ["docker", "ps"])))
    assert conv.templates.hits == 1 and fourth is not None and fourth.event is not None
    assert fourth.event.who.login == "alice" and fourth.event.who.pid == 204


def test_a_passwd_file_read_again_names_the_next_call_anew(tmp_path: Path, passwd: Path) -> None:
    passwd.write_text("alice:x:1000:1000::/home/alice:/bin/sh\n")
    conv = converter(tmp_path, passwd_file=passwd, group_file=None)
    conv.convert_bounded(assembled(call_lines(1, ["docker", "ps"])))
    passwd.write_text("bob:x:1000:1000::/home/bob:/bin/sh\n")
    assert conv.names.user(4242) is None  # a miss reads the changed file again
    later = conv.convert_bounded(assembled(call_lines(2, ["docker", "ps"])))
    assert later is not None and later.event is not None
    assert later.event.who.login == "bob" and conv.templates.hits == 0


def test_secrets_stay_redacted_in_calls_made_from_a_template(tmp_path: Path) -> None:
    argv = ["docker", "run", "-e", "DB_PASSWORD=hunter2", "--name", "db", "postgres:16"]
    conv = converter(tmp_path, passwd_file=None)
    made = [conv.convert_bounded(assembled(call_lines(n, argv))) for n in (1, 2, 3)]
    assert conv.templates.hits == 1  # the third
    for item in made:
        assert item is not None and item.event is not None
        assert "hunter2" not in item.event.model_dump_json()
        assert "hunter2" not in repr(item.call)
    fresh = converter(tmp_path, passwd_file=None).convert_bounded(assembled(call_lines(3, argv)))
    assert shape(made[2]) == shape(fresh)


def with_template(tmp_path: Path, argv: list[str]) -> AuditConverter:
    """A converter that has made the template of `argv` (two calls, 1 and 2)."""
    conv = converter(tmp_path, passwd_file=None)
    for n in (1, 2):
        conv.convert_bounded(assembled(call_lines(n, argv)))
    return conv


def test_a_kind_seen_once_makes_no_template(tmp_path: Path) -> None:
    conv = converter(tmp_path, passwd_file=None)
    for n, name in enumerate(("a", "b", "c", "a", "a"), 1):  # a call of each, then a again
        conv.convert_bounded(assembled(call_lines(n, ["docker", "rm", name])))
    assert conv.templates.hits == 1  # the third call of `rm a`


def test_a_process_id_beyond_exact_json_integers_takes_the_full_path(tmp_path: Path) -> None:
    conv = with_template(tmp_path, ["docker", "ps"])
    huge = assembled(call_lines(3, ["docker", "ps"], pid=(1 << 53) + 1))
    item = conv.convert_bounded(huge)
    assert conv.templates.hits == 0
    assert shape(item) == shape(converter(tmp_path, passwd_file=None).convert_bounded(huge))
    assert item is not None and item.event is not None and item.event.who.pid == (1 << 53) + 1


def test_another_login_or_rule_key_is_another_kind(tmp_path: Path) -> None:
    conv = with_template(tmp_path, ["docker", "ps"])
    other = [line.replace("auid=1000", "auid=1001") for line in call_lines(3, ["docker", "ps"])]
    item = conv.convert_bounded(assembled(other))
    assert conv.templates.hits == 0
    assert item is not None and item.event is not None and item.event.who.auid == 1001


def test_a_call_from_a_template_still_has_its_time_checked(tmp_path: Path) -> None:
    conv = with_template(tmp_path, ["docker", "ps"])
    late = assembled(call_lines(3, ["docker", "ps"]))
    late.time_ns = 8 * 10**18  # past 2200: no stamp the parser reads gives it
    late.path = "audit.log"
    with pytest.raises(InputError, match=r"outside 1970\.\.2200") as raised:
        conv.convert_bounded(late)
    assert conv.templates.hits == 1 and conv.counters.malformed == 1
    assert raised.value.path == "audit.log"
