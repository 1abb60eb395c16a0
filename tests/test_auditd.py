"""Tests for listener.sources.auditd: filter, conversion, files, the live tail, checkpoints."""

from __future__ import annotations

import asyncio
import gzip
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from config.models import AuditdConfig
from listener.correlate import Correlator
from listener.model.event import Event
from listener.pipeline import Pipeline
from listener.sources.auditd import (
    AuditConverter,
    AuditLogFiles,
    AuditLogTail,
    CheckpointedTrail,
    Converted,
    IdNames,
)
from listener.sources.auditd.reader import LiveReader
from listener.sources.auditparse import AuditAssembler, AuditEvent
from sinks.base import AppendResult, EventFilter
from sinks.memory import MemoryTrail


class StateTrail(MemoryTrail):
    """MemoryTrail plus what CheckpointedTrail asks of a trail: source checkpoints
    stored in the same step as the batch (trivially atomic in memory)."""

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, dict[str, Any]] = {}
        self.duplicates = 0

    def append_state(
        self, batch: Sequence[Event], source_state: Mapping[str, Mapping[str, Any]] | None
    ) -> AppendResult:
        result = self.append(batch)
        self.duplicates += result.duplicates
        for name, checkpoint in (source_state or {}).items():
            self.state[name] = dict(checkpoint)
        return result

    async def write(  # type: ignore[override]
        self, batch: Sequence[Event], *, source_state: Mapping[str, Mapping[str, Any]] | None = None
    ) -> AppendResult:
        return self.append_state(batch, source_state)

    async def load_source_state(self, name: str) -> dict[str, Any] | None:
        return self.load_state(name)

    def load_state(self, name: str) -> dict[str, Any] | None:
        found = self.state.get(name)
        return dict(found) if found is not None else None

    def events(self) -> list[Event]:
        return list(self.query(EventFilter()))


# ----------------------------------------------------------------------------- records

GS = "\x1d"
NAMES = {1001: "alice", 1002: "bob", 0: "root", 4294967295: "unset"}
UNSET = 4294967295


def hexs(text: str) -> str:
    return text.encode().hex().upper()


def syscall(
    stamp: str,
    nr: int,
    name: str,
    *,
    exe: str,
    comm: str,
    auid: int = 1001,
    uid: int = 0,
    key: str = '"docker"',
    a0: str = "ffffff9c",
    a2: str = "0",
    enriched: bool = True,
) -> str:
    line = (
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall={nr} success=yes exit=3 "
        f"a0={a0} a1=55d a2={a2} a3=1b6 items=2 ppid=10 pid=77 auid={auid} uid={uid} gid=0 "
        f"euid={uid} suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=pts1 ses=5 "
        f'comm="{comm}" exe="{exe}" key={key}'
    )
    if enriched:
        auid_name = NAMES.get(auid, f"unknown({auid})")
        uid_name = NAMES.get(uid, f"unknown({uid})")
        line += f'{GS}ARCH=x86_64 SYSCALL={name} AUID="{auid_name}" UID="{uid_name}" '
        line += f'EUID="{uid_name}"'
    return line


def path(stamp: str, item: int, name: str, nametype: str) -> str:
    return (
        f'type=PATH msg=audit({stamp}): item={item} name="{name}" inode=9 dev=fe:00 '
        f"mode=0100644 ouid=0 ogid=0 rdev=00:00 nametype={nametype}"
    )


def closing(stamp: str, title: list[str], cwd: str = "/") -> list[str]:
    return [
        f'type=CWD msg=audit({stamp}): cwd="{cwd}"',
        f"type=PROCTITLE msg=audit({stamp}): proctitle={hexs(chr(0).join(title))}",
    ]


def cli_lines(
    stamp: str, argv: list[str], *, auid: int = 1001, uid: int = 0, enriched: bool = True
) -> list[str]:
    args = " ".join(f"a{i}={hexs(a)}" if " " in a else f'a{i}="{a}"' for i, a in enumerate(argv))
    return [
        syscall(
            stamp,
            59,
            "execve",
            exe="/usr/local/bin/docker",
            comm="docker",
            auid=auid,
            uid=uid,
            key='"docker-cli"',
            enriched=enriched,
        ),
        f"type=EXECVE msg=audit({stamp}): argc={len(argv)} {args}",
        *closing(stamp, argv, cwd="/srv/app"),
    ]


