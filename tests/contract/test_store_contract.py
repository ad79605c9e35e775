"""One suite for both stores (SQLite and PostgreSQL), through the ``store`` fixture.

Every test states a rule of the :class:`~slotfleet.store.Store` protocol. Sleeps are
short and only let leases expire; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest

from slotfleet.models import (
    Completion,
    Job,
    JobError,
    JobId,
    JobState,
    Outcome,
    WorkerHeartbeat,
)
from slotfleet.store import Store
from slotfleet.store import sqlite as sqlite_store
from tests.fixtures.stores import StoreFactory

LEASE = 30.0


def job(**changes: object) -> Job:
    return Job.model_validate({"func": "tests.tasks:add", **changes})


def done(
    job_id: JobId, worker: str, outcome: Outcome = Outcome.SUCCEEDED, **kw: object
) -> Completion:
    return Completion.model_validate(
        {"job_id": job_id, "worker_id": worker, "outcome": outcome, **kw}
    )


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
    one = await store.fetch("q", "w1", 2, LEASE)
    two = await store.fetch("q", "w2", 1, LEASE)
    await store.fetch("other", "w3", 1, LEASE)
    assert await store.running_by_worker("q") == {"w1": 2, "w2": 1}
    await store.complete([done(one[0].id, "w1"), done(two[0].id, "w2")])
    assert await store.running_by_worker("q") == {"w1": 1}
    assert await store.running_by_worker("missing") == {}


async def test_purge_deletes_finished_jobs_before_the_cutoff_only(store: Store) -> None:
    a, b, c, d = await store.enqueue([job(queue="q1"), job(queue="q1"), job(queue="q2"), job()])
    claimed = await store.fetch("q1", "w", 2, LEASE) + await store.fetch("q2", "w", 1, LEASE)
    assert sorted(j.id for j in claimed) == sorted([a.id, b.id, c.id])
    await store.complete([done(a.id, "w"), done(c.id, "w", Outcome.FAILED, error=error(1))])
    await store.request_cancel(d.id)  # pending -> cancelled: finished too
    [running] = [j for j in claimed if j.id == b.id]
    [pending] = await store.enqueue([job(queue="q1")])
    cutoff = await store.now() + timedelta(seconds=5)
    assert await store.purge(await store.now() - timedelta(hours=1)) == 0  # too recent
    assert await store.purge(cutoff, queue="q2") == 1
    assert await store.get(c.id) is None
    assert await store.purge(cutoff, limit=1) == 1
    assert await store.purge(cutoff) == 1
    assert await store.get(a.id) is None
    assert await store.get(d.id) is None
    assert await store.purge(cutoff) == 0
    survivors = {j.id: j.state for j in await store.list_jobs(limit=100)}
    assert survivors == {running.id: JobState.RUNNING, pending.id: JobState.PENDING}


async def test_unique_key_allowed_again_after_terminal(store: Store) -> None:
    [first] = await store.enqueue([job(unique_key="k")])
    [claimed] = await store.fetch("default", "w1", 1, LEASE)
    assert claimed.id == first.id
    [dup] = await store.enqueue([job(unique_key="k")])  # running still counts
    assert dup.id == first.id
    assert await store.complete([done(first.id, "w1")]) == [first.id]
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
    got = await store.fetch("default", "w1", 10, LEASE)
    assert [j.id for j in got] == [high[0].id, mid[0].id, mid[1].id, low[0].id]
    assert await store.fetch("default", "w1", 10, LEASE) == []


async def test_fetch_honours_limit(store: Store) -> None:
    await store.enqueue([job() for _ in range(5)])
    assert len(await store.fetch("default", "w1", 2, LEASE)) == 2
    assert len(await store.fetch("default", "w1", 0, LEASE)) == 0
    assert len(await store.fetch("default", "w1", 10, LEASE)) == 3


async def test_scheduled_at_is_honoured(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    earlier = datetime.now(UTC) - timedelta(hours=1)
    [future] = await store.enqueue([job(scheduled_at=later, priority=10)])
    [past] = await store.enqueue([job(scheduled_at=earlier)])
    [now] = await store.enqueue([job()])
    got = await store.fetch("default", "w1", 10, LEASE)
    assert [j.id for j in got] == [past.id, now.id]
    assert future.scheduled_at == later
    [stats] = await store.queue_stats("default")
    assert (stats.ready, stats.scheduled, stats.running) == (0, 1, 2)


async def test_concurrent_fetches_never_double_claim(store_factory: StoreFactory) -> None:
    stores = [await store_factory() for _ in range(8)]
    await stores[0].enqueue([job(kwargs={"i": i}) for i in range(60)])

    async def claim(i: int) -> list[JobId]:
        claimed: list[JobId] = []
        while batch := await stores[i].fetch("default", f"w{i}", 3, LEASE):
            claimed += [j.id for j in batch]
        return claimed

    results = await asyncio.gather(*(claim(i) for i in range(8)))
    everything = [job_id for claimed in results for job_id in claimed]
    assert len(everything) == 60
    assert len(set(everything)) == 60


async def test_fetch_claims_and_counts_the_attempt(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    [got] = await store.fetch("default", "w1", 1, LEASE)
    assert got.state is JobState.RUNNING
    assert got.attempts == 1
    assert got.lease_owner == "w1"
    assert got.started_at is not None
    assert got.lease_expires_at is not None
    assert got.lease_expires_at > got.started_at + timedelta(seconds=LEASE - 5)
    assert await store.get(queued.id) == got


async def test_complete_succeeded_stores_result(store: Store) -> None:
    [queued] = await store.enqueue([job()])
    await store.fetch("default", "w1", 1, LEASE)
    assert await store.complete([done(queued.id, "w1", result={"sum": 3, "l": [1]})]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.SUCCEEDED
    assert after.result == {"sum": 3, "l": [1]}
    assert after.completed_at is not None
    assert after.lease_owner is None


async def test_complete_is_guarded_by_owner_and_state(store: Store) -> None:
    [queued] = await store.enqueue([job()])
    assert await store.complete([done(queued.id, "w1")]) == []  # not running yet
    await store.fetch("default", "w1", 1, LEASE)
    assert await store.complete([done(queued.id, "intruder")]) == []
    assert await store.complete([done(queued.id, "w1", Outcome.FAILED, error=error(1))]) == [
        queued.id
    ]
    assert await store.complete([done(queued.id, "w1")]) == []  # already terminal
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.FAILED
    assert [e.error for e in after.errors] == ["boom"]


async def test_late_write_after_lease_loss_changes_nothing(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    await store.fetch("default", "w1", 1, 0.2)
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == [queued.id]
    [again] = await store.fetch("default", "w2", 1, LEASE)
    assert (again.id, again.attempts, again.lease_owner) == (queued.id, 2, "w2")
    assert await store.complete([done(queued.id, "w1", result="late")]) == []
    assert await store.complete([done(queued.id, "w2", result="mine")]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert after.result == "mine"


async def test_retry_released_cancelled_failed(store: Store) -> None:
    jobs = await store.enqueue([job(max_attempts=5) for _ in range(4)])
    await store.fetch("default", "w1", 4, LEASE)
    retry_at = datetime.now(UTC) + timedelta(hours=1)
    ids = await store.complete(
        [
            done(jobs[0].id, "w1", Outcome.RETRY, error=error(1), retry_at=retry_at),
            done(jobs[1].id, "w1", Outcome.RELEASED),
            done(jobs[2].id, "w1", Outcome.CANCELLED),
            done(jobs[3].id, "w1", Outcome.FAILED, error=error(1, "bad")),
        ]
    )
    assert sorted(ids) == sorted(j.id for j in jobs)
    retried, released, cancelled, failed = [await store.get(j.id) for j in jobs]
    assert retried is not None
    assert released is not None
    assert cancelled is not None
    assert failed is not None
    assert (retried.state, retried.attempts, retried.scheduled_at) == (
        JobState.RETRYING,
        1,
        retry_at,
    )
    assert retried.errors[0].error == "boom"
    assert retried.errors[0].traceback == "Traceback..."
    assert retried.completed_at is None
    assert retried.lease_owner is None
    assert (released.state, released.attempts, released.errors) == (JobState.PENDING, 0, [])
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.completed_at is not None
    assert failed.state is JobState.FAILED
    assert failed.errors[0].error == "bad"
    # The released job is ready again; the retried one waits for retry_at.
    assert [j.id for j in await store.fetch("default", "w2", 10, LEASE)] == [released.id]


async def test_retry_due_now_is_fetched_and_errors_accumulate(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=3)])
    for attempt in (1, 2):
        [got] = await store.fetch("default", "w1", 1, LEASE)
        assert got.attempts == attempt
        now = datetime.now(UTC) - timedelta(seconds=1)
        await store.complete(
            [done(queued.id, "w1", Outcome.RETRY, error=error(attempt), retry_at=now)]
        )
    after = await store.get(queued.id)
    assert after is not None
    assert [e.attempt for e in after.errors] == [1, 2]


async def test_request_cancel_pending_vs_running(store: Store) -> None:
    pending, running = await store.enqueue([job(queue="a"), job(queue="b")])
    await store.fetch("b", "w1", 1, LEASE)
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
    await store.complete([done(running.id, "w1", Outcome.CANCELLED)])
    final = await store.get(running.id)
    assert final is not None
    assert final.state is JobState.CANCELLED


async def test_cancel_requests_filters(store: Store) -> None:
    a, b, c = await store.enqueue([job(queue="q1"), job(queue="q2"), job(queue="q1")])
    await store.fetch("q1", "w1", 1, LEASE)  # a
    await store.fetch("q2", "w2", 1, LEASE)  # b
    await store.fetch("q1", "w2", 1, LEASE)  # c
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
    await store.fetch("default", "w1", 1, LEASE)
    await store.request_cancel(queued.id)
    assert await store.complete([done(queued.id, "w1", Outcome.RELEASED)]) == [queued.id]
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.CANCELLED


async def test_heartbeat_extends_leases_and_lists_workers(store: Store) -> None:
    [queued] = await store.enqueue([job()])
    [got] = await store.fetch("default", "w1", 1, 0.2)
    beat = WorkerHeartbeat(worker_id="w1", hostname="h", pid=42, queues={"default": (4, 1)})
    await store.heartbeat(beat, LEASE)
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
    await store.heartbeat(beat.model_copy(update={"draining": True}), LEASE)
    [worker] = await store.workers()
    assert worker.draining
    assert worker.started_at == started
    await asyncio.sleep(0.3)
    assert await store.workers(ttl_seconds=0.2) == []
    await store.remove_worker("w1")
    assert await store.workers() == []


async def test_recover_expired_requeues_then_fails_poison_job(store: Store) -> None:
    [queued] = await store.enqueue([job(max_attempts=2)])
    await store.fetch("default", "w1", 1, 0.2)
    await asyncio.sleep(0.3)
    assert await store.recover_expired() == [queued.id]
    assert await store.recover_expired() == []
    after = await store.get(queued.id)
    assert after is not None
    assert after.state is JobState.RETRYING
    assert after.attempts == 1
    assert after.errors[-1].error == "lease expired (worker w1 stopped heartbeating)"
    assert after.errors[-1].attempt == 1
    [again] = await store.fetch("default", "w2", 1, 0.2)
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
    await store.fetch("q1", "w1", 3, LEASE)
    await store.complete(
        [
            done(jobs[0].id, "w1"),
            done(jobs[1].id, "w1", Outcome.FAILED),
        ]
    )
    await store.request_cancel(jobs[3].id)
    await store.heartbeat(
        WorkerHeartbeat(worker_id="w1", queues={"q1": (4, 1), "q2": (2, 0)}), LEASE
    )
    await store.heartbeat(WorkerHeartbeat(worker_id="w2", queues={"q1": (8, 2)}), LEASE)
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
    await other.heartbeat(WorkerHeartbeat(worker_id="w", queues={"q": (1, 0)}), 10)
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
