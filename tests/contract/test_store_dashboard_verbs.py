"""The store verbs the dashboard reads and acts through, on SQLite and PostgreSQL alike:
filtered newest-first pages with keyset paging (whole jobs and summaries), jobs finished
per time bucket, the retry of a finished job, and where each attempt ran.

Expected pages are computed from the jobs' own rows (every job read back with ``get``),
never written down by hand.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import pytest

from slotfleet.models import (
    SUMMARY_ERROR_CHARS,
    Job,
    JobError,
    JobId,
    JobState,
    Outcome,
    QueuedJob,
)
from slotfleet.store import Store
from tests.contract.test_store_contract import claim, done

LEASE = 30.0


def job(**changes: object) -> Job:
    return Job.model_validate({"func": "tests.tasks:add", **changes})


def failure(attempt: int, text: str) -> JobError:
    return JobError(attempt=attempt, error=text, traceback="Traceback ...", at=datetime.now(UTC))


async def mixed_jobs(store: Store) -> list[QueuedJob]:
    """48 jobs over two queues and three functions, then some claimed, some finished in
    each way, so every state appears with every filter."""
    funcs = ["tests.tasks:add", "tests.tasks:fail", "tests.tasks:sleep"]
    jobs = [
        job(queue=queue, func=func, max_attempts=2)
        for queue, func, _ in itertools.product(["mail", "pdf"], funcs, range(8))
    ]
    await store.enqueue(jobs)
    outcomes = itertools.cycle(
        [Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED, None, Outcome.SUCCEEDED]
    )
    for queue in ("mail", "pdf"):
        claimed = await store.fetch(queue, f"w-{queue}", 18, LEASE, claim=claim())
        completions = []
        for queued, outcome in zip(claimed, outcomes, strict=False):
            if outcome is None:
                continue  # stays running
            error = None if outcome is Outcome.SUCCEEDED else failure(1, "x" * 300)
            completions.append(done(queued, outcome, error=error))
        await store.complete(completions)
    listed = [await store.get(JobId(i)) for i in range(1, 49)]
    assert all(found is not None for found in listed)
    return [found for found in listed if found is not None]


def expected(
    jobs: list[QueuedJob],
    *,
    queue: str | None = None,
    states: list[JobState] | None = None,
    func: str | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[JobId]:
    kept = [
        j.id
        for j in jobs
        if (queue is None or j.queue == queue)
        and (states is None or j.state in states)
        and (func is None or j.func == func)
        and (after_id is None or j.id < after_id)
    ]
    return sorted(kept, reverse=True)[:limit]


FILTERS: list[dict[str, object]] = [
    {},
    {"queue": "pdf"},
    {"states": [JobState.FAILED]},
    {"states": [JobState.RUNNING, JobState.PENDING]},
    {"func": "tests.tasks:fail"},
    {"queue": "mail", "states": [JobState.SUCCEEDED]},
    {"queue": "mail", "func": "tests.tasks:sleep"},
    {"queue": "pdf", "func": "tests.tasks:add", "states": [JobState.CANCELLED, JobState.FAILED]},
    {"func": "tests.tasks:missing"},
    {"states": []},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(sorted(f)) or "none")
async def test_pages_are_newest_first_and_keyset_paging_walks_every_match_once(
    store: Store, filters: dict[str, object]
) -> None:
    jobs = await mixed_jobs(store)
    assert {j.state for j in jobs} == {
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.RUNNING,
        JobState.PENDING,
    }
    want = expected(jobs, **filters)  # type: ignore[arg-type]
    assert await store.list_jobs(limit=100, **filters) == [  # type: ignore[arg-type]
        j for i in want for j in jobs if j.id == i
    ]
    seen: list[int] = []
    after: JobId | None = None
    while True:
        page = await store.list_summaries(limit=5, after_id=after, **filters)  # type: ignore[arg-type]
        full = await store.list_jobs(limit=5, after_id=after, **filters)  # type: ignore[arg-type]
        assert [s.id for s in page] == [j.id for j in full]
        seen += [s.id for s in page]
        if len(page) < 5:
            break
        after = page[-1].id
    assert seen == want


async def test_a_summary_is_the_row_without_payloads_and_a_short_last_error(store: Store) -> None:
    [queued] = await store.enqueue([job(kwargs={"big": "y" * 1000}, max_attempts=3)])
    [first] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    await store.complete([done(first, Outcome.RETRY, error=failure(1, "first"), retry_delay=0)])
    [second] = await store.fetch("default", "w2", 1, LEASE, claim=claim())
    await store.complete([done(second, Outcome.FAILED, error=failure(2, "é" * 300))])
    whole = await store.get(queued.id)
    [summary] = await store.list_summaries()
    assert whole is not None
    for name in type(summary).model_fields:
        if name != "last_error":
            assert getattr(summary, name) == getattr(whole, name), name
    assert summary.last_error == "é" * SUMMARY_ERROR_CHARS
    assert summary.claimed_by == "w2"
    [fresh] = await store.enqueue([job()])
    assert (await store.list_summaries(limit=1))[0].last_error is None
    assert (await store.list_summaries(limit=1))[0].id == fresh.id


async def test_each_attempt_records_its_worker_and_the_job_keeps_its_last(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    await store.fetch("default", "w1", 1, 0.2, claim=claim())
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == [queued.id]
    [claimed] = await store.fetch("default", "w2", 1, LEASE, claim=claim())
    assert (claimed.claimed_by, claimed.lease_owner) == ("w2", "w2")
    await store.complete([done(claimed, Outcome.RETRY, error=failure(2, "boom"), retry_delay=0)])
    [third] = await store.fetch("default", "w3", 1, LEASE, claim=claim())
    await store.complete([done(third, Outcome.SUCCEEDED, result=7)])
    final = await store.get(queued.id)
    assert final is not None
    assert (final.state, final.lease_owner, final.claimed_by) == (JobState.SUCCEEDED, None, "w3")
    assert [(e.attempt, e.worker) for e in final.errors] == [(1, "w1"), (2, "w2")]


async def test_finished_counts_per_queue_and_bucket_by_outcome(store: Store) -> None:
    jobs = await mixed_jobs(store)
    counts = await store.finished_counts(window_seconds=600, bucket_seconds=3600)
    now = await store.now()
    for c in counts:
        assert c.start.timestamp() % 3600 == 0
        assert c.start <= now
    totals: dict[tuple[str, str], int] = {}
    for c in counts:
        for outcome in ("succeeded", "failed", "cancelled"):
            key = (c.queue, outcome)
            totals[key] = totals.get(key, 0) + getattr(c, outcome)
    for queue in ("mail", "pdf"):
        for outcome in ("succeeded", "failed", "cancelled"):
            want = sum(1 for j in jobs if j.queue == queue and j.state.value == outcome)
            assert totals[(queue, outcome)] == want, (queue, outcome)
    assert sum(totals.values()) > 0
    assert all(c.queue in ("mail", "pdf") for c in counts)


async def test_finished_counts_of_an_idle_store_are_empty(store: Store) -> None:
    await store.enqueue([job()])
    assert await store.finished_counts(window_seconds=60, bucket_seconds=10) == []


async def test_retry_queues_a_failed_or_cancelled_job_again_under_its_id(store: Store) -> None:
    failed, cancelled, running, succeeded = await store.enqueue(
        [job(max_attempts=1) for _ in range(4)]
    )
    claimed = {j.id: j for j in await store.fetch("default", "w1", 4, LEASE, claim=claim())}
    await store.complete(
        [
            done(claimed[failed.id], Outcome.FAILED, error=failure(1, "bad")),
            done(claimed[succeeded.id], Outcome.SUCCEEDED, result=1),
        ]
    )
    await store.request_cancel(cancelled.id)
    await store.complete([done(claimed[cancelled.id], Outcome.CANCELLED)])

    result = await store.retry(failed.id)
    assert result is not None
    again, retried = result
    assert retried
    assert (again.id, again.state, again.attempts) == (failed.id, JobState.PENDING, 0)
    assert (again.result, again.completed_at, again.cancel_requested_at) == (None, None, None)
    assert [e.error for e in again.errors] == ["bad"]
    assert await store.get(failed.id) == again

    result = await store.retry(cancelled.id)
    assert result is not None
    assert result[1]
    assert result[0].cancel_requested_at is None
    refetched = await store.fetch("default", "w2", 10, LEASE, claim=claim())
    assert {j.id for j in refetched} == {failed.id, cancelled.id}
    assert all(j.attempts == 1 and j.claimed_by == "w2" for j in refetched)

    for other in (running, succeeded, failed):  # failed is running again now
        before = await store.get(other.id)
        result = await store.retry(other.id)
        assert result == (before, False)
    assert await store.retry(JobId(10**9)) is None


async def test_retry_refuses_while_another_unfinished_job_holds_the_unique_key(
    store: Store,
) -> None:
    [first] = await store.enqueue([job(unique_key="k")])
    [mine] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    await store.complete([done(mine, Outcome.FAILED, error=failure(1, "x"))])
    [second] = await store.enqueue([job(unique_key="k")])
    assert second.id != first.id
    result = await store.retry(first.id)
    assert result is not None
    assert result[1] is False
    assert result[0].state is JobState.FAILED
    await store.request_cancel(second.id)
    result = await store.retry(first.id)
    assert result is not None
    assert result[1] is True
