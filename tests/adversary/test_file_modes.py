"""Issue 19 item 3 (files): the trail, its WAL/SHM, the key and the witness are private."""

from __future__ import annotations

import grp
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.sqlite import SQLiteTrail
from tests.adversary.trails import REPO, event


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The umask of a careless service manager: everything world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def files(db: Path) -> dict[str, Path]:
    return {
        "trail": db,
        "wal": Path(f"{db}-wal"),
        "shm": Path(f"{db}-shm"),
        "writer lock": Path(f"{db}-writer"),
        "key": db.with_suffix(".key"),
        "witness": db.with_suffix(".witness"),
    }


def test_created_0600_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    db = tmp_path / "trail.db"
    with SQLiteTrail(db, witness_path=db.with_suffix(".witness")) as trail:
        trail.append([event(1)])
        modes = {name: stat.S_IMODE(path.stat().st_mode) for name, path in files(db).items()}
    assert modes == dict.fromkeys(files(db), 0o600)


def test_with_a_group_the_trail_is_0640_and_the_key_stays_0600(
    tmp_path: Path, open_umask: None
) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    db = tmp_path / "trail.db"
    with SQLiteTrail(db, witness_path=db.with_suffix(".witness"), group=group) as trail:
        trail.append([event(1)])
        found = {name: path.stat() for name, path in files(db).items()}
    modes = {name: stat.S_IMODE(info.st_mode) for name, info in found.items()}
    assert modes == dict.fromkeys(files(db), 0o640) | {"key": 0o600}
    assert {info.st_gid for info in found.values()} == {os.getgid()}


def test_the_systemd_unit_sets_a_umask() -> None:
    unit = (REPO / "deploy" / "systemd" / "docktrail.service").read_text()
    assert "\nUMask=0027\n" in unit
