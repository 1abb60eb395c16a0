"""What the faster audit conversion must keep: id names from a changed passwd file,
and each docker CLI event's own exact copy of the configuration its call asks for."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest

from config.models import AuditdConfig
from listener.model.event import Event
from listener.sources.auditd import names
from listener.sources.auditd.calls import FrozenConfig
from listener.sources.auditd.convert import AuditConverter
from listener.sources.auditd.names import IdNames
from tests.test_auditd import assemble, file_lines

PASSWD = "root:x:0:0::/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\n"


def _logins(converter: AuditConverter, stamp: str) -> list[str | None]:
    lines = file_lines(stamp, "write", "/etc/docker/x", auid=1234, enriched=False)
    events = [c.event for c in map(converter.convert, assemble(lines)) if c is not None]
    return [e.who.login for e in events if e is not None]


def test_a_missing_id_looks_at_the_passwd_file_at_most_once_per_recheck_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(names, "RECHECK_SECS", 0.3)
    passwd = tmp_path / "passwd"
    passwd.write_text(PASSWD)
    converter = AuditConverter(AuditdConfig(), "h1", IdNames(passwd, None))
    assert _logins(converter, "8.000:1") == [None]  # 1234 is nobody yet
    passwd.write_text(PASSWD + "carol:x:1234:1234::/home/carol:/bin/sh\n")
    os.utime(passwd, ns=(1, 1))
    # Within the interval the file is not looked at again (it was, per event, before) ...
    assert _logins(converter, "8.001:2") == [None]
    time.sleep(0.35)
    # ... after it, the change is seen.
    assert _logins(converter, "8.002:3") == ["carol"]


@pytest.mark.parametrize(
    "config",
    [
        {"image": "busybox", "env": ["A=1"], "labels": {"x": "y"}, "cpus": 1.5, "memory": None},
        {"memory": 2**70},  # beyond 64 bits: orjson would give a float back
        {"memory": -(2**63) - 1},
        {"name": "bad\udc80name"},  # a lone surrogate from undecodable argv bytes
        {"cpus": math.inf},
    ],
)
def test_each_event_gets_its_own_exact_copy_of_the_call_config(config: dict[str, object]) -> None:
    frozen = FrozenConfig(config)
    first, second = frozen.copy(), frozen.copy()
    assert first == config and first is not second
    assert [type(v) for v in first.values()] == [type(v) for v in config.values()]
    first["labels"] = {"changed": "yes"}
    assert frozen.copy() == config


def test_a_nan_in_the_call_config_stays_nan() -> None:
    copied = FrozenConfig({"cpus": math.nan}).copy()["cpus"]
    assert isinstance(copied, float) and math.isnan(copied)


def test_docker_cli_events_of_one_call_share_no_config_object() -> None:
    """The cached call is parsed once; its events must not share mutable state."""
    stamp_lines = [
        "type=SYSCALL msg=audit({s}): arch=c000003e syscall=59 success=yes exit=0 a0=1 a1=2 "
        "a2=3 a3=0 items=1 ppid=1 pid=2 auid=1001 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 "
        'sgid=0 fsgid=0 tty=pts0 ses=3 comm="docker" exe="/usr/bin/docker" key="docker-cli"',
        'type=EXECVE msg=audit({s}): argc=4 a0="docker" a1="run" a2="--privileged" a3="busybox"',
        'type=CWD msg=audit({s}): cwd="/root"',
    ]
    lines = [line.format(s=s) for s in ("9.000:1", "9.001:2") for line in stamp_lines]
    converter = AuditConverter(AuditdConfig(), "h1", IdNames(None, None))
    events: list[Event] = [
        c.event for c in map(converter.convert, assemble(lines)) if c and c.event
    ]
    assert len(events) == 2
    assert events[0].config == events[1].config and events[0].config["privileged"] is True
    assert events[0].config is not events[1].config
