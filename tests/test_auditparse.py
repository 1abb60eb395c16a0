"""Tests for listener.sources.auditparse (auditd log parsing and event assembly)."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from listener.sources.auditparse import (
    AuditAssembler,
    AuditEvent,
    Malformed,
    parse_time_ns,
    read_audit_file,
    read_audit_files,
    rotation_order,
)
from listener.sources.auditparse import fields as auditparse_fields
from listener.sources.auditparse import files as auditparse_files
from tests.shared_data import DATA, require_shared

GS = "\x1d"


def hexs(text: str) -> str:
    return text.encode().hex().upper()


def feed_all(text: str, window_secs: float = 2.0) -> tuple[list[AuditEvent], AuditAssembler]:
    """Feed a snippet line by line (split on "\\n" only: splitlines() would split on \\x1d)."""
    asm = AuditAssembler("snippet", window_secs)
    events: list[AuditEvent] = []
    for lineno, line in enumerate(text.split("\n"), 1):
        events += asm.feed(line, lineno)
    events += asm.flush_all()
    return events, asm


def line_count(path: Path) -> int:
    data = path.read_bytes()
    if path.name.endswith(".gz") or data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def read_all(path: Path) -> tuple[list[AuditEvent], list[Malformed], AuditAssembler]:
    asm = AuditAssembler(str(path))
    items = list(read_audit_file(path, assembler=asm))
    events = [i for i in items if isinstance(i, AuditEvent)]
    bad = [i for i in items if isinstance(i, Malformed)]
    return events, bad, asm


def assert_accounted(path: Path) -> list[AuditEvent]:
    """Every line is a record of an emitted event, a Malformed entry, or blank."""
    events, bad, asm = read_all(path)
    records = sum(len(e.records) for e in events)
    assert records + len(bad) + asm.blank == line_count(path), path
    assert asm.counters == {
        "records": records,
        "events": len(events),
        "malformed": len(bad),
        "blank": asm.blank,
    }
    lines = sorted(r.line for e in events for r in e.records) + [m.line for m in bad]
    assert len(set(lines)) == len(lines), "a line was used twice"
    return events


SYSCALL = (
    "type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 a0=55 a1=56 "
    "a2=57 a3=1 items=1 ppid=10 pid=11 auid={auid} uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 "
    'sgid=0 fsgid=0 tty=pts0 ses=3 comm="docker" exe="/usr/bin/docker" key={key}'
)


def syscall(stamp: str, auid: int = 1000, key: str = '"docker-cli"') -> str:
    return SYSCALL.format(stamp=stamp, auid=auid, key=key)


# ----------------------------------------------------------------------------- values


def test_time_is_exact_integer_nanoseconds() -> None:
    assert parse_time_ns("1795346502.569") == 1_795_346_502_569_000_000
    assert parse_time_ns("1.000000001") == 1_000_000_001
    assert parse_time_ns("17953465x2.569") is None
    assert parse_time_ns("1795346502") is None
    (event,), _ = feed_all(syscall("1795346502.569:15428"))
    assert (event.time_ns, event.serial, event.id) == (
        1_795_346_502_569_000_000,
        15428,
        "1795346502.569:15428",
    )


def test_hex_proctitle_is_decoded_to_argv() -> None:
    title = "\x00".join(["sh", "-c", "echo 1 > /x; exec docker"])
    (event,), _ = feed_all(f"type=PROCTITLE msg=audit(1.000:1): proctitle={hexs(title)}")
    assert event.proctitle == ["sh", "-c", "echo 1 > /x; exec docker"]
    # lower-case hex occurs in the wild (LAUREL's record-syscall-nullkey.txt)
    (event,), _ = feed_all(f"type=PROCTITLE msg=audit(1.000:1): proctitle={hexs('ls').lower()}")
    assert event.proctitle == ["ls"]
    (event,), _ = feed_all('type=PROCTITLE msg=audit(1.000:1): proctitle="whoami"')
    assert event.proctitle == ["whoami"]


def test_quoted_values_are_literal_and_null_stays() -> None:
    text = (
        'type=PATH msg=audit(1.000:1): item=0 name="414243" inode=5 nametype=NORMAL\n'
        "type=PATH msg=audit(1.000:1): item=1 name=(null) inode=6 nametype=UNKNOWN\n"
        f"type=PATH msg=audit(1.000:1): item=2 name={hexs('/tmp/a b')} inode=7\n"
        "type=CWD msg=audit(1.000:1): cwd=?"
    )
    (event,), _ = feed_all(text)
    assert [p["name"] for p in event.paths] == ["414243", "(null)", "/tmp/a b"]
    assert event.paths[0]["inode"] == "5"  # numbers are never hex-decoded
    assert event.cwd == "?"


def test_only_encodable_fields_are_decoded() -> None:
    # TIME_ADJNTPVAL's old/new are numbers that happen to be valid hex
    (event,), _ = feed_all("type=TIME_ADJNTPVAL msg=audit(1.000:1): op=freq old=1234 new=-5")
    assert event.records[0].fields == {"op": "freq", "old": "1234", "new": "-5"}
    # odd-length or non-hex stays as written
    (event,), _ = feed_all("type=CWD msg=audit(1.000:1): cwd=ABC")
    assert event.cwd == "ABC"


def test_keys_none_one_and_several_hex_joined() -> None:
    (event,), _ = feed_all(syscall("1.000:1", key="(null)"))
    assert event.key == []
    (event,), _ = feed_all(syscall("1.000:1"))
    assert event.key == ["docker-cli"]
    (event,), _ = feed_all(syscall("1.000:1", key=hexs("docker\x01exec")))
    assert event.key == ["docker", "exec"]


def test_auid_unset_is_none_and_names_come_from_enriched() -> None:
    enriched = f'{GS}ARCH=x86_64 SYSCALL=execve AUID="unset" UID="root"'
    (event,), _ = feed_all(syscall("1.000:1", auid=4294967295) + enriched)
    assert event.auid is None
    assert event.uid == 0
    assert event.auid_name is None
    assert event.uid_name == "root"
    assert event.ses == 3 and event.pid == 11 and event.ppid == 10 and event.tty == "pts0"


# ----------------------------------------------------------------------------- formats


def test_enriched_part_is_kept_apart() -> None:
    line = syscall("1.000:1", auid=1001) + f'{GS}ARCH=x86_64 SYSCALL=execve AUID="alice" UID="root"'
    (event,), _ = feed_all(line)
    rec = event.records[0]
    assert rec.enriched == {"ARCH": "x86_64", "SYSCALL": "execve", "AUID": "alice", "UID": "root"}
    assert "AUID" not in rec.fields and rec.fields["auid"] == "1001"
    assert rec.fields["key"] == "docker-cli"
    assert (event.auid, event.auid_name) == (1001, "alice")


def test_enriched_braces_and_quoted_spaces() -> None:
    text = (
        f"type=SOCKADDR msg=audit(1.000:1): saddr=0100{GS}SADDR={{ fam=local path=/run/x }}\n"
        f'type=SYSCALL msg=audit(1.000:1): syscall=42 auid=7{GS}AUID="Jane Doe" UID="root"'
    )
    (event,), _ = feed_all(text)
    assert event.records[0].enriched == {"SADDR": "{ fam=local path=/run/x }"}
    assert event.records[1].enriched == {"AUID": "Jane Doe", "UID": "root"}
    assert event.auid_name == "Jane Doe"


def test_node_prefix_is_part_of_the_event_identity() -> None:
    text = "\n".join(
        [
            "node=web1 " + syscall("5.000:9"),
            'node=web2 type=CWD msg=audit(5.000:9): cwd="/b"',
            'node=web1 type=CWD msg=audit(5.000:9): cwd="/a"',
            "node=web1 type=EOE msg=audit(5.000:9): ",
        ]
    )
    events, _ = feed_all(text)
    by_node = {e.node: e for e in events}
    assert set(by_node) == {"web1", "web2"}
    assert by_node["web1"].types == ["SYSCALL", "CWD", "EOE"]
    assert by_node["web1"].cwd == "/a"
    assert by_node["web2"].cwd == "/b"


def test_nested_msg_fields_are_parsed() -> None:
    line = (
        "type=USER_ACCT msg=audit(1615113648.981:15220): pid=9460 uid=1000 auid=1000 ses=1 "
        'msg=\'op=PAM:accounting grantors=pam_permit acct="user" exe="/usr/bin/sudo" '
        f'hostname=? addr=? terminal=/dev/pts/1 res=success\'{GS}UID="user" AUID="user"'
    )
    (event,), _ = feed_all(line)
    fields = event.records[0].fields
    assert fields["op"] == "PAM:accounting"
    assert fields["acct"] == "user" and fields["exe"] == "/usr/bin/sudo"
    assert fields["res"] == "success" and fields["terminal"] == "/dev/pts/1"
    assert fields["pid"] == "9460" and "msg" not in fields
    # hex inside the nested list is decoded too; the outer (kernel) uid wins a clash
    line = f"type=USER_CMD msg=audit(1.000:2): pid=1 uid=0 msg='uid=99 cmd={hexs('ls -l')} res=1'"
    (event,), _ = feed_all(line)
    assert event.records[0].fields["cmd"] == "ls -l"
    assert event.records[0].fields["uid"] == "0"


def test_selinux_avc_words_are_kept() -> None:
    line = (
        "type=AVC msg=audit(1.000:3): avc:  denied  { read write } for  pid=5 "
        'comm="cat" name="f" scontext=u:r:t:s0 tclass=file permissive=0'
    )
    (event,), _ = feed_all(line)
    fields = event.records[0].fields
    assert fields["_text"] == "avc: denied { read write } for"
    assert fields["comm"] == "cat" and fields["tclass"] == "file"


def test_quoted_value_with_spaces_and_equals_signs() -> None:
    line = (
        'type=AVC msg=audit(1.000:4): apparmor="STATUS" info="same as current, skipping" '
        'profile="unconfined" name="x=y" subj==unconfined success="yes"'
    )
    (event,), _ = feed_all(line)
    fields = event.records[0].fields
    assert fields["info"] == "same as current, skipping"
    assert fields["name"] == "x=y" and fields["subj"] == "=unconfined"
    assert fields["success"] == "yes"


# ----------------------------------------------------------------------------- EXECVE


def test_execve_plain_and_hex_arguments() -> None:
    text = "\n".join(
        [
            syscall("1.000:7"),
            f'type=EXECVE msg=audit(1.000:7): argc=3 a0="docker" a1="run" a2={hexs("echo hi")}',
        ]
    )
    (event,), _ = feed_all(text)
    assert event.argv == ["docker", "run", "echo hi"]


def test_execve_split_arguments_across_records() -> None:
    long_arg = "é" + "x" * 30 + "—end"  # multi-byte characters on both sides of a cut
    raw = long_arg.encode().hex().upper()
    # cut inside the two-byte "é" (bytes 0-1) and inside the three-byte "—" (bytes 32-34)
    cut1, cut2 = 1, 33
    text = "\n".join(
        [
            syscall("2.000:8"),
            f'type=EXECVE msg=audit(2.000:8): argc=3 a0="echo" a1_len={len(long_arg.encode())} '
            f"a1[0]={raw[: cut1 * 2]}",
            f"type=EXECVE msg=audit(2.000:8):  a1[1]={raw[cut1 * 2 : cut2 * 2]}",
            f"type=EXECVE msg=audit(2.000:8):  a1[2]={raw[cut2 * 2 :]}",
            'type=EXECVE msg=audit(2.000:8): a2="tail"',
            "type=EOE msg=audit(2.000:8):",
        ]
    )
    (event,), _ = feed_all(text)
    assert event.argv == ["echo", long_arg, "tail"]


def test_execve_with_a_lost_record_stops_at_the_gap() -> None:
    text = 'type=EXECVE msg=audit(1.000:9): argc=4 a0="a" a1="b" a3="d"'
    (event,), _ = feed_all(text)
    assert event.argv == ["a", "b"]


def test_event_without_execve_has_no_argv() -> None:
    (event,), _ = feed_all(syscall("1.000:1"))
    assert event.argv is None and event.proctitle is None and event.paths == []


# ----------------------------------------------------------------------------- assembly


def test_interleaved_events_are_separated() -> None:
    text = "\n".join(
        [
            syscall("10.000:1"),
            syscall("10.000:2", auid=2000),
            'type=EXECVE msg=audit(10.000:1): argc=1 a0="one"',
            'type=EXECVE msg=audit(10.000:2): argc=1 a0="two"',
            "type=EOE msg=audit(10.000:2): ",
            'type=CWD msg=audit(10.000:1): cwd="/"',
            "type=EOE msg=audit(10.000:1): ",
        ]
    )
    events, asm = feed_all(text)
    assert [(e.serial, e.argv, e.auid) for e in events] == [
        (2, ["two"], 2000),  # close order: serial 2 saw its EOE first
        (1, ["one"], 1000),
    ]
    assert events[1].types == ["SYSCALL", "EXECVE", "CWD", "EOE"]
    assert asm.open_events == 0


def test_eoe_closes_at_once() -> None:
    asm = AuditAssembler()
    assert asm.feed(syscall("10.000:1"), 1) == []
    (event,) = asm.feed("type=EOE msg=audit(10.000:1): ", 2)
    assert event.serial == 1 and asm.open_events == 0


def test_no_eoe_closed_by_the_window() -> None:
    asm = AuditAssembler(window_secs=2.0)
    assert asm.feed(syscall("100.000:1"), 1) == []
    assert asm.feed('type=CWD msg=audit(100.000:1): cwd="/"', 2) == []
    assert asm.feed(syscall("101.500:2"), 3) == []  # 1.5 s later: still open
    assert asm.feed(syscall("102.000:3"), 4) == []  # exactly 2 s: not "more than"
    closed = asm.feed(syscall("102.001:4"), 5)
    assert [(e.serial, len(e.records)) for e in closed] == [(1, 2)]
    assert [e.serial for e in asm.flush_all()] == [2, 3, 4]
    assert asm.flush_all() == []


def test_no_eoe_closed_by_flush_all_and_flush() -> None:
    asm = AuditAssembler()
    asm.feed(syscall("100.000:1"), 1)
    asm.feed(syscall("100.500:2"), 2)
    asm.feed(syscall("101.000:3"), 3)
    assert asm.flush(older_than_ns=parse_time_ns("100.000") or 0) == []  # strictly older
    closed = asm.flush(older_than_ns=parse_time_ns("100.600") or 0)
    assert [e.serial for e in closed] == [1, 2]
    assert [e.serial for e in asm.flush_all()] == [3]
    assert asm.counters["events"] == 3


def test_window_closes_in_time_order_even_when_lines_are_not() -> None:
    asm = AuditAssembler(window_secs=1.0)
    asm.feed(syscall("50.300:2"), 1)
    asm.feed(syscall("50.100:1"), 2)
    closed = asm.feed(syscall("60.000:3"), 3)
    assert [e.serial for e in closed] == [1, 2]


def test_record_type_that_looks_standalone_is_not_closed_early() -> None:
    # LOGIN, then the SYSCALL of the write to /proc/self/loginuid: one event
    text = "\n".join(
        [
            "type=LOGIN msg=audit(3.000:5): pid=1 uid=0 old-auid=4294967295 auid=1001 "
            "tty=(none) old-ses=4294967295 ses=222 res=1",
            syscall("3.000:5", auid=1001),
        ]
    )
    (event,), _ = feed_all(text)
    assert event.types == ["LOGIN", "SYSCALL"]
    assert event.auid == 1001


def test_daemon_records_close_at_once() -> None:
    asm = AuditAssembler()
    (event,) = asm.feed(
        "type=DAEMON_START msg=audit(1.000:7243): op=start ver=3.0.9 format=enriched "
        "auid=4294967295 pid=1 uid=0 ses=4294967295 res=success",
        1,
    )
    assert event.types == ["DAEMON_START"] and asm.open_events == 0


def test_malformed_lines_do_not_lose_neighbours() -> None:
    text = "\n".join(
        [
            syscall("7.000:1"),
            "garbage without the marker",
            'type=CWD msg=audit(7.000:1): cwd="/srv"',
            "type=PATH msg=audit(7.000:1",  # truncated header
            "",
            'type=PATH msg=audit(7.000:1): item=0 name="/usr/bin/docker" mode=0100755',
            'type=PATH msg=audit(7.000:1): item=1 name="/usr/lib/ld-linux',  # cut in a quote
            'type=CWD msg=audit(7.000:x1): cwd="/"',  # garbled serial
            "type=PATH msg=audit(7.000:1): item=2 natype=PATH msg=audit(7.000:1): item=3",
            "type=CWD msg=audit(7.000:1): cwd=\x00\x00\x00",
            "\ufffd\udcff binary \x07 junk",
            "type=EOE msg=audit(7.000:1): ",
            "type=EOE msg=audit(7.000:1): ",  # its event is closed already
            "   ",
        ]
    )
    events, asm = feed_all(text)
    (event,) = events
    assert event.types == ["SYSCALL", "CWD", "PATH", "EOE"]
    assert event.cwd == "/srv" and event.argv is None
    reasons = {m.line: m.reason for m in asm.malformed}
    assert sorted(reasons) == [2, 4, 7, 8, 9, 10, 11, 13]
    assert "truncated" in reasons[4] and "unterminated quote" in reasons[7]
    assert "two records" in reasons[9] and "NUL" in reasons[10]
    assert "EOE without" in reasons[13]
    assert asm.blank == 2
    assert asm.records + asm.counters["malformed"] + asm.blank == 14
    assert all(len(m.text) <= 200 for m in asm.malformed)
    str(asm.malformed)  # printable: no lone surrogates left in the text


def test_malformed_text_is_cut() -> None:
    asm = AuditAssembler("p")
    asm.feed("x" * 5000, 3)
    (bad,) = asm.malformed
    assert (bad.path, bad.line, len(bad.text)) == ("p", 3, 200)


# ----------------------------------------------------------------------------- files


def test_read_file_orders_by_first_line_and_survives_bad_bytes(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = [
        syscall("20.000:2"),
        syscall("20.000:1"),
        'type=CWD msg=audit(20.000:2): cwd="/two"',
        "type=EOE msg=audit(20.000:1): ",
        "not a record",
        'type=CWD msg=audit(20.000:1): cwd="/late"',  # after its EOE: its own event
    ]
    path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\x00garbage\n")
    items = list(read_audit_file(path))
    summary = [(type(i).__name__, i.line) for i in items]
    assert summary == [
        ("AuditEvent", 1),
        ("AuditEvent", 2),
        ("Malformed", 5),
        ("AuditEvent", 6),
        ("Malformed", 7),
    ]
    first = items[0]
    assert isinstance(first, AuditEvent)
    assert first.cwd == "/two" and first.path == str(path)
    assert_accounted(path)


def test_gzip_is_detected_by_magic_bytes(tmp_path: Path) -> None:
    text = syscall("30.000:1") + '\ntype=CWD msg=audit(30.000:1): cwd="/gz"\n'
    path = tmp_path / "audit.log.1"  # no .gz suffix on purpose
    path.write_bytes(gzip.compress(text.encode()))
    (event,) = list(read_audit_file(path))
    assert isinstance(event, AuditEvent)
    assert event.cwd == "/gz" and event.types == ["SYSCALL", "CWD"]


def test_rotated_set_is_read_oldest_first(tmp_path: Path) -> None:
    names = ["audit.log", "audit.log.1", "audit.log.2.gz", "audit.log.10"]
    for serial, name in enumerate(names, 1):
        data = (syscall(f"40.000:{serial}") + "\n").encode()
        (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    order = [p.name for p in rotation_order(tmp_path / n for n in names)]
    assert order == ["audit.log.10", "audit.log.2.gz", "audit.log.1", "audit.log"]
    events = [e for e in read_audit_files(tmp_path) if isinstance(e, AuditEvent)]
    assert [(Path(e.path or "").name, e.serial, e.line) for e in events] == [
        ("audit.log.10", 4, 1),
        ("audit.log.2.gz", 3, 1),
        ("audit.log.1", 2, 1),
        ("audit.log", 1, 1),
    ]


# ----------------------------------------------------------------------------- corpus


def corpus_files() -> list[Path]:
    root = require_shared("corpus", "laurel-audit-samples")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".json")
    assert len(files) >= 40 and any(p.parent.name == "tree" for p in files)
    return files


def test_every_corpus_file_parses_and_every_line_is_accounted() -> None:
    for path in corpus_files():
        assert_accounted(path)


def test_argv_matches_laurel_output() -> None:
    compared = 0
    for path in corpus_files():
        expected = path.with_suffix(".json")
        if path.suffix != ".txt" or not expected.exists():
            continue
        events = {e.id: e for e in read_all(path)[0]}
        for line in expected.read_text().splitlines():
            laurel = json.loads(line)
            event = events[laurel["ID"]]
            assert event.node == laurel.get("NODE")
            assert event.argv == laurel.get("EXECVE", {}).get("ARGV"), laurel["ID"]
            assert event.proctitle == laurel.get("PROCTITLE", {}).get("ARGV"), laurel["ID"]
            compared += "EXECVE" in laurel
    assert compared >= 4


def test_corpus_long_execve_is_reassembled() -> None:
    path = require_shared("corpus", "laurel-audit-samples", "record-execve-long.txt")
    (event,) = read_all(path)[0]
    argv = event.argv
    assert argv is not None and argv[0] == "/bin/echo" and len(argv[1]) == 8192
    assert argv[1][0] == "b" and argv[1][-1] == "g"


def test_corpus_reordered_eoe_and_interleaving() -> None:
    path = require_shared("corpus", "laurel-audit-samples", "shell-proc-trace-reordered.txt")
    events = assert_accounted(path)
    assert len(events) == 9 and all(e.types[-1] == "EOE" for e in events)
    assert [e.key for e in events if e.argv == ["grep", "baz"]] == [[]]


# ----------------------------------------------------------------------------- scenario-a


@pytest.fixture(scope="module")
def scenario_events() -> list[AuditEvent]:
    return assert_accounted(DATA / "scenario-a" / "audit.log.gz")  # ../shared's, gzipped


def test_scenario_docker_import_event(scenario_events: list[AuditEvent]) -> None:
    wanted = ["docker", "import", "-", "registry.internal/base/busybox:1.36"]
    (event,) = [e for e in scenario_events if "docker-cli" in e.key and e.argv == wanted]
    assert event.auid == 1001 and event.uid == 0
    assert event.enriched_field("AUID") == "alice" and event.auid_name == "alice"
    assert event.exe == "/usr/local/bin/docker" and event.cwd == "/"
    assert event.proctitle is not None and event.proctitle[-4:] == wanted


def test_scenario_one_event_per_docker_cli_call(scenario_events: list[AuditEvent]) -> None:
    cli = [e for e in scenario_events if "docker-cli" in e.key]
    # import, tag, 4 runs, import, run, exec, 30 churn runs, stop, rm
    assert len(cli) == 41
    assert all(e.argv is not None and e.argv[0] == "docker" for e in cli)
    assert {e.auid_name for e in cli} == {"alice", "bob"}
    churn = [e for e in cli if e.argv and "--rm" in e.argv]
    assert len(churn) == 30 and {e.auid_name for e in churn} == {"bob"}
    assert [e.line for e in scenario_events] == sorted(e.line for e in scenario_events)


# ----------------------------------------------------------------------------- lazy fields

NAMES = ["key", "auid", "exe", "comm", "name", "nametype", "a0", "a1", "argc", "cwd", "pid"]
NAMES += ["proctitle", "msg", "_text", "AUID", "UID", "EUID", "SYSCALL", "SADDR", "op", "res"]


def test_lazy_answers_match_the_parsed_fields() -> None:
    """get, enriched_get, field and all_keys answer without parsing what they can skip:
    the answers are those of the parsed dicts, on every record of the captures."""
    paths = [DATA / "scenario-a" / "audit.log.gz", *corpus_files()]
    checked = 0
    for path in paths:
        lazy = [i for i in read_audit_file(path) if isinstance(i, AuditEvent)]
        parsed = [i for i in read_audit_file(path) if isinstance(i, AuditEvent)]
        for event, twin in zip(lazy, parsed, strict=True):
            for rec, full in zip(event.records, twin.records, strict=True):
                fields, enriched = full.fields, full.enriched  # parsed first
                assert [rec.get(n) for n in NAMES] == [fields.get(n) for n in NAMES]
                assert [rec.enriched_get(n) for n in NAMES] == [enriched.get(n) for n in NAMES]
            keys = {k for r in twin.records for k in (r.fields.get("key") or "").split("\x01")}
            assert event.all_keys() == keys - {"", "(null)"}
            assert [event.field(n) for n in NAMES] == [twin.field(n) for n in NAMES]
            assert event == twin
            checked += len(event.records)
    assert checked > 41_000


def test_a_lazy_record_is_checked_when_fed() -> None:
    """A line is reported as cut exactly when parsing it on the spot fails, and an
    accepted record parses, later, to what parsing it on the spot gives."""
    rng = random.Random(4)
    alphabet = ["a", "=", '"', " ", "'", "{", "}", "\t", "x=", ' k="', '" ', "6162", "é", GS]
    types = ["USER_CMD", "EXECVE", "SYSCALL", "PATH", "CWD"]
    cut = 0
    for n in range(1, 4001):
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.5:  # around the anchors of the cached tails
            body = f" item=0 name={body} dev=fe:00 auid={body}"
        rtype = rng.choice(types)
        raw, gs, extra = body.partition(GS)
        try:  # what parsing every field at once gives
            expected = (
                auditparse_fields.record_fields(rtype, raw),
                auditparse_fields.enriched_fields(extra) if gs else {},
            )
        except auditparse_fields.Truncated:
            expected = None
        events, asm = feed_all(f"type={rtype} msg=audit(1.000:{n}):{body}")
        if expected is None:
            assert [m.reason for m in asm.malformed] == ["unterminated quote (truncated line?)"]
            cut += 1
        else:
            assert not asm.malformed
            (rec,) = events[0].records
            assert (rec.fields, rec.enriched) == expected, body
    assert 100 < cut < 3000


def test_feeding_lines_at_once_or_one_by_one_is_the_same() -> None:
    text = (DATA / "scenario-a" / "audit.log.gz").read_bytes()
    lines = gzip.decompress(text).decode().split("\n")[:5000]
    lines[10:10] = ["junk", "", 'type=PATH msg=audit(1795346502.569:15428): name="cut']
    one, asm1 = feed_all("\n".join(lines))
    many = AuditAssembler("snippet")
    events = many.feed_lines(lines[:2000], 1) + many.feed_lines(lines[2000:], 2001)
    events += many.flush_all()
    assert events == one and many.counters == asm1.counters
    assert many.malformed == asm1.malformed


def test_reading_in_blocks_keeps_the_file_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = gzip.decompress((DATA / "scenario-a" / "audit.log.gz").read_bytes())
    lines = source.split(b"\n")[:3000]
    lines[5:5] = [b"junk \xff", b"type=EOE msg=audit(1.000:1): "]
    path = tmp_path / "audit.log"
    path.write_bytes(b"\n".join(lines))
    whole = list(read_audit_file(path))
    monkeypatch.setattr(auditparse_files, "_READ_HINT", 200)  # a handful of lines per block
    assert list(read_audit_file(path)) == whole
    assert [i.line for i in whole] == sorted(i.line for i in whole)


def test_cached_texts_give_every_record_its_own_fields() -> None:
    lines = [*(syscall(f"1.00{n}:{n}") for n in (1, 2))]
    lines += [f'type=EXECVE msg=audit(1.00{n}:{n}): argc=2 a0="docker" a1="ps"' for n in (1, 2)]
    lines += [f'type=CWD msg=audit(1.00{n}:{n}): cwd="/"' for n in (1, 2)]
    first, second = feed_all("\n".join(lines))[0]
    for rtype in ("SYSCALL", "EXECVE", "CWD"):
        rec = first.first(rtype)
        assert rec is not None
        rec.fields["changed"] = "yes"
        rec.enriched["CHANGED"] = "yes"
    assert all("changed" not in r.fields and "CHANGED" not in r.enriched for r in second.records)
    assert second.argv == ["docker", "ps"] and second.key == ["docker-cli"]
