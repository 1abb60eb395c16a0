"""The audit parser's whole output, pinned: a digest of every event (id, node, records
with their type, line, fields and ENRICHED fields, argv, keys) and every Malformed
entry of real logs. Speed work on the parser must leave these digests as they are.

The expected digests were taken from the parser before its hot path was reworked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from config.models import AuditdConfig
from listener.redact import Redactor
from listener.sources.auditd.convert import AuditConverter
from listener.sources.auditd.names import IdNames
from listener.sources.auditparse import AuditAssembler, AuditEvent, Malformed, read_audit_file
from tests.shared_data import require_shared

SCENARIO = Path(__file__).parent / "data" / "scenario-a" / "audit.log.gz"

SCENARIO_DIGEST = "4c55b42ceb58e87d0ca45cfbbc5a1172c0c8da9eb275a9328b41b1a2c27d5b8c"
CORPUS_DIGEST = "b8e7dc80add8670e662f885444cc275ffb3c0bc376abe75a08d2cbcf69b5001e"


def digest_of(items: list[object]) -> str:
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, AuditEvent):
            entry: object = [
                item.id,
                item.node,
                None if item.path is None else Path(item.path).name,
                [[r.type, r.line, r.fields, r.enriched] for r in item.records],
                item.argv,
                sorted(item.all_keys()),
                item.key,
            ]
        elif isinstance(item, Malformed):
            entry = [item.line, item.reason, item.text]
        else:
            entry = item
        h.update(
            json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass")
        )
        h.update(b"\n")
    return h.hexdigest()


def test_scenario_a_parses_as_before(tmp_path: Path) -> None:
    plain = tmp_path / "audit.log"
    plain.write_bytes(gzip.decompress(SCENARIO.read_bytes()))
    assembler = AuditAssembler(str(plain))
    items: list[object] = list(read_audit_file(plain, assembler=assembler))
    assert assembler.counters["records"] == 41039
    assert digest_of([*items, assembler.counters]) == SCENARIO_DIGEST


def test_every_public_corpus_log_parses_as_before() -> None:
    corpus = require_shared("corpus")
    files = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix in ("", ".txt", ".log"))
    if not files:
        pytest.fail(f"no audit logs under {corpus}")
    items: list[object] = []
    for path in files:
        items.append(str(path.relative_to(corpus)))
        # each file parsed whole and, as a live tail sees it, line by line
        items += list(read_audit_file(path))
        assembler = AuditAssembler(str(path))
        text = path.read_bytes().decode("utf-8", "surrogateescape")
        for number, line in enumerate(text.split("\n"), 1):
            items += assembler.feed(line, number)
        items += assembler.flush_all()
        items += assembler.drain_malformed()
    assert digest_of(items) == CORPUS_DIGEST


# Re-pinned for time-ordered ids: with the earlier id function in their place the
# converter gives the earlier digest, bd743a3084f0cf54….
CONVERTED_DIGEST = "ec80d3b195aea6cbb930b267aa275bbd30c3eb4659ca24e3085a656181941cb3"


def converted_digest(path: Path) -> str:
    """Every trail event and CLI call the converter makes of a log, in order."""
    converter = AuditConverter(
        AuditdConfig(cli_events="all"), "h1", IdNames(None, None), redactor=Redactor(b"k" * 32)
    )
    h = hashlib.sha256()
    for item in read_audit_file(path):
        if not isinstance(item, AuditEvent):
            continue
        converted = converter.convert_bounded(item)
        if converted is None:
            continue
        event = None if converted.event is None else converted.event.model_dump(mode="json")
        call = None if converted.call is None else repr(converted.call)
        h.update(json.dumps([event, call], sort_keys=True).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def test_scenario_a_converts_as_before(tmp_path: Path) -> None:
    plain = tmp_path / "audit.log"
    plain.write_bytes(gzip.decompress(SCENARIO.read_bytes()))
    assert converted_digest(plain) == CONVERTED_DIGEST


def test_a_record_after_its_event_was_closed_by_a_daemon_record_opens_a_new_event() -> None:
    """The same-event fast path of feed_lines must not append to an event the window closed."""
    asm = AuditAssembler("x", window_secs=2.0)
    lines = [
        "type=SYSCALL msg=audit(1000.000:1): a=1",
        "type=DAEMON_START msg=audit(1005.000:2): op=start",  # 5 s later: closes :1
        'type=CWD msg=audit(1000.000:1): cwd="/"',  # late: a new event with the same id
    ]
    closed = asm.feed_lines(lines) + asm.flush_all()
    assert [(e.id, [r.line for r in e.records]) for e in closed] == [
        ("1000.000:1", [1]),
        ("1005.000:2", [2]),
        ("1000.000:1", [3]),
    ]


def test_late_events_close_in_audit_time_order() -> None:
    """Events whose time is older than one already open (a late writer) are ordered too."""
    asm = AuditAssembler("x", window_secs=2.0)
    stamps = ["1000.500:1", "1000.100:2", "1001.000:3", "1000.100:4", "1000.900:5"]
    asm.feed_lines([f"type=SYSCALL msg=audit({stamp}): a=1" for stamp in stamps])
    assert asm.oldest_open_ns == 1_000_100_000_000
    assert [e.id for e in asm.flush(1_000_600_000_000)] == [
        "1000.100:2",
        "1000.100:4",
        "1000.500:1",
    ]
    assert asm.oldest_open_ns == 1_000_900_000_000
    closed = asm.feed_lines(["type=SYSCALL msg=audit(1003.000:6): a=1"])  # the window passes
    assert [e.id for e in closed] == ["1000.900:5"]
    assert [e.id for e in asm.flush_all()] == ["1001.000:3", "1003.000:6"]
    assert asm.oldest_open_ns is None
