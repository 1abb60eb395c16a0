"""A running event loop kept busy as a loop under load is: Python in short slices,
then a poll (`await asyncio.sleep(0)`). Benches and tests of the loop giving way
to its threads (`listener.giveway`) run it beside what they measure, with or without the naps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

from listener import giveway


async def python_in_slices(
    done: asyncio.Event, slice_secs: float, cap_secs: float | None = None
) -> int:
    """Slices of `slice_secs` until `done` is set, or `cap_secs` have passed (then it sets
    `done`); the number of slices run."""
    slices, until = 0, None if cap_secs is None else time.perf_counter() + cap_secs
    while not done.is_set():
        if until is not None and time.perf_counter() > until:
            done.set()
            break
        end = time.perf_counter() + slice_secs
        while time.perf_counter() < end:
            sum(range(50))
        slices += 1
        await asyncio.sleep(0)
    return slices


@contextlib.contextmanager
def giving_way(enabled: bool) -> Iterator[None]:
    """The loop's naps as docktrail takes them, or none (`enabled` false: as before)."""
    nap = giveway._nap
    giveway._nap = nap if enabled else _no_nap
    try:
        yield
    finally:
        giveway._nap = nap


def _no_nap() -> None:
    pass
