"""Access to ../shared (corpus and fixtures) from tests.

A user's clone has no ../shared: tests that need it skip with a message.
In CI (CI=true) a missing ../shared is a failure, never a silent skip.
"""

from __future__ import annotations

import os
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
