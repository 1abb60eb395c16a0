"""The parser's quick paths give what its slow paths give, on clean and hostile input.

* A line whose text after its tail anchor was fed before takes the quick path of
  `AuditAssembler.feed_lines` (see `auditparse.bodies`); with the caches emptied
  before every line, every line takes the slow path. Both must give the same
  events, records, lazy answers and malformed reports.
* The time of a stamp whose ``SECONDS.FRACTION`` the line before had is reused
  within one `feed_lines` call; fed one line at a time, every stamp is parsed.
* `merged_fields` fills a template for a plain head with the names seen before;
  `path_fields` copies a cached merge; `_pairs` splits a plain text at once: each is
  compared with the generic parse it stands for.
"""

from __future__ import annotations

import gzip
import itertools
import random
from typing import Any

import pytest

from listener.sources.auditparse import AuditAssembler, AuditEvent, assembly, bodies, headers, heads
from listener.sources.auditparse import fields as auditparse_fields
from tests.shared_data import DATA

GS = "\x1d"
NAMES = ["key", "auid", "exe", "comm", "name", "nametype", "a0", "a1", "argc", "cwd", "pid"]
NAMES += ["proctitle", "msg", "_text", "AUID", "UID", "SYSCALL", "item", "inode", "dev", "x"]

SYSCALL = (
    "type=SYSCALL msg=audit({stamp}): arch=c000003e syscall=59 success=yes exit=0 a0=55 a1=56"
    " a2=57 a3=1 items=1 ppid=10 pid={pid} auid=1000 uid=0 gid=0 euid=0 suid=0 fsuid=0"
    ' egid=0 sgid=0 fsgid=0 tty=pts0 ses=3 comm="docker" exe="/usr/bin/docker"'
    f' key="docker-cli"{GS}ARCH=x86_64 SYSCALL=execve AUID="alice" UID="root"'
)
PATH = (
    'type=PATH msg=audit({stamp}): item=0 name="/usr/bin/docker{pid}" inode={pid} dev=fe:00'
    " mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0"
    f' cap_fver=0 cap_frootid=0{GS}OUID="root" OGID="root"'
)
OTHERS = [
    'type=CWD msg=audit({stamp}): cwd="/home/alice"',
    "type=PROCTITLE msg=audit({stamp}): proctitle=646F636B65720070730061",
    'type=EXECVE msg=audit({stamp}): argc=3 a0="docker" a1="ps" a2="-a"',
    "type=BPRM_FCAPS msg=audit({stamp}): fver=0 fp=0 fi=0 fe=0 old_pp=0 pp=0 frootid=0",
]
# Pieces a hostile or cut line may carry, put into the head or the stamp of a line whose
# tail was seen before (the quick path must then see what the slow path sees).
HOSTILE = ["\x00", GS, " msg=audit(1.000:9): ", '"', "'", "{", "}", "\t", "=", "  ", " x",
           ' k="a b', 'v="q"', "é", "\udcff", ":", ".", "):", "(", " key=k2"]  # fmt: skip


def empty_caches() -> None:
    for known in bodies.BODIES.values():
        known.clear()
    headers.PREFIXES.clear()


def lines_for(rng: random.Random, count: int) -> list[str]:
    lines = []
    for n in range(count):
        stamp = f"1700000000.{n // 7 % 1000:03d}:{n // 3}"
        line = rng.choice([SYSCALL, PATH, *OTHERS]).format(stamp=stamp, pid=rng.randint(1, 3))
        if rng.random() < 0.1:
            line = "node=web1 " + line
        if rng.random() < 0.35:
            line = mutated(rng, line)
        lines.append(line)
    return lines


def mutated(rng: random.Random, line: str) -> str:
    """A hostile piece in the head (before the tail anchor), in the stamp, or anywhere."""
    piece = rng.choice(HOSTILE)
    close = line.index("): ") + 2
    where = rng.random()
    if where < 0.5:  # the head
        anchor = line.find(" auid=") if " auid=" in line else line.find(" dev=")
        end = anchor if anchor > close else close + 1
        at = rng.randint(close, end)
    elif where < 0.75:  # the stamp
        at = rng.randint(line.index("audit(") + 6, close - 2)
    else:
        at = rng.randint(0, len(line))
    return line[:at] + piece + line[at:]


def snapshot(events: list[AuditEvent], asm: AuditAssembler) -> list[Any]:
    """What a consumer can see, the lazy answers first (before anything is parsed)."""
    seen: list[Any] = []
    for event in events:
        seen.append((event.id, event.node, event.line, sorted(event.all_keys())))
        seen.append([event.field(n) for n in NAMES])
        for rec in event.records:
            seen.append((rec.type, rec.line, rec.text))
            seen.append([(rec.get(n), rec.enriched_get(n)) for n in NAMES])
            seen.append((list(rec.fields.items()), list(rec.enriched.items())))
    seen.append([(m.line, m.reason, m.text) for m in asm.drain_malformed()])
    seen.append(asm.counters)
    return seen