_CALLS = {
    "write": (257, "openat", "241", "CREATE"),
    "read": (257, "openat", "0", "NORMAL"),
    "delete": (263, "unlinkat", "0", "DELETE"),
    "exec": (59, "execve", "0", "NORMAL"),
    "chmod": (268, "fchmodat", "0", "NORMAL"),
}


def file_lines(
    stamp: str,
    op: str,
    name: str,
    *,
    exe: str = "/usr/bin/dash",
    comm: str = "sh",
    auid: int = 1001,
    parent: str = "/etc/docker/",
    a0: str = "ffffff9c",
    title: list[str] | None = None,
    enriched: bool = True,
) -> list[str]:
    nr, sysname, flags, nametype = _CALLS[op]
    return [
        syscall(
            stamp, nr, sysname, exe=exe, comm=comm, auid=auid, a0=a0, a2=flags, enriched=enriched
        ),
        path(stamp, 0, parent, "PARENT"),
        path(stamp, 1, name, nametype),
        *closing(stamp, title or [comm, name]),
    ]


def assemble(lines: list[str]) -> list[AuditEvent]:
    assembler = AuditAssembler("t")
    closed: list[AuditEvent] = []
    for number, line in enumerate(lines, 1):
        closed += assembler.feed(line, number)
    return closed + assembler.flush_all()


def converter(
    passwd: Path | None = None, group: Path | None = None, **settings: Any
) -> AuditConverter:
    return AuditConverter(AuditdConfig(**settings), "h1", IdNames(passwd, group))


def convert(lines: list[str], **settings: Any) -> list[Converted]:
    conv = converter(**settings)
    return [c for c in map(conv.convert, assemble(lines)) if c is not None]


def kept_events(lines: list[str], **settings: Any) -> list[Event]:
    return [c.event for c in convert(lines, **settings) if c.event is not None]


# ----------------------------------------------------------------------------- conversion


def test_docker_cli_call_becomes_an_event_and_a_call() -> None:
    argv = [
        "docker",
        "run",
        "-d",
        "--name",
        "web-1",
        "--privileged",
        "--label",
        "audit.why=release 2024.11",
        "busybox",
        "sleep",
        "300",
    ]
    (converted,) = convert(cli_lines("1795346502.673:15499", argv))
    event, call = converted.event, converted.call
    assert event is not None and call is not None
    assert (event.source, event.type, event.action) == ("auditd", "docker-cli", "run")
    assert (event.actor.name, event.actor.image, event.host) == ("web-1", "busybox", "h1")
    assert event.attributes["argv"] == argv and event.attributes["cwd"] == "/srv/app"
    assert (event.attributes["gid"], event.attributes["group"]) == (0, None)
    assert event.attributes["audit_id"] == "1795346502.673:15499" == event.who.audit_id
    assert (event.who.login, event.who.auid, event.who.user, event.who.uid) == (
        "alice",
        1001,
        "root",
        0,
    )
    assert (event.who.method, event.who.ses, event.who.tty) == ("auditd", 5, "pts1")
    assert event.who.command == (
        "docker run -d --name web-1 --privileged --label 'audit.why=release 2024.11' busybox "
        "sleep 300"
    )
    assert event.config["origin"] == "argv" and event.config["privileged"] is True
    assert call.call.command == "run" and call.event_id == event.id
    again = convert(cli_lines("1795346502.673:15499", argv))[0].event
    assert again is not None and again.id == event.id  # the natural key


def test_cli_events_all_changes_or_none() -> None:
    lines = cli_lines("5.000:1", ["docker", "ps"]) + cli_lines("5.001:2", ["docker", "rm", "x"])
    assert [e.action for e in kept_events(lines)] == ["ps", "rm"]
    assert [e.action for e in kept_events(lines, cli_events="changes")] == ["rm"]
    calls = convert(lines, cli_events="none")
    assert [c.event for c in calls] == [None, None] and all(c.call for c in calls)


