"""Access to ../shared (corpus and fixtures) from tests.

A user's clone has no ../shared: tests that need it skip with a message.
In CI (CI=true) a missing ../shared is a failure, never a silent skip.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DOCKTRAIL_SHARED", REPO.parent / "shared"))
DATA = Path(__file__).resolve().parent / "data"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_component(message: str) -> None:
    """Skip on a developer's machine; fail in CI, where everything must be present."""
    if in_ci():
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


def require_shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        missing_component(f"{path} is not there (../shared is only beside a CI checkout)")
    return path


_held: dict[str, int] = {}


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Hold a machine-wide lock (re-entrant within this process).

    The kernel's audit daemon slot and the test users are one per machine, so two
    test runs from two checkouts must take turns with them; one name for both
    keeps two runs from each holding one and waiting for the other.
    """
    if _held.get(name):
        _held[name] += 1
        try:
            yield
        finally:
            _held[name] -= 1
        return
    directory = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")
    with open(directory / f"docktrail-tests-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held[name] = 1
        try:
            yield
        finally:
            _held[name] = 0
            fcntl.flock(handle, fcntl.LOCK_UN)
