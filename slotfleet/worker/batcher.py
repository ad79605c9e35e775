"""Completion batching: finished attempts are written to the store a few at a time.

A finished job should not stay invisible for long, and one round trip per job wastes the
store. The batcher writes whatever is buffered after at most ``max_delay`` seconds (5 ms
by default), or at once when ``max_items`` are waiting. A failed write is retried with
the same completions (they are idempotent: the store applies a completion only while
the job is still running under the attempt's claim token), so a store blip loses
nothing; while the store stays down the retries back off exponentially, from
``retry_delay`` up to ``max_retry_delay`` seconds.

A batch the store *refuses* (it answered, with an error) is split in halves until the
completion at fault is alone; that one is replaced by a failure saying the store refused
its outcome, and if even that is refused it is dropped with an error in the log (its
lease expires and the job runs again). One bad row never holds up the others.

Until a completion is written its attempt still counts as held: :meth:`held` lists the
leases the worker's heartbeat must keep renewing (a job whose result waits here must not
be handed to another worker), and :meth:`discard` drops a completion whose lease the
store says is gone.

What this module is not: it makes no decisions about outcomes (the executors do) and
never drops a completion the store could still take; if the store stays down past the
worker's stop, the leases expire and the store recovers the jobs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from slotfleet.models import (
    Completion,
    JobId,
    Outcome,
    StoreError,
    StoreUnavailableError,
)
from slotfleet.models.errors import SlotfleetError
from slotfleet.store import Lease, Store

log = logging.getLogger(__name__)


class CompletionBatcher:
    """Buffers completions and writes them with ``store.complete`` in batches."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], datetime],
        max_items: int = 50,
        max_delay: float = 0.005,
        retry_delay: float = 0.1,
        max_retry_delay: float = 2.0,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_items = max_items
        self._max_delay = max_delay
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._buffer: list[Completion] = []
        self._writing: list[Completion] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Completions not yet written (buffered or being written)."""
        return len(self._buffer) + len(self._writing)

    def add(self, completion: Completion) -> None:
        self._buffer.append(completion)
        self._idle.clear()
        self._wake.set()

    def held(self) -> list[Lease]:
        """Leases of the completions not written yet."""
        return [(c.job_id, c.token) for c in (*self._writing, *self._buffer)]

    def discard(self, lease: Lease) -> bool:
        """Drop the buffered completion of ``lease`` (its lease is gone: the store would
        refuse it); return whether there was one."""
        kept = [c for c in self._buffer if (c.job_id, c.token) != lease]
        dropped = len(kept) != len(self._buffer)
        self._buffer = kept
        return dropped

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
            self._writing = batch
            try:
                applied = await self._write(batch)
            except Exception as exc:  # the store is down or flaky: keep them, retry
                log.warning(
                    "writing %d completions failed, retrying in %gs: %s", len(batch), delay, exc
                )
                self._buffer[:0] = batch
                self._writing = []
                await asyncio.sleep(delay)
                delay = min(self._max_retry_delay, delay * 2)
                continue
            finally:
                self._writing = []
            delay = self._retry_delay
            if len(applied) < len(batch):
                log.info(
                    "%d of %d completions were not applied (lease lost or job cancelled)",
                    len(batch) - len(applied),
                    len(batch),
                )
        self._idle.set()

    async def _write(self, batch: list[Completion]) -> list[JobId]:
        """Write ``batch``; when the store refuses it (not an outage), split it so that
        only the completion at fault is set aside."""
        try:
            return await self._store.complete(batch)
        except StoreUnavailableError:
            raise
        except StoreError as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                return await self._write(batch[:half]) + await self._write(batch[half:])
            return await self._write_refused(batch[0], exc)

    async def _write_refused(self, completion: Completion, refusal: SlotfleetError) -> list[JobId]:
        """Record that the store refused ``completion``: the attempt fails, saying why."""
        from slotfleet.models.jobs import JobError  # a refusal: off the hot path

        log.error("the store refused the completion of job %s: %s", completion.job_id, refusal)
        error = JobError(
            attempt=completion.attempt,
            error=f"the store refused this attempt's {completion.outcome.value} outcome: {refusal}",
            at=self._clock(),
        )
        failure = completion.replace(
            outcome=Outcome.FAILED,
            result=None,
            error=error,
            retry_delay=None,
            meta=None,  # the failure must be storable: keep the stored meta
        )
        try:
            return await self._store.complete([failure])
        except StoreUnavailableError:
            raise
        except StoreError as exc:
            log.error(
                "dropping the completion of job %s (its lease will expire and it runs again): %s",
                completion.job_id,
                exc,
            )
            return []
