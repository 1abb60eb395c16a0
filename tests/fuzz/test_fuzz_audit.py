"""Property: the audit record parser, assembler and converter never raise; every
line is a record, a blank or a malformed report; every kept event can be stored.

Also the LAUREL corpus (../shared/corpus) through the whole conversion."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from config.errors import InputError
from config.models import AuditdConfig, InputConfig
from listener.model.event import Event, canonical_json, chain_hash
from listener.redact import Redactor
from listener.sources.auditd import AuditConverter
from listener.sources.auditparse import AuditAssembler, AuditEvent
from tests.shared_data import require_shared

LIMITS = InputConfig(max_line_bytes=2048, max_field_bytes=128)
TYPES = ["SYSCALL", "EXECVE", "CWD", "PATH", "PROCTITLE", "EOE", "CONFIG_CHANGE",
         "SERVICE_START", "DAEMON_CONFIG", "USER_CMD", "UNKNOWN[1420]"]  # fmt: skip
NAMES = ["arch", "syscall", "success", "exit", "items", "ppid", "pid", "auid", "uid", "euid",
         "gid", "egid", "ses", "tty", "comm", "exe", "key", "argc", "a0", "a1", "a1_len",
         "a1[0]", "a1[1]", "cwd", "item", "name", "nametype", "inode", "proctitle", "msg", "op",
         "res", "subj", "node"]  # fmt: skip
_VALUE_SAMPLES = [
    "0", "59", "yes", "no", "4294967295", "18446744073709551615", "9" * 30, "(null)", "?",
    '"docker"', '"docker-cli"', '"/usr/bin/docker"', "646F636B6572", "646F636B657200727500",
    "FF00FE", "'unit=x comm=\"y\"", "'", '"', "{ read }", "c000003e", "PARENT", "CREATE",
    "run", "\x01", "\x1d", "a=b", "-e", "DB_PASSWORD=x", "²", "٣",
]  # fmt: skip
VALUES = st.sampled_from(_VALUE_SAMPLES) | st.text(max_size=12).filter(lambda t: "\n" not in t)
STAMPS = st.sampled_from(
    ["1700000000.100:1", "1700000000.100:2", "1700000001.5:3", "1.000:1", "1700000000.1:x",
     "999999999999999999999.1:1", "1700000000.100:99999999999999999999", "", "1700000000.100"]
) | st.tuples(st.integers(0, 1 << 40), st.integers(0, 999), st.integers(0, 1 << 70)).map(
    lambda t: f"{t[0]}.{t[1]:03d}:{t[2]}"
)  # fmt: skip
fields = st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8).map(
    lambda pairs: " ".join(f"{k}={v}" for k, v in pairs)
)
record_lines = st.builds(
    lambda node, rtype, stamp, close, body, extra: (
        f"{node}type={rtype} msg=audit({stamp}{close} {body}{extra}"
    ),
    st.sampled_from(["", "node=h2 ", "node= "]),
    st.sampled_from(TYPES) | st.text(max_size=6),
    STAMPS,
    st.sampled_from(["):", ")", "", ") :"]),
    fields,
    st.sampled_from(["", '\x1dAUID="alice" UID="root"', "\x1d", "\x00"]),
)
lines = (
    record_lines
    | st.sampled_from(["", " ", "# comment", "junk", "x" * 3000])
    | st.text(max_size=60).filter(lambda t: "\n" not in t)
)


def assert_storable(event: Event) -> None:
    body = canonical_json(event.content())
    chain_hash("0" * 64, body)
    Event.model_validate_json(body)


def convert_all(converter: AuditConverter, events: list[AuditEvent]) -> int:
    kept = 0
    for event in events:
        try:
            converted = converter.convert_bounded(event)
        except InputError:
            continue
        if converted is not None and converted.event is not None:
            assert_storable(converted.event)
            kept += 1
    return kept


@given(st.lists(lines, max_size=25), st.floats(0.0, 5.0))
def test_every_line_is_accounted_and_every_kept_event_storable(
    text_lines: list[str], window: float
) -> None:
    assembler = AuditAssembler("fuzz.log", window, max_line=LIMITS.max_line_bytes)
    closed = assembler.feed_lines(text_lines, 1)
    closed += assembler.flush_all()
    counters = assembler.counters
    assert counters["records"] + counters["malformed"] + counters["blank"] == len(text_lines)
    assert sum(len(event.records) for event in closed) == counters["records"]
    assert all(1 <= bad.line <= len(text_lines) for bad in assembler.malformed)
    converter = AuditConverter(AuditdConfig(), "h1", limits=LIMITS, redactor=Redactor(b"k" * 32))
    convert_all(converter, closed)


def test_corpus_every_line_accounted_and_every_event_storable() -> None:
    root = require_shared("corpus", "laurel-audit-samples")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".json")
    assert len(files) >= 40
    converter = AuditConverter(
        AuditdConfig(keys=[], cis_keys=[], cli_key="docker-cli"),
        "h1",
        redactor=Redactor(b"k" * 32),
    )
    converter.keys = _Everything()  # every event goes through conversion, not just Docker's
    lines_total = kept = 0
    for path in files:
        assembler = AuditAssembler(str(path))
        data = path.read_bytes().decode("utf-8", "surrogateescape")
        text_lines = data.split("\n")
        if text_lines and text_lines[-1] == "":
            text_lines.pop()
        closed = assembler.feed_lines(text_lines, 1) + assembler.flush_all()
        counters = assembler.counters
        assert counters["records"] + counters["malformed"] + counters["blank"] == len(text_lines)
        lines_total += len(text_lines)
        for event in closed:
            try:
                converted = converter.convert_bounded(event)
            except InputError:
                continue
            if converted is not None and converted.event is not None:
                assert_storable(converted.event)
                kept += 1
    assert lines_total > 500 and kept > 100


class _Everything(frozenset[str]):
    """Rule keys that match every event's."""

    def isdisjoint(self, other: object) -> bool:
        return False
