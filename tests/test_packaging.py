"""The distribution ships exactly our four import packages and the CLI."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points, packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("listener", "sinks", "notifiers", "config")


@pytest.mark.parametrize("name", PACKAGES)
def test_import_package_comes_from_docktrail_only(name: str) -> None:
    assert set(packages_distributions().get(name, [])) == {"docktrail"}
    module = importlib.import_module(name)
    assert Path(module.__file__ or "").resolve().parent == REPO / name


def test_console_script_points_at_the_cli() -> None:
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "docktrail"]
    assert script.value == "listener.cli:main"


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from listener.cli import main\n"
        "heavy = [m for m in ('docker', 'pydantic', 'sqlite_utils', 'aiokafka', 'apprise')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported at CLI start: {result.stdout}"
