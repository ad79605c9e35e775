"""Completion batching: finished attempts are written to the store a few at a time.

A finished job should not stay invisible for long, and one round trip per job wastes the
store. The batcher writes whatever is buffered after at most ``max_delay`` seconds (5 ms
by default), or at once when ``max_items`` are waiting. A failed write is retried with
the same completions (they are idempotent: the store applies a completion only while
the job is still running under this worker's lease), so a store blip loses nothing; while
the store stays down the retries back off exponentially, from ``retry_delay`` up to
``max_retry_delay`` seconds.

What this module is not: it makes no decisions about outcomes (the executors do) and
never drops a completion on its own; if the store stays down past the worker's stop,
the leases expire and the store recovers the jobs.
"""

from __future__ import annotations

import asyncio
import logging

from slotfleet.models import Completion
from slotfleet.store import Store

log = logging.getLogger(__name__)


class CompletionBatcher:
    """Buffers completions and writes them with ``store.complete`` in batches."""

    def __init__(
        self,
        store: Store,
        *,
        max_items: int = 50,
        max_delay: float = 0.005,
        retry_delay: float = 0.1,
        max_retry_delay: float = 2.0,
    ) -> None:
        self._store = store
        self._max_items = max_items
        self._max_delay = max_delay
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._buffer: list[Completion] = []
        self._writing = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Completions not yet written (buffered or being written)."""
        return len(self._buffer) + self._writing

    def add(self, completion: Completion) -> None:
        self._buffer.append(completion)
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        """Write batches until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if len(self._buffer) < self._max_items:
                await asyncio.sleep(self._max_delay)
            await self._write_all()

    async def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for everything buffered to be written (the
        :meth:`run` task must be running); return whether it was."""
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _write_all(self) -> None:
        delay = self._retry_delay
        while self._buffer:
            batch = self._buffer[: self._max_items]
            del self._buffer[: len(batch)]
            self._writing = len(batch)
            try:
                applied = await self._store.complete(batch)
            except Exception as exc:  # the store is down or flaky: keep them, retry
                log.warning(
                    "writing %d completions failed, retrying in %gs: %s", len(batch), delay, exc
                )
                self._buffer[:0] = batch
                self._writing = 0
                await asyncio.sleep(delay)
                delay = min(self._max_retry_delay, delay * 2)
                continue
            finally:
                self._writing = 0
            delay = self._retry_delay
            if len(applied) < len(batch):
                log.info(
                    "%d of %d completions were not applied (lease lost or job cancelled)",
                    len(batch) - len(applied),
                    len(batch),
                )
        self._idle.set()
