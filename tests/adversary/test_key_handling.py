"""Issue 19 item 10: the signing key is created atomically and refused when unsafe."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from config.errors import SigningKeyError
from sinks.signing import fingerprint, load_or_create_key
from sinks.sqlite import SQLiteTrail
from tests.adversary.trails import build, verify
from tests.shared_data import missing_component

RACERS = 200


def test_simultaneous_first_loads_all_get_one_whole_key(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "docktrail.key"
    start = threading.Barrier(RACERS)

    def first_load() -> str:
        start.wait()
        return fingerprint(load_or_create_key(key).public_key())

    with ThreadPoolExecutor(RACERS) as pool:
        futures = [pool.submit(first_load) for _ in range(RACERS)]
    failures = [f.exception() for f in futures if f.exception() is not None]
    assert not failures, f"{len(failures)} of {RACERS} failed: {failures[0]}"
    assert len({f.result() for f in futures}) == 1  # all use the winner's key
    assert [p.name for p in key.parent.iterdir()] == ["docktrail.key"]  # no temporary left
    assert key.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o666, 0o640, 0o604])
def test_a_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key = tmp_path / "docktrail.key"
    load_or_create_key(key)
    key.chmod(mode)
    with pytest.raises(SigningKeyError, match="accessible to group or others"):
        load_or_create_key(key)


def test_a_symlinked_key_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.key"
    load_or_create_key(real)
    link = tmp_path / "docktrail.key"
    link.symlink_to(real)
    with pytest.raises(SigningKeyError, match="symlink"):
        load_or_create_key(link)
    dangling = tmp_path / "dangling.key"
    dangling.symlink_to(tmp_path / "nowhere.key")
    with pytest.raises(SigningKeyError, match="symlink"):
        load_or_create_key(dangling)  # never created through the link either
    assert not (tmp_path / "nowhere.key").exists()


def test_a_key_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing_component("giving the key file to another user needs root")
    key = tmp_path / "docktrail.key"
    load_or_create_key(key)
    os.chown(key, 65534, -1)
    with pytest.raises(SigningKeyError, match="belongs to uid 65534"):
        load_or_create_key(key)


def test_a_trail_will_not_sign_with_an_unsafe_key(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    db.with_suffix(".key").chmod(0o644)
    with SQLiteTrail(db) as trail, pytest.raises(SigningKeyError):
        trail.checkpoint()


def test_verify_prints_the_fingerprint_of_the_key_it_used(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    expected = fingerprint(load_or_create_key(db.with_suffix(".key")).public_key())
    assert f"key {expected}, trail " in verify(db).out
