"""`docktrail run`'s share of intents: the stage, the expiry timer, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from config.models import DocktrailConfig
from listener.expiry import ExpiryWatch, expiry_timer, prime_expiry
from listener.intent_api import IntentApi, load_token
from listener.intents import IntentBook, IntentStage
from listener.model.event import Event
from listener.pipeline import Pipeline
from listener.sources.docker_live import DockerSource


@dataclass(slots=True)
class IntentService:
    trail: Any
    book: IntentBook
    expiry: ExpiryWatch
    stage: IntentStage
    api: IntentApi | None = None

    @classmethod
    async def load(cls, trail: Any, host: str) -> IntentService:
        book = IntentBook()
        expiry = ExpiryWatch(host)

        def prime(t: Any) -> None:
            book.refresh(t)
            prime_expiry(t, book, expiry)

        await trail.call(prime)
        return cls(trail, book, expiry, IntentStage(trail, book, expiry, live=True))

    @contextlib.asynccontextmanager
    async def serving(
        self, config: DocktrailConfig, host: str, pipeline: Pipeline, source: DockerSource
    ) -> AsyncIterator[None]:
        """The expiry timer and, when enabled, the endpoint, for as long as the service runs."""
        timer = asyncio.create_task(
            expiry_timer(
                self.expiry, source.want_sweep, max_sleep_secs=config.intents.expiry_check_secs
            ),
            name="expiry-timer",
        )
        api_config = config.intents.api
        if api_config.enabled:

            async def store(event: Event) -> None:
                await pipeline.put(event)
                await pipeline.flush()  # answered once it is in the trail

            async def refresh() -> None:
                await self.trail.call(self.book.refresh)

            self.api = IntentApi(
                api_config,
                token=await asyncio.to_thread(load_token, api_config),
                host=host,
                store=store,
                book=self.book,
                refresh=refresh,
            )
            await self.api.start()
        try:
            yield
        finally:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
            if self.api is not None:
                await self.api.aclose()
