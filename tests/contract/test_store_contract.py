"""One suite for both stores (SQLite and PostgreSQL), through the ``store`` fixture.

Every test states a rule of the :class:`~slotfleet.store.Store` protocol. Sleeps are
short and only let leases expire; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from slotfleet.models import (
    Completion,
    Job,
    JobError,
    JobId,
    JobState,
    Outcome,
    QueuedJob,
    WorkerHeartbeat,
)
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import Store
from slotfleet.store import sqlite as sqlite_store
from tests.fixtures.stores import StoreFactory

LEASE = 30.0


def job(**changes: object) -> Job:
    return Job.model_validate({"func": "tests.tasks:add", **changes})


def claim() -> str:
    """A fresh claim token, as a worker's fetch loop makes one per fetch."""
    return secrets.token_hex(8)


def done(
    claimed: ClaimedJob | QueuedJob, outcome: Outcome = Outcome.SUCCEEDED, **kw: Any
) -> Completion:
    """The completion of the attempt ``claimed`` (as a fetch returned it)."""
    return Completion(
        job_id=claimed.id,
        worker_id=claimed.lease_owner or "",
        token=claimed.lease_token or "",
        attempt=claimed.attempts,
        outcome=outcome,
        **kw,
    )


def beat(worker: str, **kw: Any) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker_id=worker, **kw)


def error(attempt: int, text: str = "boom") -> JobError:
    return JobError(attempt=attempt, error=text, traceback="Traceback...", at=datetime.now(UTC))


async def test_enqueue_get_and_list(store: Store) -> None:
    [queued] = await store.enqueue([job(kwargs={"a": 1, "b": [2, "x"]}, meta={"m": True})])
    assert queued.state is JobState.PENDING
    assert queued.attempts == 0
    assert queued.kwargs == {"a": 1, "b": [2, "x"]}
    assert queued.created_at.tzinfo is not None
    assert await store.get(queued.id) == queued
    assert await store.get(JobId(10**9)) is None

    more = await store.enqueue([job(queue="other"), job(), job()])
    listed = await store.list_jobs()
    assert [j.id for j in listed] == sorted([queued.id, *(j.id for j in more)], reverse=True)
    assert [j.id for j in await store.list_jobs(queue="other")] == [more[0].id]
    page = await store.list_jobs(queue="default", limit=2)
    assert [j.id for j in page] == [more[2].id, more[1].id]
    rest = await store.list_jobs(queue="default", after_id=page[-1].id)
    assert [j.id for j in rest] == [queued.id]
    assert await store.list_jobs(states=[JobState.RUNNING]) == []
    assert len(await store.list_jobs(states=[JobState.PENDING, JobState.RUNNING])) == 4


async def test_batch_returns_input_order(store: Store) -> None:
    jobs = [job(kwargs={"i": i}, priority=(i * 7) % 5) for i in range(50)]
    queued = await store.enqueue(jobs)
    assert [q.kwargs["i"] for q in queued] == list(range(50))
    assert [q.id for q in queued] == sorted(q.id for q in queued)
    assert await store.enqueue([]) == []


async def test_unique_key_dedup_in_batch_and_stored(store: Store) -> None:
    a, b, c, a2 = await store.enqueue(
        [job(unique_key="a"), job(unique_key="b"), job(), job(unique_key="a", priority=9)]
    )
    assert a2.id == a.id
    assert len({a.id, b.id, c.id}) == 3
    [again] = await store.enqueue([job(unique_key="b")])
    assert again.id == b.id
    mixed = await store.enqueue([job(), job(unique_key="a"), job(unique_key="new")])
    assert mixed[1].id == a.id
    assert len(await store.list_jobs(limit=1000)) == 5


