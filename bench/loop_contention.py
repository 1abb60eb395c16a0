"""Benchmark: do the service's reader threads keep reading while the event loop is busy?

    .venv/bin/python bench/loop_contention.py [--secs 3] [--repeat 3]

The Docker events stream is read on a thread of its own (`EventStream`), and
the audit log and the Kafka consumer's checks run on threads the loop awaits
(`listener.giveway.to_thread`). Each must take the GIL back after every read.
This bench feeds `EventStream` JSON lines through a socket (an Engine's event
stream is one) at `--offered` lines/s and counts the lines it hands over in
`--secs`, and counts `to_thread` jobs of `--job-reads` small file reads each,
with the loop:

- ``idle``: waiting (the baseline);
- ``busy``: running Python in 0.1 ms slices, the reader held `in_flight` (as
  `DockerSource.run` holds it), the loop giving way;
- ``busy_no_give_way``: the same loop with no give way (as before).

Also the loop's own work while busy (slices/s) with and without giving way:
what the naps cost it.

Output: `FIGURE loop_contention.<what>.<variant> <rate> <unit> baseline=<idle>
ratio=<variant / idle>` (median of `--repeat`; min and max beside).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for where in (REPO, REPO / "bench"):
    if str(where) not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, str(where))

from busyloop import giving_way, python_in_slices  # noqa: E402
from figures import figure  # noqa: E402

from listener import giveway  # noqa: E402
from listener.app import tune_threads  # noqa: E402
from listener.sources.docker_stream import EventStream  # noqa: E402

SLICE_SECS = 0.0001  # the loop runs Python this long between two yields
VARIANTS = ("idle", "busy", "busy_no_give_way")
LINE = {
    "status": "start",
    "id": "a" * 64,
    "Type": "container",
    "Action": "start",
    "Actor": {"ID": "a" * 64, "Attributes": {"image": "busybox", "name": "web-1"}},
    "scope": "local",
    "time": 1_700_000_000,
    "timeNano": 1_700_000_000_000_000_000,
}


class Feed:
    """An Engine-like stream: JSON lines into a socket at a steady rate, read as dicts."""

    def __init__(self, offered: int) -> None:
        self.ours, self.theirs = socket.socketpair()
        self._line = (json.dumps(LINE) + "\n").encode()
        self._every = 10 / offered  # ten lines at a time
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def __enter__(self) -> Feed:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self.theirs.close()
        self._thread.join()
        self.ours.close()

    def _write(self) -> None:
        burst = self._line * 10
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.theirs.sendall(burst)
            time.sleep(self._every)

    def events(self) -> Iterator[dict[str, Any]]:
        with self.ours.makefile("rb") as lines:
            for line in lines:
                yield json.loads(line)


async def _during(variant: str, secs: float, work: Callable[[], Any]) -> tuple[float, int]:
    """Run `work()` (a coroutine) for `secs` beside the loop of `variant`: its count, and
    the loop's slices/s."""
    done = asyncio.Event()
    busy = None if variant == "idle" else asyncio.create_task(python_in_slices(done, SLICE_SECS))
    started = time.perf_counter()
    with giving_way(variant != "busy_no_give_way"), giveway.of_running_loop().in_flight():
        count = await work()
    done.set()
    slices = 0 if busy is None else await busy
    return count, slices / (time.perf_counter() - started)


async def stream_lines(variant: str, secs: float, offered: int) -> tuple[float, float]:
    """Lines/s `EventStream` handed over, and the loop's slices/s."""
    read = [0]

    def deliver(_: object) -> None:
        read[0] += 1

    with Feed(offered) as feed:
        stream = EventStream(feed.events(), lambda: None, 0, deliver)
        stream.start()

        async def work() -> int:
            await asyncio.sleep(0.2)  # the loop busy before the count starts
            first = read[0]
            await asyncio.sleep(secs)
            return read[0] - first

        count, slices = await _during(variant, secs, work)
        stream.close()
    return count / secs, slices


async def thread_jobs(variant: str, secs: float, reads: int, path: Path) -> tuple[float, float]:
    """`to_thread` jobs/s (each `reads` reads of a small file), and the loop's slices/s."""

    def job() -> None:
        with path.open("rb", buffering=0) as file:
            for _ in range(reads):
                file.seek(0)
                file.read(4096)

    async def work() -> int:
        jobs, until = 0, time.perf_counter() + secs
        while time.perf_counter() < until:
            await giveway.to_thread(job)
            jobs += 1
        return jobs

    count, slices = await _during(variant, secs, work)
    return count / secs, slices


def report(name: str, unit: str, runs: dict[str, list[float]]) -> None:
    base = statistics.median(runs["idle"])
    for variant, values in runs.items():
        mid = statistics.median(values)
        print(f"{name:14s} {variant:18s} {mid:10.0f} {unit} ({mid / base:.3f}x idle)")
        figure(
            f"loop_contention.{name}.{variant}",
            mid,
            unit,
            baseline=base,
            ratio=mid / base,
            spread=values,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secs", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--offered", type=int, default=10_000, help="lines/s written")
    parser.add_argument("--job-reads", type=int, default=100)
    args = parser.parse_args()
    tune_threads()  # as `docktrail run`
    lines: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    jobs: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    slices: dict[str, list[float]] = {variant: [] for variant in VARIANTS[1:]}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "small"
        path.write_bytes(b"x" * 4096)
        for _ in range(args.repeat):  # interleaved: a busy moment hits every variant alike
            for variant in VARIANTS:
                rate, loop_rate = asyncio.run(stream_lines(variant, args.secs, args.offered))
                lines[variant].append(rate)
                done, _ = asyncio.run(thread_jobs(variant, args.secs, args.job_reads, path))
                jobs[variant].append(done)
                if variant != "idle":
                    slices[variant].append(loop_rate)
    report("stream", "lines/s", lines)
    report("to_thread", "jobs/s", jobs)
    base = statistics.median(slices["busy_no_give_way"])
    mid = statistics.median(slices["busy"])
    print(f"loop slices/s while busy: {mid:.0f} giving way, {base:.0f} not ({mid / base:.3f}x)")
    figure(
        "loop_contention.loop_slices.busy",
        mid,
        "slices/s",
        baseline=base,
        ratio=mid / base,
        spread=slices["busy"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
