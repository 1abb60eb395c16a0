"""Verify reads a cold trail file sequentially ahead of its two passes
(`sinks.sqlite.readahead`), when the file fits in the memory available."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

import sinks.sqlite.readahead as readahead
import sinks.sqlite.verification as verification
from sinks.sqlite import SQLiteTrail, verify_file
from sinks.sqlite.readahead import (
    ReadAhead,
    available_bytes,
    cgroup_room,
    room_for_pages,
    worth_reading,
)
from tests.test_trail_verify_concurrent import build

MIB = 1024 * 1024


def _read_so_far() -> int:
    """Bytes this process has read through read(2) and the like (all threads)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_available_memory_is_read_from_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    2048 kB\n")
    assert available_bytes(meminfo) == 2 * MIB
    meminfo.write_text("MemTotal: 1 kB\n")
    assert available_bytes(meminfo) is None
    meminfo.write_text("MemAvailable: lots\n")
    assert available_bytes(meminfo) is None
    assert available_bytes(tmp_path / "absent") is None
    assert available_bytes() is not None  # this Linux says


def test_only_a_file_that_fits_well_in_memory_is_read_ahead() -> None:
    assert worth_reading(10 * MIB, 100 * MIB)
    assert not worth_reading(90 * MIB, 100 * MIB)  # evicted before the passes get there
    assert not worth_reading(10 * MIB, None)  # unknown memory: leave it to the passes
    assert not worth_reading(0, 100 * MIB)


def test_the_whole_file_is_read_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    size = 6 * MIB + 123
    path.write_bytes(os.urandom(size))
    before = _read_so_far()
    ahead = ReadAhead(path)
    assert ahead.started
    deadline = time.monotonic() + 30
    while _read_so_far() - before < size and time.monotonic() < deadline:
        time.sleep(0.01)
    ahead.stop()
    assert _read_so_far() - before >= size


def test_a_file_too_large_for_memory_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "trail.db"
    path.write_bytes(b"\0" * MIB)
    monkeypatch.setattr(readahead, "available_bytes", lambda: MIB)
    ahead = ReadAhead(path)
    assert not ahead.started
    ahead.stop()  # nothing to stop: returns at once


def test_a_cgroup_limit_counts_as_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a container the page cache is charged to its memory limit, not the host's."""
    path = tmp_path / "trail.db"
    path.write_bytes(b"\0" * MIB)
    monkeypatch.setattr(readahead, "available_bytes", lambda: 1024 * MIB)
    monkeypatch.setattr(readahead, "cgroup_room", lambda: MIB)
    assert room_for_pages() == MIB
    assert not ReadAhead(path).started
    monkeypatch.setattr(readahead, "cgroup_room", lambda: None)  # no limit
    assert room_for_pages() == 1024 * MIB
    monkeypatch.setattr(readahead, "available_bytes", lambda: None)
    assert room_for_pages() is None


def _cgroup(tmp_path: Path, own: str, files: dict[str, str]) -> tuple[Path, Path]:
    proc = tmp_path / "cgroup"
    proc.write_text(own)
    root = tmp_path / "fs"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return proc, root


def test_the_room_under_a_cgroup_v2_limit(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "0::/docker/abc\n",
        {"docker/abc/memory.max": "536870912\n", "docker/abc/memory.current": "134217728\n"},
    )
    assert cgroup_room(proc, root) == 384 * MIB
    (root / "docker/abc/memory.max").write_text("max\n")
    assert cgroup_room(proc, root) is None


def test_the_room_under_a_cgroup_v1_limit(tmp_path: Path) -> None:
    proc, root = _cgroup(
        tmp_path,
        "5:devices:/\n4:memory:/kubepods/pod1\n0::/\n",
        {
            "memory/kubepods/pod1/memory.limit_in_bytes": "268435456\n",
            "memory/kubepods/pod1/memory.usage_in_bytes": "300000000\n",
        },
    )
    assert cgroup_room(proc, root) == 0  # over its limit already: no room
    (root / "memory/kubepods/pod1/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_room(proc, root) is None  # v1's "no limit"


def test_no_cgroup_memory_files_means_no_limit(tmp_path: Path) -> None:
    proc, root = _cgroup(tmp_path, "0::/\n3:cpuset:/\n", {})
    assert cgroup_room(proc, root) is None
    assert cgroup_room(tmp_path / "absent", root) is None
    (root / "memory.max").parent.mkdir(parents=True, exist_ok=True)
    (root / "memory.max").write_text("lots\n")
    (root / "memory.current").write_text("1\n")
    assert cgroup_room(proc, root) is None


def test_a_missing_file_starts_nothing(tmp_path: Path) -> None:
    ahead = ReadAhead(tmp_path / "gone.db")
    assert not ahead.started
    ahead.stop()


def test_verify_reads_ahead_the_file_it_verifies_and_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Path] = []

    class Recorded(ReadAhead):
        def __init__(self, path: Path) -> None:
            started.append(path)
            super().__init__(path)

    monkeypatch.setattr(verification, "ReadAhead", Recorded)
    path = build(tmp_path / "t.db")
    assert verify_file(path, path.with_suffix(".key")).ok
    with SQLiteTrail(path) as trail:
        assert trail.verify().ok
    assert [p.resolve() for p in started] == [path.resolve(), path.resolve()]
    assert not [t for t in threading.enumerate() if t.name == "docktrail-verify-readahead"]