async def test_enqueue_ids_matches_enqueue(store: Store) -> None:
    """The ids-only path inserts the same rows, in input order, with the same
    deduplication (a duplicate key gets the id of the job already queued)."""
    assert await store.enqueue_ids([]) == []
    first = await store.enqueue_ids([job(priority=p) for p in (1, 2, 3)])
    assert first == sorted(first)
    assert len(set(first)) == 3
    for job_id, priority in zip(first, (1, 2, 3), strict=True):
        stored = await store.get(job_id)
        assert stored is not None
        assert (stored.priority, stored.state) == (priority, JobState.PENDING)
    [kept] = await store.enqueue([job(unique_key="k")])
    again = await store.enqueue_ids([job(unique_key="k"), job(), job(unique_key="k")])
    assert again[0] == again[2] == kept.id
    assert again[1] not in first
    assert again[1] != kept.id


async def test_running_by_worker_counts_claims_per_lease_owner(store: Store) -> None:
    await store.enqueue([job(queue="q")] * 5 + [job(queue="other")])
    assert await store.running_by_worker("q") == {}
    one = await store.fetch("q", "w1", 2, LEASE, claim=claim())
    two = await store.fetch("q", "w2", 1, LEASE, claim=claim())
    await store.fetch("other", "w3", 1, LEASE, claim=claim())
    assert await store.running_by_worker("q") == {"w1": 2, "w2": 1}
    await store.complete([done(one[0]), done(two[0])])
    assert await store.running_by_worker("q") == {"w1": 1}
    assert await store.running_by_worker("missing") == {}


async def test_purge_deletes_finished_jobs_before_the_cutoff_only(store: Store) -> None:
    a, b, c, d = await store.enqueue([job(queue="q1"), job(queue="q1"), job(queue="q2"), job()])
    claimed = await store.fetch("q1", "w", 2, LEASE, claim=claim())
    claimed += await store.fetch("q2", "w", 1, LEASE, claim=claim())
    assert sorted(j.id for j in claimed) == sorted([a.id, b.id, c.id])
    by_id = {j.id: j for j in claimed}
    await store.complete([done(by_id[a.id]), done(by_id[c.id], Outcome.FAILED, error=error(1))])
    await store.request_cancel(d.id)  # pending -> cancelled: finished too
    [running] = [j for j in claimed if j.id == b.id]
    [pending] = await store.enqueue([job(queue="q1")])
    assert await store.purge(timedelta(hours=1)) == 0  # too recent
    await asyncio.sleep(0.05)  # finished at least this long ago by the store's clock
    assert await store.purge(timedelta(0), queue="q2") == 1
    assert await store.get(c.id) is None
    assert await store.purge(timedelta(0), limit=1) == 1
    assert await store.purge(timedelta(0)) == 1
    assert await store.get(a.id) is None
    assert await store.get(d.id) is None
    assert await store.purge(timedelta(0)) == 0
    assert await store.purge(timedelta(days=10**6)) == 0  # past what an interval holds
    survivors = {j.id: j.state for j in await store.list_jobs(limit=100)}
    assert survivors == {running.id: JobState.RUNNING, pending.id: JobState.PENDING}


async def test_unique_key_allowed_again_after_terminal(store: Store) -> None:
    [first] = await store.enqueue([job(unique_key="k")])
    [claimed] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    assert claimed.id == first.id
    [dup] = await store.enqueue([job(unique_key="k")])  # running still counts
    assert dup.id == first.id
    assert await store.complete([done(claimed)]) == [first.id]
    [fresh] = await store.enqueue([job(unique_key="k")])
    assert fresh.id != first.id
    cancelled = await store.request_cancel(fresh.id)
    assert cancelled is not None
    assert cancelled.state is JobState.CANCELLED
    [third] = await store.enqueue([job(unique_key="k")])
    assert third.id not in (first.id, fresh.id)


async def test_fetch_order_is_priority_then_fifo(store: Store) -> None:
    low = await store.enqueue([job(priority=-1)])
    mid = await store.enqueue([job(), job()])
    high = await store.enqueue([job(priority=5)])
    await store.enqueue([job(queue="elsewhere", priority=100)])
    got = await store.fetch("default", "w1", 10, LEASE, claim=claim())
    assert [j.id for j in got] == [high[0].id, mid[0].id, mid[1].id, low[0].id]
    assert await store.fetch("default", "w1", 10, LEASE, claim=claim()) == []


