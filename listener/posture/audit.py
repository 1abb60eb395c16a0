"""Audit-rule posture (CIS 1.1.x): are the watches docktrail needs loaded?

The loaded rules come from `auditctl -l` when docktrail may run it, else from
the rules file that should load them (then the check says so: a file is a
plan, not proof). A missing watch is a `fail`: a blind spot, named.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from listener.posture.check import Check

_WATCH = re.compile(r"(?:^|\s)-w\s+(\S+)")
_PATH_FIELD = re.compile(r"-F\s+(?:path|dir)=(\S+)")


def watched_paths(rules_text: str) -> set[str]:
    """Paths watched by audit rules (`-w PATH` and `-F path=`/`dir=` forms)."""
    found: set[str] = set()
    for line in rules_text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        found.update(_WATCH.findall(line))
        found.update(_PATH_FIELD.findall(line))
    return {path.rstrip("/") or "/" for path in found}


def read_loaded_rules(rules_file: Path, timeout_secs: float = 5.0) -> tuple[str | None, str]:
    """Blocking: (rules text, where from); text None when neither source can be read."""
    auditctl = shutil.which("auditctl")
    if auditctl is not None:
        try:
            done = subprocess.run(
                [auditctl, "-l"], capture_output=True, text=True, timeout=timeout_secs
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0:
            return done.stdout, "auditctl -l"
    try:
        return rules_file.read_text(errors="replace"), str(rules_file)
    except OSError:
        return None, str(rules_file)


def audit_rule_checks(required: Iterable[str], rules_text: str | None, origin: str) -> list[Check]:
    """One check: every required path is watched."""
    if rules_text is None:
        return [Check("audit-watches", "1.1.x", "fail", f"no audit rules readable ({origin})")]
    watched = watched_paths(rules_text)
    missing = tuple(path for path in required if path.rstrip("/") not in watched)
    if missing:
        shown = ", ".join(missing[:5]) + (" …" if len(missing) > 5 else "")
        detail = f"{len(missing)} watch(es) missing ({origin}): {shown}"
        return [Check("audit-watches", "1.1.x", "fail", detail, list(missing), missing)]
    return [Check("audit-watches", "1.1.x", "pass", f"all watches loaded ({origin})", [])]
