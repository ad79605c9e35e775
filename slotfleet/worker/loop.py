"""The fetch loop of one queue: claim as many ready jobs as there are free slots.

Each round takes ``min(executor.free_slots, worker-wide free slots)`` (and, with a rate
limit, only as many starts as the shared window grants), claims that many jobs in one
``store.fetch`` and pushes them to the executor. When the queue had fewer ready jobs
than free slots it waits for ``store.wait_for_jobs`` (a NOTIFY on Postgres, a short
sleep on SQLite); when the slots were the limit it waits for a slot to free up and
fetches again at once, so a backlog drains without polling delays.

A fetch is never interrupted: a stop request is noticed between rounds, so a job the
store has just handed over is always pushed to the executor (and then drained) rather
than left leased to nobody.

What this module is not: it runs no jobs and writes no completions. Rate-limit tokens
granted but not used (fewer ready jobs than tokens) are not given back; the window
simply runs a little below its limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slotfleet.models import QueuedJob
from slotfleet.store import Store
from slotfleet.worker.executors import Executor

log = logging.getLogger(__name__)

#: Longest pause after a failing store call; the pause doubles from 0.1 s up to this.
MAX_BACKOFF_SECONDS = 10.0


class QueueLoop:
    """Feeds one executor from one queue until ``stopping`` is set."""

    def __init__(
        self,
        store: Store,
        executor: Executor,
        *,
        worker_id: str,
        lease_seconds: float,
        global_free: Callable[[], int],
        stopping: asyncio.Event,
        on_fetched: Callable[[QueuedJob], None],
    ) -> None:
        self.store = store
        self.executor = executor
        self.queue = executor.queue
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.global_free = global_free
        self.stopping = stopping
        self.on_fetched = on_fetched
        self.wake = asyncio.Event()
        """Set when a slot frees up or the queue is resumed."""
        self.paused = executor.queue.paused
        self.fetching = False
        """True while a fetch (or rate-limit call) is in progress."""
        self.fetched = 0
        """Jobs claimed so far."""

    async def run(self) -> None:
        backoff = 0.0
        while not self.stopping.is_set():
            self.wake.clear()
            if self.paused:
                await self._wait(self.wake.wait(), None)
                continue
            limit = min(self.executor.free_slots, self.global_free())
            if limit <= 0:
                await self._wait(self.wake.wait(), self.queue.polling_interval)
                continue
            self.fetching = True
            try:
                jobs = await self._claim(limit)
            except Exception as exc:  # store down or flaky: back off, keep the worker alive
                backoff = min(MAX_BACKOFF_SECONDS, max(0.1, backoff * 2))
                log.warning("fetching from queue %s failed: %s", self.queue.name, exc)
                await self._wait(None, backoff)
                continue
            finally:
                self.fetching = False
            backoff = 0.0
            if jobs is None:  # rate limited
                continue
            for job in jobs:
                self.fetched += 1
                self.on_fetched(job)
                await self.executor.push(job)
            if len(jobs) < limit:
                # Nothing more is ready: wait for new work (not for slots).
                await self._wait(
                    self.store.wait_for_jobs(self.queue.name, self.queue.polling_interval),
                    self.queue.polling_interval,
                )

    async def _claim(self, limit: int) -> list[QueuedJob] | None:
        rate = self.queue.rate_limit
        if rate is not None:
            granted = await self.store.take_rate_tokens(
                self.queue.name, limit, rate.count, rate.period
            )
            if granted <= 0:
                pause = max(0.05, min(self.queue.polling_interval, rate.period / rate.count))
                await self._wait(None, pause)
                return None
            limit = granted
        return await self.store.fetch(self.queue.name, self.worker_id, limit, self.lease_seconds)

    async def _wait(self, awaitable: Awaitable[Any] | None, timeout: float | None) -> None:
        """Wait for ``awaitable``, ``timeout`` or the stop request, whichever is first."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self.stopping.wait())]
        if awaitable is not None:
            waiters.append(asyncio.ensure_future(awaitable))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
