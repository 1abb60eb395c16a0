"""The threads of the live Docker source (`docker_live`): the events stream and its watchdog.

* one reader thread per connection (`EventStream`) iterates docker-py's
  `/events` stream and hands each raw dict to the event loop; nothing else,
  because dockerd skips a subscriber that lags 100 ms;
* one watchdog thread (`StallWatchdog`) notices when the whole process was
  paused (SIGSTOP, an overloaded host), which is when dockerd skips us; it
  delivers a `Stall`, after which the source reads the Engine's buffer again.

What they deliver to the loop: each raw event, a `Stall`, and, last, a
`StreamEnded`. The loop drops the events a replay repeats (`RecentIds`).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from listener.sources.docker_engine import describe_error

_NS = 1_000_000_000

REPLAY_OVERLAP_NS = 1_000_000  # resume a little early: concurrent events may be out of order
WATCHDOG_TICK_SECS = 0.05
WATCHDOG_TICK_NS = int(WATCHDOG_TICK_SECS * _NS)


class RecentIds:
    """Ids handed on lately: a replay after a reconnect or stall repeats some."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        """True when `event_id` is new."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The reader thread's last word: the connection is over (error, or closed by us)."""

    stream: EventStream
    error: str | None


@dataclass(frozen=True, slots=True)
class Stall:
    """The process did not run for `secs`: the Engine may have skipped events after `since_ns`.

    `stream` is the connection it happened to; a stall of an earlier connection
    is left to that reconnect's reconciliation.
    """

    since_ns: int
    resumed_ns: int
    secs: float
    stream: object = None


class EventStream:
    """The reader thread of one connection. It reads and hands over; it does nothing slow."""

    def __init__(
        self,
        stream: Any,
        release: Callable[[], None],
        since_ns: int,
        deliver: Callable[[object], None],
    ) -> None:
        self.last_time_ns = since_ns  # highest timeNano handed over (read by the watchdog)
        self.last_read = time.monotonic()
        self._stream = stream
        self._release = release
        self._deliver = deliver
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Ends the stream from any thread; the reader then delivers `StreamEnded`."""
        self._closed = True
        with contextlib.suppress(Exception):  # already closed by the Engine
            self._stream.close()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        error: str | None = None
        try:
            for raw in self._stream:
                self.last_read = time.monotonic()
                time_nano = raw.get("timeNano") if isinstance(raw, dict) else None
                if isinstance(time_nano, int) and time_nano > self.last_time_ns:
                    self.last_time_ns = time_nano
                self._deliver(raw)
        except Exception as exc:  # any failure ends this connection; the loop reconnects
            error = describe_error(exc)
        if error is None and not self._closed:
            error = "the Engine closed the events stream"
        with contextlib.suppress(Exception):
            self._release()
        self._deliver(StreamEnded(self, None if self._closed else error))


class StallWatchdog:
    """Notices that the whole process was paused, from a jump of the monotonic clock.

    dockerd gives each reader a 1024-event queue and drops an event for a reader
    whose queue stays full for 100 ms; nothing tells the reader. A thread of its
    own, because a busy event loop is not a stall (the reader thread keeps
    reading: the loop gives way to it, `listener.giveway`) while a stopped
    process is.
    """

    def __init__(
        self,
        threshold_secs: float,
        current: Callable[[], EventStream | None],
        deliver: Callable[[object], None],
    ) -> None:
        self._threshold = threshold_secs
        self._current = current
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docker-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        previous = time.monotonic()
        stream = self._current()
        seen = stream.last_time_ns if stream is not None else 0
        while not self._stop.wait(WATCHDOG_TICK_SECS):
            now = time.monotonic()
            if now - previous > self._threshold and stream is not None:
                resumed = time.time_ns()
                self._deliver(Stall(seen, resumed, now - previous, stream))
            previous = now
            stream = self._current()  # what had been read when the next pause begins
            seen = stream.last_time_ns if stream is not None else 0
