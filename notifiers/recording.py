"""A channel that keeps what it is sent, for tests of the outbox and the worker.

Like httpx's MockTransport beside its real transports: the worker's logic
(grouping, rate limits, retries, crash recovery) is tested against this; the
real channel (`notifiers.apprise`) is tested against real servers.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

from notifiers.base import Family, Message, SendOutcome


class RecordingChannel:
    """Accepts every message, or fails as scripted: `failures` outcomes first, then success.

    Each item of `failures` is an apprise status name (FAILURE, TIMEOUT).
    `delay_secs` makes every send that slow (a slow destination).
    """

    def __init__(
        self,
        name: str,
        *,
        family: Family = "json",
        failures: Iterable[str] = (),
        delay_secs: float = 0.0,
        body_limit: int | None = None,
        title_limit: int | None = None,
    ) -> None:
        self.name = name
        self.family: Family = family
        self.body_limit = body_limit
        self.title_limit = title_limit
        self.safe_url = f"recording://{name}"
        self.failures = deque(failures)
        self.delay_secs = delay_secs
        self.messages: list[Message] = []
        self.sent_at: list[float] = []  # time.monotonic() of each accepted message
        self.attempts = 0

    async def send(self, message: Message) -> SendOutcome:
        self.attempts += 1
        started = time.monotonic()
        if self.delay_secs:
            await asyncio.sleep(self.delay_secs)
        elapsed_ms = (time.monotonic() - started) * 1000
        if self.failures:
            status = self.failures.popleft()
            return SendOutcome(False, status, elapsed_ms, f"scripted {status.lower()}")
        self.messages.append(message)
        self.sent_at.append(time.monotonic())
        return SendOutcome(True, "SUCCESS", elapsed_ms)
