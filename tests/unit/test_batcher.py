"""The completion batcher keeps completions through a store outage and writes each one
once the store is back, backing off between failed writes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import cast

import pytest

from slotfleet.models import Completion, JobId, Outcome, StoreUnavailableError
from slotfleet.store import Store
from slotfleet.worker.batcher import CompletionBatcher


class FlakyStore:
    """``complete`` fails while ``down``; records every batch it applies."""

    def __init__(self) -> None:
        self.down = True
        self.failures: list[float] = []
        self.applied: list[Completion] = []

    async def complete(self, completions: Sequence[Completion]) -> list[JobId]:
        if self.down:
            self.failures.append(time.monotonic())
            raise StoreUnavailableError("cannot reach the database at 127.0.0.1:1: refused")
        self.applied.extend(completions)
        return [c.job_id for c in completions]


def completion(n: int) -> Completion:
    return Completion(job_id=JobId(n), worker_id="w", outcome=Outcome.SUCCEEDED, result=n)


async def test_completions_survive_an_outage_and_are_written_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    batcher = CompletionBatcher(
        cast(Store, store), max_items=3, retry_delay=0.02, max_retry_delay=0.08
    )
    task = asyncio.create_task(batcher.run())
    try:
        for n in range(1, 8):
            batcher.add(completion(n))
        await asyncio.sleep(0.5)
        assert batcher.pending == 7
        assert not await batcher.flush(timeout=0.05)
        gaps = [b - a for a, b in zip(store.failures, store.failures[1:], strict=False)]
        assert gaps[0] < 0.06, "the first retry comes soon"
        assert max(gaps) >= 0.07, "retries back off while the store stays down"
        assert max(gaps) < 0.2, "the backoff is capped"
        store.down = False
        batcher.add(completion(8))
        assert await batcher.flush(timeout=2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [c.job_id for c in store.applied] == [JobId(n) for n in range(1, 9)]
    assert batcher.pending == 0
    assert all("Traceback" not in r.getMessage() for r in caplog.records)
