"""`Attribution`: the pipeline stage that fills `who` from the correlator, holding
Engine events briefly so the audit record of their call can arrive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from listener.correlate.correlator import Correlator
from listener.correlate.effects import NS
from listener.coverage import Coverage, mark_build_step, mark_uncovered
from listener.model.event import Event


class Attribution:
    """Pipeline Stage: fills `who` (and argv `config`) of Docker events before they are written.

    Live (`hold_secs` > 0), a batch waits until the audit log has been read past
    its newest Docker event, or until that event is `hold_secs` old, whichever
    comes first; then every Docker event of the batch is attributed. Offline
    ingest attributes while merging the files and needs no hold.
    """

    def __init__(
        self,
        correlator: Correlator,
        *,
        hold_secs: float = 1.0,
        clock: Callable[[], int] = time.time_ns,
        coverage: Coverage | None = None,
    ) -> None:
        self.correlator = correlator
        self.hold_ns = round(hold_secs * NS)
        self._clock = clock
        self.coverage = coverage  # None: every event counts as covered

    async def before_write(self, batch: list[Event]) -> list[Event]:
        docker = [e for e in batch if e.source == "docker" and e.who.method != "auditd-cli"]
        if not docker:
            return batch
        newest = max(e.time_ns for e in docker)
        if self.hold_ns > 0:
            wait = (newest + self.hold_ns - self._clock()) / NS
            if wait > 0:
                await self.correlator.wait_for(newest, wait)
        for event in sorted(docker, key=lambda e: e.time_ns):
            self.correlator.attribute(event)
            mark_build_step(event, self.correlator)
            mark_uncovered(event, self.coverage)
        self.correlator.evict(min(e.time_ns for e in docker))
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        return None