def test_only_configured_keys_are_kept() -> None:
    lines = file_lines("6.000:1", "write", "/etc/docker/daemon.json")
    keyless = [line.replace('key="docker"', "key=(null)") for line in lines]
    other = [line.replace('key="docker"', 'key="sshd"') for line in lines]
    cis = [line.replace('key="docker"', 'key="docker-daemon"') for line in lines]
    assert kept_events(keyless) == [] and kept_events(other) == []
    assert len(kept_events(cis)) == 1
    assert kept_events(other, keys=["sshd"])[0].type == "daemon-file"


def test_daemon_file_operations_paths_and_who() -> None:
    lines = (
        file_lines("7.000:1", "write", "/etc/docker/daemon.json")
        + file_lines(
            "7.001:2", "delete", "/etc/docker/daemon.json", comm="rm", exe="/usr/bin/rm", auid=UNSET
        )
        + file_lines("7.002:3", "chmod", "/usr/bin/dockerd", parent="/usr/bin/")
        + file_lines("7.003:4", "read", "/etc/docker/daemon.json", comm="cat", exe="/usr/bin/cat")
    )
    events = kept_events(lines)
    assert [(e.type, e.action, e.actor.name) for e in events] == [
        ("daemon-file", "create", "/etc/docker/daemon.json"),
        ("daemon-file", "delete", "/etc/docker/daemon.json"),
        ("daemon-file", "attr", "/usr/bin/dockerd"),
        ("daemon-file", "read", "/etc/docker/daemon.json"),
    ]
    first = events[0]
    assert (first.who.login, first.who.method, first.who.exe) == (
        "alice",
        "auditd",
        "/usr/bin/dash",
    )
    assert first.attributes["syscall"] == "openat" and first.attributes["success"] is True
    assert [p["nametype"] for p in first.attributes["paths"]] == ["PARENT", "CREATE"]
    assert events[1].who.login is None and events[1].who.auid is None  # auid unset