def feed_quick(lines: list[str]) -> tuple[list[AuditEvent], AuditAssembler]:
    asm = AuditAssembler("quick", 2.0)
    events = asm.feed_lines(lines) + asm.flush_all()
    return events, asm


def feed_slow(lines: list[str]) -> tuple[list[AuditEvent], AuditAssembler]:
    asm = AuditAssembler("quick", 2.0)  # the same path: Malformed entries name it
    events: list[AuditEvent] = []
    for lineno, line in enumerate(lines, 1):
        empty_caches()
        events += asm.feed_lines([line], lineno)
    return events + asm.flush_all(), asm


def quick_hits(lines: list[str]) -> int:
    """Lines of `lines` that take the quick path (no call to record_parts)."""
    calls = itertools.count()
    original = bodies.record_parts

    def counted(*args: Any) -> Any:
        next(calls)
        return original(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(assembly, "record_parts", counted)
        feed_quick(lines)
    return len(lines) - next(calls)


def test_the_quick_path_gives_what_the_slow_path_gives() -> None:
    rng = random.Random(11)
    for _ in range(4):
        lines = lines_for(rng, 1500)
        feed_quick(lines)  # remembers the tails and bodies of the clean lines
        assert quick_hits(lines) > len(lines) // 2
        quick = snapshot(*feed_quick(lines))
        slow = snapshot(*feed_slow(lines))
        assert quick == slow


def test_the_quick_path_on_a_capture() -> None:
    text = gzip.decompress((DATA / "scenario-a" / "audit.log.gz").read_bytes()).decode()
    lines = text.split("\n")[:6000]
    feed_quick(lines)
    assert quick_hits(lines) > len(lines) * 9 // 10
    assert snapshot(*feed_quick(lines)) == snapshot(*feed_slow(lines))


def test_no_second_record_can_straddle_a_tail_anchor() -> None:
    """The quick path looks for ``msg=audit(`` in the head only (see bodies)."""
    for anchor in bodies.ANCHORS.values():
        assert anchor == "" or (anchor[0] == " " and not set(anchor) & {"m", "\x00", GS})


def test_long_texts_take_the_slow_path_every_time() -> None:
    long = OTHERS[0].replace("/home/alice", "/" + "a" * bodies.BODY_MAX)
    lines = [long.format(stamp=f"1.000:{n}") for n in range(3)]
    assert quick_hits(lines) == 0
    assert snapshot(*feed_quick(lines)) == snapshot(*feed_slow(lines))


def test_a_key_in_the_head_of_a_lazy_record_is_a_key() -> None:
    line = PATH.replace("item=0", "key=k1 item=0")
    events, _ = feed_quick([line.format(stamp="1.000:1", pid=1)] * 2)  # the second is quick
    assert [sorted(e.all_keys()) for e in events] == [["k1"]]
    assert events[0].records[1].get("key") == "k1"


def test_the_time_of_a_moment_is_reused_only_for_valid_stamps() -> None:
    stamps = ["1700000000.123:1", "1700000000.123:2", "1700000000.123:x", "1700000000.123:",
              "1700000000.123", "1700000000.123:99999999999999999999", "1700000000.123:3",
              "9999999999999.123:4", "1700000000.123:9223372036854775808", "1700000000.124:5",
              "1700000000.12é:6", "1700000000.123:٣", "7258118400.000:7", "7258118399.999:8",
              "1700000000.123:\x00", "1700000000.123:9"]  # fmt: skip
    stamps += ["1700000000.123:" + "7" * 5000, "7" * 5000 + ".123:10"]  # int() would refuse
    lines = [OTHERS[0].format(stamp=s) for s in stamps]
    together = AuditAssembler("t")
    events = together.feed_lines(lines) + together.flush_all()
    apart = AuditAssembler("t")
    one_by_one: list[AuditEvent] = []
    for lineno, line in enumerate(lines, 1):
        one_by_one += apart.feed_lines([line], lineno)  # no moment known before each line
    one_by_one += apart.flush_all()
    assert [(e.time_ns, e.serial) for e in events] == [(e.time_ns, e.serial) for e in one_by_one]
    assert together.drain_malformed() == apart.drain_malformed()
    assert len(events) == 6


HEAD_WORDS = ["arch=c000003e", "syscall=59", "success=yes", "exit=0", "a0=55", "a1=ff",
              "items=1", "ppid=10", "pid=11", "pid=12", "comm=646F636B6572", 'comm="x"',
              "auid=7", "x", "a=b=c", "=v", "k=", 'k="a', "k='a'", "k={1}", "é=1"]  # fmt: skip


def test_merged_fields_is_the_merge_of_the_parsed_head_and_tail() -> None:
    rng = random.Random(5)
    tails = [
        auditparse_fields.fields_fast(' auid=1000 uid=0 comm="sh" key=(null)'),
        auditparse_fields.fields_fast(" auid=4294967295 uid=0 ses=1"),
        auditparse_fields.fields_fast(" pid=99 auid=1"),
    ]
    shapes = [[rng.choice(HEAD_WORDS) for _ in range(rng.randint(0, 6))] for _ in range(40)]
    templated = 0
    for _ in range(3000):
        tail = rng.choice(tails)
        assert tail is not None
        words = rng.choice(shapes)
        if rng.random() < 0.3:
            words = [*words, rng.choice(HEAD_WORDS)]
        sep = rng.choice([" ", " ", " ", "  ", "\t"])
        head = rng.choice(["", " ", sep]) + sep.join(words)
        parsed = auditparse_fields.fields_fast(head)
        expected = None if parsed is None else list({**parsed, **tail}.items())
        for _ in range(2):  # the second call takes the template when it can
            templated += id(tail) in heads.HEAD_TEMPLATES
            merged = heads.merged_fields(head, tail)
            assert (None if merged is None else list(merged.items())) == expected, head
            if merged is not None:
                merged["changed"] = "yes"  # a copy: the template stays as it was
    assert templated > 1000


def test_a_head_naming_many_fields_gets_no_template() -> None:
    tail = auditparse_fields.fields_fast(" auid=1 uid=0")
    assert tail is not None
    head = "".join(f" n{i}={i}" for i in range(heads.TEMPLATE_NAMES_MAX + 1))
    for _ in range(2):
        merged = heads.merged_fields(head, tail)
        assert merged is not None and len(merged) == heads.TEMPLATE_NAMES_MAX + 3
    assert id(tail) not in heads.HEAD_TEMPLATES


def test_path_fields_is_the_merge_of_the_parsed_head_and_tail() -> None:
    rng = random.Random(6)
    tails = [auditparse_fields.fields_fast(t) for t in (" dev=fe:00 mode=0100644", " dev=1")]
    for _ in range(2000):
        tail = rng.choice(tails)
        assert tail is not None
        head = f' item={rng.randint(0, 2)} name="/x{rng.randint(0, 5)}" inode={rng.randint(1, 3)}'
        if rng.random() < 0.1:
            head += rng.choice([" dev=2", ' k="a', " bare"])
        parsed = auditparse_fields.fields_fast(head)
        expected = None if parsed is None else list({**parsed, **tail}.items())
        fields = heads.path_fields(head, tail)
        assert (None if fields is None else list(fields.items())) == expected
        if fields is not None:
            fields["changed"] = "yes"


def test_pairs_splits_as_str_split_does() -> None:
    rng = random.Random(7)
    alphabet = [" ", " ", "=", "a", "b", "\t", "\x1c", "\x85", "\xa0", "é", "  ", "==", "\x1d"]
    reference = auditparse_fields._str_split
    for _ in range(50_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.5:
            text = " " + text
        try:
            expected: Any = list(dict(map(reference, text.split(), itertools.repeat("="))).items())
        except ValueError:
            expected = ValueError
        try:
            got: Any = list(auditparse_fields._pairs(text).items())
        except ValueError:
            got = ValueError
        assert got == expected, repr(text)


def test_malformed_lines_still_say_why_on_the_quick_path() -> None:
    clean = SYSCALL.format(stamp="1700000000.000:1", pid=1)
    lines = [clean, clean.replace(":1)", ":2)")]
    lines.append(clean.replace(":1)", ":3\x00)"))  # NUL in the stamp: the header check
    lines.append(clean.replace("a0=55", "a0=5\x005").replace(":1)", ":4)"))  # in the head
    lines.append(clean.replace(":1)", ":x)"))  # garbled serial
    path = PATH.format(stamp="1700000000.000:6", pid=1)
    lines += [path, path, path.replace(" dev=", ' x="a dev=')]  # a quote that never closes
    events, asm = feed_quick(lines)
    assert [e.serial for e in events] == [1, 2, 6]
    assert len(events[2].records) == 2
    reasons = [m.reason for m in asm.drain_malformed()]
    assert reasons == [
        "NUL bytes in line (binary garbage)",
        "NUL bytes in line (binary garbage)",
        "garbled time or serial in msg=audit(...)",
        "unterminated quote (truncated line?)",
    ]
