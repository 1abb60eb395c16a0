"""Progress of long-running commands on stderr, and their closing summary.

A bar is drawn only when asked for or when stderr is a terminal, so scripts
and pipes get the summary line alone. Updates are throttled: a bar redrawn
per event would cost more than the work it reports on.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import click


class Progress:
    """A bar of `total` steps labelled `label`; `advance_to(done)` moves it."""

    def __init__(self, label: str, total: int, enabled: bool | None) -> None:
        self.enabled = (sys.stderr.isatty() if enabled is None else enabled) and total > 0
        self._label = label
        self._total = total
        self._shown = 0
        self._step = max(total // 200, 1)  # at most ~200 redraws
        self._bar: Any = None
        self.started = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled:
            self._bar = click.progressbar(length=self._total, label=self._label, file=sys.stderr)
            self._bar.__enter__()
        return self

    def advance_to(self, done: int, total: int | None = None) -> None:
        """`total` is accepted for callbacks that report it; the bar keeps its own."""
        if self._bar is None or (done - self._shown < self._step and done < self._total):
            return
        self._bar.update(done - self._shown)
        self._shown = done

    def finish(self) -> None:
        """Fill the bar: the work is done even where the last step was not reported."""
        self.advance_to(self._total)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def by_rule(rules: Iterable[str], shown: int = 8) -> str:
    """`privileged-container 3, runs-as-root 2, …`: the most frequent first."""
    counts = Counter(rules).most_common()
    text = ", ".join(f"{rule} {n}" for rule, n in counts[:shown])
    return text + (f", … {len(counts) - shown} more rules" if len(counts) > shown else "")
