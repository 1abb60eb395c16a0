"""What the live Docker source (`docker_live`) counts: `SourceStats`, read by the metrics.

Its own module because the source's parts (`docker_reconcile`, `docker_sweep`)
count into it too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class SourceStats:
    events: int = 0  # Engine events handed on
    repeated: int = 0  # Engine events seen again (replays after a reconnect or stall)
    malformed: int = 0
    connections: int = 0
    gaps: int = 0
    stalls: int = 0
    observed: int = 0
    inspect_gone: int = 0
    inspect_failed: int = 0
    sweeps: int = 0  # posture sweeps done
    posture: int = 0  # containers a sweep recorded (configuration not judged before)
