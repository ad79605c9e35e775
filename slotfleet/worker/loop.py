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

Every fetch claims under a fresh random token. When a fetch fails, its claim may still
have committed (the reply was lost on the way back), so the token is kept and the
claim handed back (:meth:`Store.release_claim`) before the next fetch: the jobs did not
run here, they go back to the queue at once with their attempt given back, instead of
waiting out a lease.

What this module is not: it runs no jobs and writes no completions. Rate-limit tokens
granted but not used (fewer ready jobs than tokens) are not given back; the window
simply runs a little below its limit.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import Store
from slotfleet.worker.executors import Executor

log = logging.getLogger(__name__)

#: Longest pause after a failing store call; the pause doubles from 0.1 s up to this.
MAX_BACKOFF_SECONDS = 10.0


def new_claim() -> str:
    """A claim token: random, so no other fetch (by any worker, ever) shares it."""
    return secrets.token_hex(8)


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
        on_fetched: Callable[[ClaimedJob], None],
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
        self.retiring = False
        """Set while the worker is chosen for a scale-down (``retiring.py``): no claims."""
        self.fetching = False
        """True from the moment a round decides to claim until its jobs are in the
        executor (a fetch, a rate-limit call, the pushes): a retiring worker confirms
        only once this is false."""
        self.settled = asyncio.Event()
        """Set whenever :attr:`fetching` is false."""
        self.settled.set()
        self.fetched = 0
        """Jobs claimed so far."""
        self.unsettled: list[str] = []
        """Claim tokens of failed fetches not yet handed back (see the module docstring)."""

    async def run(self) -> None:
        backoff = 0.0
        while not self.stopping.is_set():
            self.wake.clear()
            if self.paused or self.retiring:
                await self._wait(self.wake.wait(), None)
                continue
            limit = min(self.executor.free_slots, self.global_free())
            if limit <= 0:
                await self._wait(self.wake.wait(), self.queue.polling_interval)
                continue
            failed = False
            self.fetching = True  # no await since the check above: a retirement waits
            self.settled.clear()
            try:
                try:
                    jobs = await self._claim(limit)
                except Exception as exc:  # store down or flaky: back off, keep the worker
                    log.warning("fetching from queue %s failed: %s", self.queue.name, exc)
                    failed, jobs = True, None
                for job in jobs or ():
                    self.fetched += 1
                    self.on_fetched(job)
                    await self.executor.push(job)
            finally:
                self.fetching = False
                self.settled.set()
            if failed:
                backoff = min(MAX_BACKOFF_SECONDS, max(0.1, backoff * 2))
                await self._wait(None, backoff)
                continue
            backoff = 0.0
            if jobs is None:  # rate limited
                continue
            if len(jobs) < limit:
                # Nothing more is ready: wait for new work (not for slots).
                await self._wait(
                    self.store.wait_for_jobs(self.queue.name, self.queue.polling_interval),
                    self.queue.polling_interval,
                )

    async def settle(self) -> None:
        """Hand back the claims of failed fetches; keep those the store did not answer
        for the next round (their leases expire meanwhile anyway)."""
        while self.unsettled:
            claim = self.unsettled[0]
            released = await self.store.release_claim(self.worker_id, claim)
            self.unsettled.pop(0)
            if released:
                log.warning(
                    "handed back %d jobs of queue %s claimed by a fetch whose reply was lost",
                    len(released),
                    self.queue.name,
                )

    async def _claim(self, limit: int) -> list[ClaimedJob] | None:
        await self.settle()
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
        claim = new_claim()
        try:
            return await self.store.fetch(
                self.queue.name, self.worker_id, limit, self.lease_seconds, claim=claim
            )
        except BaseException:
            self.unsettled.append(claim)  # it may have committed: hand it back
            raise

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