def test_raw_logs_use_the_syscall_table_and_the_passwd_file(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\n")
    group = tmp_path / "group"
    group.write_text("root:x:0:\ndocker:x:105:bob\n")
    lines = file_lines("8.000:1", "write", "/etc/docker/daemon.json", enriched=False)
    (event,) = [c.event for c in map(converter(passwd, group).convert, assemble(lines)) if c]
    assert event is not None and event.action == "create"
    assert event.attributes["syscall"] == "openat"
    assert (event.who.login, event.who.user) == ("alice", "root")
    assert (event.attributes["gid"], event.attributes["group"]) == (0, "root")
    # ENRICHED "unknown(1234)": auditd's host did not know the id; the file may
    unknown = file_lines("8.001:2", "write", "/etc/docker/x", auid=1234)
    passwd.write_text(passwd.read_text() + "carol:x:1234:1234::/home/carol:/bin/sh\n")
    os.utime(passwd, ns=(1, 1))  # a changed file is read again
    (later,) = [c.event for c in map(converter(passwd).convert, assemble(unknown)) if c]
    assert later is not None and later.who.login == "carol"


def test_daemon_housekeeping_is_dropped_and_can_be_kept() -> None:
    dockerd = {"exe": "/usr/sbin/dockerd", "comm": "dockerd", "auid": UNSET}
    housekeeping = (
        # a relative name on a directory descriptor: the kernel logs its parent as "/"
        file_lines("9.000:1", "delete", "work", parent="/", a0="2c", **dockerd)
        + file_lines(
            "9.001:2",
            "write",
            "/var/lib/docker/containers/x/hosts",
            parent="/var/lib/docker/containers/x/",
            **dockerd,
        )
        # docker-untar unpacks a layer chrooted into the data root
        + file_lines(
            "9.002:3",
            "delete",
            "/.pivot_root1",
            parent="/",
            title=["docker-untar", "/", "/var/lib/docker/overlay2/x/diff"],
            **dockerd,
        )
        # runc started for a container, by the daemon (no login)
        + file_lines(
            "9.003:4",
            "exec",
            "/usr/sbin/runc",
            exe="/usr/sbin/runc",
            comm="runc",
            parent="/usr/sbin/",
            auid=UNSET,
        )
        + file_lines(
            "9.004:5",
            "read",
            "/var/lib/docker/overlay2/y/merged/etc/hosts",
            exe="/",
            comm="runc:[2:INIT]",
            parent="/var/lib/docker/",
            auid=UNSET,
        )
    )
    kept = (
        file_lines("9.100:6", "write", "/etc/docker/daemon.json", **dockerd)
        + file_lines("9.101:7", "write", "/var/lib/docker/evil", parent="/var/lib/docker/")
        + file_lines(
            "9.102:8",
            "exec",
            "/usr/sbin/dockerd",
            exe="/usr/sbin/dockerd",
            comm="dockerd",
            parent="/usr/sbin/",
        )
    )
    conv = converter()
    events = [c.event for c in map(conv.convert, assemble(housekeeping + kept)) if c]
    assert [e.attributes["audit_id"] for e in events if e] == ["9.100:6", "9.101:7", "9.102:8"]
    assert conv.counters.housekeeping == 5 and conv.counters.kept == 3
    assert len(kept_events(housekeeping, drop_housekeeping=False)) == 5
    (relative,) = kept_events(housekeeping[:5], drop_housekeeping=False)
    assert [p["resolved"] for p in relative.attributes["paths"]] == [False, False]


def test_rule_changes_and_node_names() -> None:
    lines = [
        "node=web1 type=CONFIG_CHANGE msg=audit(10.000:1): auid=1001 ses=5 op=remove_rule "
        'key="docker" list=4 res=1',
        syscall(
            "10.000:1", 44, "sendto", exe="/usr/sbin/auditctl", comm="auditctl", key="(null)"
        ).replace("type=", "node=web1 type=", 1),
    ]
    (event,) = kept_events(lines)
    assert (event.type, event.action, event.host) == ("audit-rule", "remove_rule", "web1")
    assert event.attributes["keys"] == ["docker"] and event.who.login == "alice"
    assert event.attributes["audit_id"] == "web1 10.000:1"


# ----------------------------------------------------------------------------- files


def write_log(target: Path, lines: list[str], *, compress: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode()
    target.write_bytes(gzip.compress(data) if compress else data)
    return target


def test_rotated_set_is_read_in_order_through_one_assembler(tmp_path: Path) -> None:
    cut = cli_lines("20.000:3", ["docker", "rm", "cut"])
    write_log(
        tmp_path / "audit.log.2.gz", cli_lines("18.000:1", ["docker", "rm", "a"]), compress=True
    )
    write_log(tmp_path / "audit.log.1", cli_lines("19.000:2", ["docker", "rm", "b"]) + cut[:2])
    write_log(tmp_path / "audit.log", [*cut[2:], "garbage line", *cli_lines("21.0:4", ["docker"])])
    files = AuditLogFiles(
        [tmp_path / n for n in ("audit.log", "audit.log.1", "audit.log.2.gz")], converter()
    )
    converted = list(files)
    events = [c.event for c in converted if c.event is not None]
    assert [e.actor.name for e in events] == ["a", "b", "cut", None]
    assert events[2].attributes["argv"] == ["docker", "rm", "cut"]  # joined across the files
    assert files.watermark_ns > 2**60 and files.records == 4 * 4
    (bad,) = files.malformed
    assert (bad.path, bad.line, bad.reason) == (str(tmp_path / "audit.log"), 3, "no type= field")
    assert str(bad).startswith(f"{tmp_path / 'audit.log'}:3: ")


def test_watermark_trails_the_reading(tmp_path: Path) -> None:
    lines = [
        *cli_lines("30.000:1", ["docker", "rm", "a"]),
        *cli_lines("33.000:2", ["docker", "rm", "b"]),
        *cli_lines("40.000:3", ["docker", "rm", "c"]),
    ]
    files = AuditLogFiles([write_log(tmp_path / "audit.log", lines)], converter())
    seen = [(c.call.time_ns if c.call else 0, files.watermark_ns) for c in files]
    for time_ns, watermark in seen[:-1]:
        assert watermark <= time_ns + 2 * 10**9  # an event is out before the mark passes it


def test_corpus_files_convert_without_errors() -> None:
    from tests.shared_data import require_shared

    root = require_shared("corpus", "laurel-audit-samples")
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".json")
    everything = AuditdConfig(keys=[], cis_keys=[], cli_key="")
    for one in paths:
        files = AuditLogFiles([one], AuditConverter(everything, "h1", IdNames(None, None)))
        list(files)
        assert files.records + len(files.malformed) > 0, one


# ----------------------------------------------------------------------------- live tail


def tail_config(log: Path, **settings: Any) -> AuditdConfig:
    defaults: dict[str, Any] = {
        "log_file": log,
        "poll_interval_secs": 0.01,
        "start_at": "start",
        "passwd_file": None,
    }
    return AuditdConfig(**(defaults | settings))


def append(log: Path, lines: list[str], end: str = "\n") -> None:
    with open(log, "a") as stream:
        stream.write("\n".join(lines) + end)


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Running:
    """The tail feeding a pipeline into a StateTrail, as `run` wires it."""

    def __init__(self, config: AuditdConfig, trail: StateTrail) -> None:
        self.correlator = Correlator()
        self.tail = AuditLogTail(
            config, "h1", correlator=self.correlator, checkpoint=trail.load_state("auditd")
        )
        self.trail = trail
        self.pipeline = Pipeline(CheckpointedTrail(trail, [self.tail]), flush_interval_secs=0.01)
        self.handed: list[Event] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Running:
        await self.tail.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        async for event in self.tail:
            self.handed.append(event)
            await self.pipeline.put(event)

    async def __aexit__(self, *exc: object) -> None:
        await self.tail.aclose()
        assert self._task is not None
        await self._task
        await self.pipeline.aclose()

    def actors(self, kind: str = "docker-cli") -> list[str | None]:
        return [e.actor.name for e in self.trail.events() if e.type == kind]


def rm_call(stamp: str, name: str) -> list[str]:
    return cli_lines(stamp, ["docker", "rm", name])


async def test_tail_follows_appends_and_partial_lines(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", rm_call("50.000:1", "a"))
    trail = StateTrail()
    async with Running(tail_config(log), trail) as running:
        await until(lambda: running.actors() == ["a"])
        lines = rm_call("51.000:2", "b")
        text = "\n".join(lines) + "\n"
        append(log, [text[:100]], end="")  # auditd mid-write: half a line
        await asyncio.sleep(0.05)
        append(log, [text[100:]], end="")
        await until(lambda: running.actors() == ["a", "b"])
        assert running.correlator.stats.calls == 2 and running.tail.malformed == 0
        assert running.correlator.watermark_ns > 51 * 10**9
    assert trail.state["auditd"]["offset"] == log.stat().st_size
    assert trail.state["auditd"]["line"] == 8 and trail.state["auditd"]["serial"] == 2


async def test_rotation_drains_the_old_file_then_follows_the_new(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", rm_call("60.000:1", "a"))
    async with Running(tail_config(log), StateTrail()) as running:
        await until(lambda: running.actors() == ["a"])
        with open(log, "a") as old:  # auditd: rename, last write to the old file, new file
            os.rename(log, tmp_path / "audit.log.1")
            old.write("\n".join(rm_call("61.000:2", "b")) + "\n")
        write_log(log, rm_call("62.000:3", "c"))
        await until(lambda: running.actors() == ["a", "b", "c"])
        os.rename(tmp_path / "audit.log.1", tmp_path / "audit.log.2")  # two rotations at once
        os.rename(log, tmp_path / "audit.log.1")
        write_log(log, rm_call("63.000:4", "d"))
        await until(lambda: running.actors() == ["a", "b", "c", "d"])
        await asyncio.sleep(0.05)
    assert len(running.handed) == 4 and running.trail.duplicates == 0


async def test_restart_from_the_checkpoint_loses_and_repeats_nothing(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", rm_call("70.000:1", "a") + rm_call("70.100:2", "b"))
    trail = StateTrail()
    config = tail_config(log)
    async with Running(config, trail) as running:
        await until(lambda: running.actors() == ["a", "b"])
        append(log, rm_call("71.000:3", "c")[:2])  # an event cut by the stop
    assert running.actors() == ["a", "b"]
    append(log, rm_call("71.000:3", "c")[2:] + rm_call("72.000:4", "d"))
    os.rename(log, tmp_path / "audit.log.1")
    write_log(log, rm_call("73.000:5", "e"))
    async with Running(config, trail) as restarted:
        await until(lambda: restarted.actors() == ["a", "b", "c", "d", "e"])
        await asyncio.sleep(0.05)
    cut = [e for e in trail.events() if e.actor.name == "c"]
    assert cut[0].attributes["argv"] == ["docker", "rm", "c"]  # read whole after the restart
    assert trail.count() == 5


async def test_start_at_end_and_line_numbers_of_bad_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = write_log(tmp_path / "audit.log", [*rm_call("80.000:1", "old"), "x"])
    async with Running(tail_config(log, start_at="end"), StateTrail()) as running:
        append(log, ["not a record", *rm_call("81.000:2", "new")])
        await until(lambda: running.actors() == ["new"])
    assert running.tail.malformed == 1
    assert f"{log}:6: no type= field" in caplog.text


async def test_truncation_and_a_lost_checkpoint_are_reported_as_gaps(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", rm_call("90.000:1", "a"))
    trail = StateTrail()
    async with Running(tail_config(log), trail) as running:
        await until(lambda: running.actors() == ["a"])
        log.write_text("")  # copytruncate (noticed when the file is shorter than our offset)
        await until(lambda: len(running.handed) == 2)  # the gap event
        append(log, rm_call("91.000:2", "b"))
        await until(lambda: running.actors() == ["a", "b"])
        await until(lambda: running.actors("audit-log") != [])
    os.unlink(log)  # the checkpointed file is gone
    write_log(tmp_path / "audit.log", rm_call("92.000:3", "c"))
    async with Running(tail_config(log), trail) as running:
        await until(lambda: "c" in running.actors())
        await until(lambda: len(running.actors("audit-log")) == 2)
    gaps = [e for e in trail.events() if (e.type, e.action) == ("audit-log", "gap")]
    assert "truncated" in gaps[0].attributes["reason"] and "gone" in gaps[1].attributes["reason"]
    assert all(e.source == "docktrail" for e in gaps)


async def test_state_for_follows_the_events_handed_out(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", rm_call("95.000:1", "a") + rm_call("95.100:2", "b"))
    tail = AuditLogTail(tail_config(log), "h1")
    async with tail:
        events: list[Event] = []

        async def take() -> None:
            async for event in tail:
                events.append(event)

        taker = asyncio.create_task(take())
        await until(lambda: len(events) == 2)
        await asyncio.sleep(0.05)  # the cycle's checkpoint is handed out after them
        tail.state_for([])  # checkpoints handed out before "a" (its start, while it was open)
        assert tail.state_for([events[1]]) is None  # "a" is not written yet: no checkpoint
        state = tail.state_for(events)
        assert state is not None and state["offset"] == log.stat().st_size
        assert tail.state_for([]) is None  # nothing new since
    await taker


async def test_an_unreadable_log_neither_stops_the_tail_nor_holds_events(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.mkdir()  # reading it fails (as root, a directory is what reliably fails)
    correlator = Correlator()
    tail = AuditLogTail(tail_config(log), "h1", correlator=correlator)
    async with tail:
        await until(lambda: tail.failed is not None)
        assert correlator.watermark_ns > time.time_ns()  # Engine events do not wait for it


# ----------------------------------------------------------------------------- costs


def test_a_repeated_command_is_parsed_once_per_argv_and_cwd() -> None:
    def compose_up(stamp: str, cwd: str) -> list[str]:
        lines = cli_lines(stamp, ["docker", "compose", "up", "-d"])
        return [*lines[:2], f'type=CWD msg=audit({stamp}): cwd="{cwd}"', lines[3]]

    lines = compose_up("7.000:1", "/srv/shop") + compose_up("7.001:2", "/srv/blog")
    lines += compose_up("7.002:3", "/srv/shop")
    conv = converter()
    calls = [c.call for c in map(conv.convert, assemble(lines)) if c is not None]
    projects = [c.call.compose.project for c in calls if c and c.call.compose]
    assert projects == ["shop", "blog", "shop"]
    assert calls[0] and calls[2] and calls[0].call is calls[2].call  # the same text: reused
    assert [c.audit_id for c in calls if c] == ["7.000:1", "7.001:2", "7.002:3"]


def test_live_reader_positions_in_bytes_across_small_reads(tmp_path: Path) -> None:
    """Lines are decoded a block at a time; checkpoints are still byte offsets, and bad
    lines keep their file line numbers, whatever the block boundaries."""
    # without their PROCTITLE (the live reader closes an event at it): "a" and "b" stay open
    lines = [b"caf\xc3\xa9 is not a record", *map(str.encode, rm_call("8.000:1", "a")[:-1])]
    lines += [b"\xff\xfe binary", *map(str.encode, rm_call("8.100:2", "b")[:-1])]
    cut = rm_call("8.200:3", "c")
    log = tmp_path / "audit.log"
    log.write_bytes(b"\n".join(lines) + b"\n" + "\n".join(cut[:2]).encode() + b"\n")
    start = len(b"\n".join(lines)) + 1  # where "c" begins, after multi-byte characters
    config = tail_config(log)

    whole = LiveReader(config, converter())  # one read; "a" and "b" open, "c" held
    whole.follower.open(None, "start")
    first = whole.cycle()
    assert first.converted == [] and first.checkpoint is not None
    # the oldest open event begins on line 2, after 21 characters in 22 bytes
    assert (first.checkpoint["offset"], first.checkpoint["line"]) == (len(lines[0]) + 1, 1)

    small = LiveReader(config, converter())
    small.follower.chunk = 37  # lines cross reads, and reads end mid-character
    small.follower.open(None, "start")
    converted: list[Converted] = []
    bad: list[tuple[str | None, int | None]] = []
    checkpoints = []
    for _ in range(200):
        cycle = small.cycle()
        converted += cycle.converted
        bad += [(e.path, e.line) for e in cycle.malformed]
        checkpoints.append(cycle.checkpoint)
    assert [c.event.actor.name for c in converted if c.event] == ["a", "b", "c"]
    assert bad == [(str(log), 1), (str(log), 5)]
    positions = {(c["offset"], c["line"]) for c in checkpoints if c}
    assert (start, 8) in positions  # while "c" was open or held
    data = log.read_bytes()
    for offset, line in positions:  # every one a line start, `line` lines before it
        assert offset == 0 or data[offset - 1 : offset] == b"\n"
        assert data[:offset].count(b"\n") == line
    assert checkpoints[-1] is not None and checkpoints[-1]["offset"] == len(data)


async def test_the_checkpoint_moves_on_past_a_gap(tmp_path: Path) -> None:
    log = write_log(tmp_path / "audit.log", rm_call("96.000:1", "a"))
    trail = StateTrail()
    async with Running(tail_config(log), trail) as running:
        await until(lambda: running.actors() == ["a"])
        log.write_text("")  # copytruncate: a gap event
        await until(lambda: len(running.handed) == 2)
        append(log, rm_call("97.000:2", "b") + rm_call("97.500:3", "c"))
        await until(lambda: running.actors() == ["a", "b", "c"])
        size = log.stat().st_size
        await until(lambda: trail.state["auditd"]["offset"] == size)
        assert trail.state["auditd"]["serial"] == 3
        assert len(running.tail._handed) <= 2  # what the trail holds is let go


def test_the_effects_cache_is_bounded_whatever_subcommands_are_made_up() -> None:
    from listener.correlate import calls

    for n in range(3 * 512):
        calls._effects_of((f"made-up-{n}",), f"made-up-{n}", (False, False, False, False))
    info = calls._effects_of.cache_info()
    assert info.maxsize == 512 and info.currsize <= 512
