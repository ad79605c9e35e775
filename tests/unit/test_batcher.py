"""The completion batcher keeps completions through a store outage and writes each one
once the store is back, backing off between failed writes; a batch the store refuses is
split so that only the completion at fault is set aside."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import cast

import pytest

from slotfleet.models import Completion, JobId, Outcome, StoreError, StoreUnavailableError
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


def completion(n: int, result: object = None) -> Completion:
    return Completion(
        job_id=JobId(n),
        worker_id="w",
        token=f"t{n}",
        attempt=1,
        outcome=Outcome.SUCCEEDED,
        result=n if result is None else result,
    )


def batcher_for(store: object, **options: float) -> CompletionBatcher:
    return CompletionBatcher(cast(Store, store), clock=lambda: datetime.now(UTC), **options)  # type: ignore[arg-type]


class PickyStore:
    """Refuses (answers with an error, not an outage) any batch holding a completion whose
    result is ``"poison"``, and every completion of job 13; applies the rest."""

    def __init__(self) -> None:
        self.applied: list[Completion] = []
        self.calls = 0

    async def complete(self, completions: Sequence[Completion]) -> list[JobId]:
        self.calls += 1
        if any(c.result == "poison" or c.job_id == 13 for c in completions):
            raise StoreError("database error: unsupported Unicode escape sequence")
        self.applied.extend(completions)
        return [c.job_id for c in completions]


async def test_a_refused_completion_is_set_aside_and_the_rest_land(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Regression (issue 9, finding 4): one completion the store refused was retried with
    its whole batch forever, so no later completion of that worker was ever written."""
    store = PickyStore()
    batcher = batcher_for(store, max_items=50)
    task = asyncio.create_task(batcher.run())
    try:
        for n in range(1, 21):
            batcher.add(completion(n, "poison" if n == 7 else None))
        assert await batcher.flush(timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    by_job = {c.job_id: c for c in store.applied}
    assert sorted(by_job) == [n for n in range(1, 21) if n != 13]
    refused = by_job[JobId(7)]
    assert refused.outcome is Outcome.FAILED
    assert refused.token == "t7"
    assert refused.error is not None
    assert refused.error.attempt == 1
    assert refused.error.error.startswith("the store refused this attempt's succeeded outcome")
    assert all(by_job[JobId(n)].outcome is Outcome.SUCCEEDED for n in (1, 6, 8, 20))
    assert "dropping the completion of job 13" in caplog.text
    assert batcher.pending == 0


async def test_held_leases_include_unwritten_completions_and_discard_drops_one() -> None:
    store = FlakyStore()
    batcher = batcher_for(store)
    batcher.add(completion(1))
    batcher.add(completion(2))
    assert batcher.held() == [(JobId(1), "t1"), (JobId(2), "t2")]
    assert batcher.discard((JobId(1), "another-attempt")) is False
    assert batcher.discard((JobId(1), "t1")) is True
    assert batcher.held() == [(JobId(2), "t2")]


async def test_completions_survive_an_outage_and_are_written_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    batcher = batcher_for(store, max_items=3, retry_delay=0.02, max_retry_delay=0.08)
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


class RefusesMeta:
    """Refuses any batch holding a completion that carries meta (as a store would refuse
    meta it cannot keep); applies the rest."""

    def __init__(self) -> None:
        self.applied: list[Completion] = []

    async def complete(self, completions: Sequence[Completion]) -> list[JobId]:
        if any(c.meta is not None for c in completions):
            raise StoreError("database error: cannot store this meta")
        self.applied.extend(completions)
        return [c.job_id for c in completions]


async def test_the_failure_replacing_a_refused_completion_leaves_meta_alone() -> None:
    """The failure written in place of a refused completion must itself be storable: it
    carries no meta (the stored meta stays), or it would be refused in turn and dropped,
    leaving the job to its lease."""
    store = RefusesMeta()
    batcher = batcher_for(store)
    task = asyncio.create_task(batcher.run())
    try:
        batcher.add(completion(1).replace(meta={"progress": 1}))
        batcher.add(completion(2))
        assert await batcher.flush(timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    by_job = {c.job_id: c for c in store.applied}
    assert by_job[JobId(1)].outcome is Outcome.FAILED
    assert by_job[JobId(1)].meta is None
    assert by_job[JobId(2)].outcome is Outcome.SUCCEEDED