async def test_fetch_honours_limit(store: Store) -> None:
    await store.enqueue([job() for _ in range(5)])
    assert len(await store.fetch("default", "w1", 2, LEASE, claim=claim())) == 2
    assert len(await store.fetch("default", "w1", 0, LEASE, claim=claim())) == 0
    assert len(await store.fetch("default", "w1", 10, LEASE, claim=claim())) == 3


async def test_scheduled_at_is_honoured(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    earlier = datetime.now(UTC) - timedelta(hours=1)
    [future] = await store.enqueue([job(scheduled_at=later, priority=10)])
    [past] = await store.enqueue([job(scheduled_at=earlier)])
    [now] = await store.enqueue([job()])
    got = await store.fetch("default", "w1", 10, LEASE, claim=claim())
    assert [j.id for j in got] == [past.id, now.id]
    assert future.scheduled_at == later
    [stats] = await store.queue_stats("default")
    assert (stats.ready, stats.scheduled, stats.running) == (0, 1, 2)


async def test_concurrent_fetches_never_double_claim(store_factory: StoreFactory) -> None:
    stores = [await store_factory() for _ in range(8)]
    await stores[0].enqueue([job(kwargs={"i": i}) for i in range(60)])

    async def take(i: int) -> list[JobId]:
        claimed: list[JobId] = []
        while batch := await stores[i].fetch("default", f"w{i}", 3, LEASE, claim=claim()):
            claimed += [j.id for j in batch]
        return claimed

    results = await asyncio.gather(*(take(i) for i in range(8)))
    everything = [job_id for claimed in results for job_id in claimed]
    assert len(everything) == 60
    assert len(set(everything)) == 60


async def test_fetch_claims_and_counts_the_attempt(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    [got] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    assert got.state is JobState.RUNNING
    assert got.attempts == 1
    assert got.lease_owner == "w1"
    assert got.lease_token is not None
    assert got.started_at is not None
    assert got.lease_expires_at is not None
    assert got.lease_expires_at > got.started_at + timedelta(seconds=LEASE - 5)
    assert await store.get(queued.id) == got.instance()


async def test_complete_succeeded_stores_result(store: Store) -> None:
    [queued] = await store.enqueue([job()])
    [got] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    assert await store.complete([done(got, result={"sum": 3, "l": [1]})]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.SUCCEEDED
    assert after.result == {"sum": 3, "l": [1]}
    assert after.completed_at is not None
    assert (after.lease_owner, after.lease_token) == (None, None)


async def test_complete_is_fenced_by_claim_token_and_state(store: Store) -> None:
    [queued] = await store.enqueue([job()])
    assert await store.complete([done(queued)]) == []  # not running yet
    [got] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    intruder = ClaimedJob.of(got.instance().model_copy(update={"lease_token": "not-this-attempt"}))
    assert await store.complete([done(intruder)]) == []
    assert await store.complete([done(got, Outcome.FAILED, error=error(1))]) == [queued.id]
    assert await store.complete([done(got)]) == []  # already terminal
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.FAILED
    assert [e.error for e in after.errors] == ["boom"]


async def test_late_write_after_lease_loss_changes_nothing(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    [first] = await store.fetch("default", "w1", 1, 0.2, claim=claim())
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == [queued.id]
    [again] = await store.fetch("default", "w2", 1, LEASE, claim=claim())
    assert (again.id, again.attempts, again.lease_owner) == (queued.id, 2, "w2")
    assert await store.complete([done(first, result="late")]) == []
    assert await store.complete([done(again, result="mine")]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert after.result == "mine"


async def test_a_stale_attempt_of_the_same_worker_cannot_complete_the_new_one(
    store: Store,
) -> None:
    """Regression (issue 9, finding 3): fenced by owner alone, a worker that lost its lease
    while alive (a pause, a long lock) and then claimed the job again had its old
    attempt's completion applied to the new attempt, and the new result was dropped."""
    [queued] = await store.enqueue([job(max_attempts=3)])
    [old] = await store.fetch("default", "w1", 1, 0.2, claim=claim())
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == [queued.id]
    [new] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    assert (new.lease_owner, new.attempts) == ("w1", 2)
    assert await store.complete([done(old, result="old attempt")]) == []
    assert await store.complete([done(new, result="new attempt")]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert (after.state, after.result) == (JobState.SUCCEEDED, "new attempt")


async def test_heartbeat_renews_only_the_leases_the_worker_holds(store: Store) -> None:
    """Regression (issue 9, findings 1 and 2): leases were renewed for every running row
    naming the worker id, so a container restarted under its pod's name (and rows whose
    fetch reply never arrived) stayed ``running`` for as long as the id heartbeated."""
    [held, orphan] = await store.enqueue([job(max_attempts=3), job(max_attempts=3)])
    [got_held] = await store.fetch("default", "pod-a", 1, 0.5, claim=claim())
    [got_orphan] = await store.fetch("default", "pod-a", 1, 0.5, claim=claim())
    pairs = {(got_held.id, str(got_held.lease_token))}
    stranger = (got_orphan.id, "not-its-token")
    for _ in range(3):  # the restarted process heartbeats the same id, holding one of them
        renewed = await store.heartbeat(beat("pod-a"), 0.5, [*pairs, stranger])
        assert renewed == pairs
        await asyncio.sleep(0.25)
    assert await store.recover_expired() == [orphan.id]
    still = await store.get(held.id)
    assert still is not None
    assert still.state is JobState.RUNNING
    assert await store.heartbeat(beat("pod-a"), LEASE, []) == set()


async def test_heartbeat_tells_a_worker_which_leases_it_lost(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    [mine] = await store.fetch("default", "w1", 1, 0.2, claim=claim())
    lease = (mine.id, str(mine.lease_token))
    assert await store.heartbeat(beat("w1"), 0.2, [lease]) == {lease}
    await asyncio.sleep(0.3)  # paused past the lease
    assert await store.recover_expired() == [queued.id]
    [theirs] = await store.fetch("default", "w2", 1, LEASE, claim=claim())
    assert await store.heartbeat(beat("w1"), LEASE, [lease]) == set()
    after = await store.get(queued.id)
    assert after is not None
    assert after.lease_token == theirs.lease_token
    assert after.lease_expires_at == theirs.lease_expires_at, "w1 renewed w2's lease"


async def test_release_claim_hands_back_an_unreceived_fetch(store: Store) -> None:
    """A fetch whose reply was lost: its jobs go back at once, the attempt not counted,
    and only the jobs of that claim (not the worker's other attempts) move."""
    await store.enqueue([job(), job(), job()])
    token = claim()
    lost = await store.fetch("default", "w1", 2, LEASE, claim=token)
    [kept] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    assert sorted(await store.release_claim("w1", token)) == sorted(j.id for j in lost)
    assert await store.release_claim("w1", token) == []
    assert await store.release_claim("w2", str(kept.lease_token)) == []  # not w2's
    for j in lost:
        back = await store.get(j.id)
        assert back is not None
        assert (back.state, back.attempts, back.lease_token) == (JobState.PENDING, 0, None)
    still = await store.get(kept.id)
    assert still is not None
    assert still.state is JobState.RUNNING
    assert {j.id for j in await store.fetch("default", "w2", 5, LEASE, claim=claim())} == {
        j.id for j in lost
    }


async def test_retry_time_is_the_stores_clock_plus_the_delay(store: Store) -> None:
    """Regression (issue 9, finding 6): retry times came from the worker's clock, so a
    worker one hour slow ignored a 60 s backoff. The delay now travels, the store adds it."""
    [queued] = await store.enqueue([job(max_attempts=3)])
    [got] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    before = await store.now()
    await store.complete([done(got, Outcome.RETRY, error=error(1), retry_delay=3600)])
    after = await store.now()
    retried = await store.get(queued.id)
    assert retried is not None
    assert retried.state is JobState.RETRYING
    assert retried.scheduled_at is not None
    assert before + timedelta(seconds=3600) <= retried.scheduled_at
    assert retried.scheduled_at <= after + timedelta(seconds=3600)


async def test_error_text_no_store_keeps_as_is_is_stored_readably(store: Store) -> None:
    """Regression (issue 9, finding 4): a lone surrogate or a NUL in an error blocked the
    completion batch for good; the error record makes such text storable."""
    [queued] = await store.enqueue([job()])
    [got] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    text = "open(b'caf\udce9') failed\x00 badly"
    poison = JobError(attempt=1, error=text, traceback=text, at=datetime.now(UTC))
    assert await store.complete([done(got, Outcome.FAILED, error=poison)]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert after.errors[0].error == "open(b'caf\\udce9') failed\\x00 badly"


async def test_retry_released_cancelled_failed(store: Store) -> None:
    jobs = await store.enqueue([job(max_attempts=5) for _ in range(4)])
    got = {j.id: j for j in await store.fetch("default", "w1", 4, LEASE, claim=claim())}
    ids = await store.complete(
        [
            done(got[jobs[0].id], Outcome.RETRY, error=error(1), retry_delay=3600),
            done(got[jobs[1].id], Outcome.RELEASED),
            done(got[jobs[2].id], Outcome.CANCELLED),
            done(got[jobs[3].id], Outcome.FAILED, error=error(1, "bad")),
        ]
    )
    assert sorted(ids) == sorted(j.id for j in jobs)
    retried, released, cancelled, failed = [await store.get(j.id) for j in jobs]
    assert retried is not None
    assert released is not None
    assert cancelled is not None
    assert failed is not None
    assert (retried.state, retried.attempts) == (JobState.RETRYING, 1)
    assert retried.scheduled_at is not None
    assert retried.scheduled_at > await store.now() + timedelta(minutes=59)
    assert retried.errors[0].error == "boom"
    assert retried.errors[0].traceback == "Traceback..."
    assert retried.completed_at is None
    assert (retried.lease_owner, retried.lease_token) == (None, None)
    assert (released.state, released.attempts, released.errors) == (JobState.PENDING, 0, [])
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.completed_at is not None
    assert failed.state is JobState.FAILED
    assert failed.errors[0].error == "bad"
    # The released job is ready again; the retried one waits for retry_at.
    again = await store.fetch("default", "w2", 10, LEASE, claim=claim())
    assert [j.id for j in again] == [released.id]


async def test_retry_due_now_is_fetched_and_errors_accumulate(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    for attempt in (1, 2):
        [got] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
        assert got.attempts == attempt
        await store.complete([done(got, Outcome.RETRY, error=error(attempt), retry_delay=0)])
    after = await store.get(queued.id)
    assert after is not None
    assert [e.attempt for e in after.errors] == [1, 2]


async def test_request_cancel_pending_vs_running(store: Store) -> None:
    pending, running = await store.enqueue([job(queue="a"), job(queue="b")])
    [claimed] = await store.fetch("b", "w1", 1, LEASE, claim=claim())
    got = await store.request_cancel(pending.id)
    assert got is not None
    assert got.state is JobState.CANCELLED
    assert got.completed_at is not None
    got = await store.request_cancel(running.id)
    assert got is not None
    assert got.state is JobState.RUNNING
    assert got.cancel_requested_at is not None
    assert await store.request_cancel(JobId(10**9)) is None
    # Terminal jobs are left as they are.
    again = await store.request_cancel(pending.id)
    assert again is not None
    assert again.state is JobState.CANCELLED
    # The worker acts on it and reports cancelled.
    await store.complete([done(claimed, Outcome.CANCELLED)])
    final = await store.get(running.id)
    assert final is not None
    assert final.state is JobState.CANCELLED


async def test_cancel_requests_filters(store: Store) -> None:
    a, b, c = await store.enqueue([job(queue="q1"), job(queue="q2"), job(queue="q1")])
    await store.fetch("q1", "w1", 1, LEASE, claim=claim())  # a
    await store.fetch("q2", "w2", 1, LEASE, claim=claim())  # b
    await store.fetch("q1", "w2", 1, LEASE, claim=claim())  # c
    assert await store.cancel_requests() == []
    for j in (a, b):
        await store.request_cancel(j.id)
    assert [j.id for j in await store.cancel_requests()] == [a.id, b.id]
    assert [j.id for j in await store.cancel_requests(worker_id="w2")] == [b.id]
    assert [j.id for j in await store.cancel_requests(queue="q1")] == [a.id]
    assert await store.cancel_requests(worker_id="w2", queue="q1") == []
    assert c.id not in [j.id for j in await store.cancel_requests()]


async def test_released_after_cancel_request_ends_cancelled(store: Store) -> None:
    [queued] = await store.enqueue([job()])
    [got] = await store.fetch("default", "w1", 1, LEASE, claim=claim())
    await store.request_cancel(queued.id)
    assert await store.complete([done(got, Outcome.RELEASED)]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.CANCELLED


async def test_heartbeat_extends_leases_and_lists_workers(store: Store) -> None:
    [queued] = await store.enqueue([job()])
    [got] = await store.fetch("default", "w1", 1, 0.2, claim=claim())
    alive = beat("w1", hostname="h", pid=42, queues={"default": (4, 1)})
    lease = (got.id, str(got.lease_token))
    assert await store.heartbeat(alive, LEASE, [lease]) == {lease}
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == []
    after = await store.get(queued.id)
    assert after is not None
    assert after.lease_expires_at is not None
    assert got.lease_expires_at is not None
    assert after.lease_expires_at > got.lease_expires_at
    [worker] = await store.workers()
    assert (worker.worker_id, worker.hostname, worker.pid) == ("w1", "h", 42)
    assert worker.queues == {"default": (4, 1)}
    assert worker.started_at is not None
    assert worker.last_seen is not None
    started = worker.started_at
    await store.heartbeat(replace(alive, draining=True), LEASE, [lease])
    [worker] = await store.workers()
    assert worker.draining
    assert worker.started_at == started
    assert worker.retiring is None
    # a retiring worker's confirmation (its mark) is kept, and cleared, beat by beat
    mark = "2026-11-30T21:00:00.123456Z"
    await store.heartbeat(replace(alive, retiring=mark), LEASE, [lease])
    assert [w.retiring for w in await store.workers()] == [mark]
    await store.heartbeat(alive, LEASE, [lease])
    assert [w.retiring for w in await store.workers()] == [None]
    await asyncio.sleep(0.3)
    assert await store.workers(ttl_seconds=0.2) == []
    await store.remove_worker("w1")
    assert await store.workers() == []


async def test_recover_expired_requeues_then_fails_poison_job(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=2)])
    await store.fetch("default", "w1", 1, 0.2, claim=claim())
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == [queued.id]
    assert await store.recover_expired() == []
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.RETRYING
    assert after.attempts == 1
    assert after.errors[-1].error == "lease expired (worker w1 stopped heartbeating)"
    assert after.errors[-1].attempt == 1
    [again] = await store.fetch("default", "w2", 1, 0.2, claim=claim())
    assert again.attempts == 2
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == [queued.id]
    final = await store.get(queued.id)
    assert final is not None
    assert final.state is JobState.FAILED
    assert final.completed_at is not None
    assert [e.error for e in final.errors] == [
        "lease expired (worker w1 stopped heartbeating)",
        "lease expired (worker w2 stopped heartbeating)",
    ]


async def test_queue_stats_counts_and_slots(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    jobs = await store.enqueue(
        [job(queue="q1") for _ in range(5)] + [job(queue="q1", scheduled_at=later)]
    )
    got = {j.id: j for j in await store.fetch("q1", "w1", 3, LEASE, claim=claim())}
    await store.complete([done(got[jobs[0].id]), done(got[jobs[1].id], Outcome.FAILED)])
    await store.request_cancel(jobs[3].id)
    await store.heartbeat(beat("w1", queues={"q1": (4, 1), "q2": (2, 0)}), LEASE, [])
    await store.heartbeat(beat("w2", queues={"q1": (8, 2)}), LEASE, [])
    stats = {s.queue: s for s in await store.queue_stats()}
    assert set(stats) == {"q1", "q2"}  # q2 has workers but no jobs
    q1 = stats["q1"]
    assert (q1.ready, q1.scheduled, q1.running) == (1, 1, 1)
    assert (q1.succeeded, q1.failed, q1.cancelled) == (1, 1, 1)
    assert (q1.workers, q1.slots_total, q1.slots_busy, q1.slots_free) == (2, 12, 3, 9)
    q2 = stats["q2"]
    assert (q2.workers, q2.slots_total, q2.slots_busy, q2.ready) == (1, 2, 0, 0)
    assert [s.queue for s in await store.queue_stats("q2")] == ["q2"]
    [empty] = await store.queue_stats("nothing-here")
    assert (empty.queue, empty.ready, empty.workers) == ("nothing-here", 0, 0)
    await asyncio.sleep(0.3)
    [q1_stale] = await store.queue_stats("q1", ttl_seconds=0.2)
    assert (q1_stale.workers, q1_stale.slots_total, q1_stale.ready) == (0, 0, 1)


async def test_rate_tokens_share_one_window(store_factory: StoreFactory) -> None:
    one, two = await store_factory(), await store_factory()
    assert await one.take_rate_tokens("q", 3, 5, 3600) == 3
    assert await two.take_rate_tokens("q", 3, 5, 3600) == 2
    assert await one.take_rate_tokens("q", 1, 5, 3600) == 0
    assert await one.take_rate_tokens("q", 0, 5, 3600) == 0
    assert await one.take_rate_tokens("other", 10, 5, 3600) == 5
    # A short window refills.
    assert await one.take_rate_tokens("fast", 2, 2, 0.2) == 2
    assert await one.take_rate_tokens("fast", 1, 2, 0.2) == 0
    await asyncio.sleep(0.3)
    assert await two.take_rate_tokens("fast", 5, 2, 0.2) == 2


async def test_wait_for_jobs_returns_by_timeout(store: Store) -> None:
    started = time.monotonic()
    await store.wait_for_jobs("default", 0.2)
    assert time.monotonic() - started < 5  # returned (generous: not a speed check)


async def test_an_enqueue_elsewhere_wakes_a_waiting_worker(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle worker hears of a job enqueued through another store object (another
    process): NOTIFY on PostgreSQL, the file's ``data_version`` on SQLite. Writes that make
    nothing ready in its queue leave it waiting."""
    monkeypatch.setattr(sqlite_store, "MAX_WAIT_SECONDS", 120.0)  # no wake-up by the cap
    waiting, other = await store_factory(), await store_factory()
    waiter = asyncio.create_task(waiting.wait_for_jobs("q", 120))
    await asyncio.sleep(0.5)
    await other.enqueue([job(queue="elsewhere")])
    await other.heartbeat(beat("w", queues={"q": (1, 0)}), 10, [])
    await asyncio.sleep(0.5)
    assert not waiter.done(), "woken by writes that made nothing ready in its queue"
    for _ in range(20):  # again if the first NOTIFY beat the LISTEN (not a delivery guarantee)
        await other.enqueue([job(queue="q")])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), 1.0)
            break
    assert waiter.done(), "an enqueue by another store object never woke the waiter"


async def test_migrations_are_idempotent(store_factory: StoreFactory) -> None:
    first = await store_factory()
    [queued] = await first.enqueue([job()])
    second = await store_factory()
    await second.open()  # open twice on one object, too
    assert await second.get(queued.id) == queued


async def test_now_is_utc(store: Store) -> None:
    now = await store.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == timedelta(0)
    assert abs((now - datetime.now(UTC)).total_seconds()) < 60
