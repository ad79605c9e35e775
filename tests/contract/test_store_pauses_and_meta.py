"""Queue pauses and completion meta, on both stores (the ``store`` fixture).

Rules of the :class:`~slotfleet.store.Store` protocol added for the seed's behaviours: a
completion may carry the job's meta (stored whatever the outcome, fenced like the rest);
a paused queue yields nothing to any fetch until it is resumed or its time comes, by the
store's clock. Sleeps only let a pause's time pass; nothing asserts on speed.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from slotfleet.models import Completion, Job, JobError, JobState, Outcome
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import Store, open_store
from tests.fixtures.waiting import until

LEASE = 30.0


def job(**changes: object) -> Job:
    return Job.model_validate({"func": "tests.tasks:add", **changes})


async def fetch(store: Store, queue: str = "default", limit: int = 10) -> list[ClaimedJob]:
    return await store.fetch(queue, "w1", limit, LEASE, claim=secrets.token_hex(8))


def done(claimed: ClaimedJob, outcome: Outcome, **kw: Any) -> Completion:
    if outcome in (Outcome.RETRY, Outcome.FAILED):
        kw.setdefault("error", JobError(attempt=1, error="boom", at=datetime.now(UTC)))
    if outcome is Outcome.RETRY:
        kw.setdefault("retry_delay", 3600.0)
    return Completion(
        job_id=claimed.id,
        worker_id="w1",
        token=claimed.lease_token or "",
        attempt=claimed.attempts,
        outcome=outcome,
        **kw,
    )


async def passed(store: Store, moment: datetime) -> bool:
    return await store.now() >= moment


def close_to(delta: timedelta, seconds: float) -> bool:
    """Within a millisecond (SQLite keeps times as float epoch seconds)."""
    return abs(delta.total_seconds() - seconds) < 1e-3


# -- meta ------------------------------------------------------------------------------


async def test_completion_meta_is_stored_whatever_the_outcome(store: Store) -> None:
    outcomes = [
        Outcome.SUCCEEDED,
        Outcome.RETRY,
        Outcome.FAILED,
        Outcome.CANCELLED,
        Outcome.RELEASED,
    ]
    queued = await store.enqueue([job(meta={"enqueued": i}) for i in range(len(outcomes) + 1)])
    claimed = await fetch(store)
    assert [j.id for j in claimed] == [j.id for j in queued]
    batch = [
        done(c, outcome, meta={"left": outcome.value, "n": [1.5, None, "é"]})
        for c, outcome in zip(claimed, outcomes, strict=False)
    ]
    batch.append(done(claimed[-1], Outcome.SUCCEEDED))  # no meta: the stored one stays
    assert sorted(await store.complete(batch)) == sorted(j.id for j in queued)
    after = [await store.get(j.id) for j in queued]
    for found, outcome in zip(after, outcomes, strict=False):
        assert found is not None
        assert found.meta == {"left": outcome.value, "n": [1.5, None, "é"]}
    last = after[-1]
    assert last is not None
    assert last.meta == {"enqueued": len(outcomes)}
    assert [j.state for j in after if j is not None] == [
        JobState.SUCCEEDED,
        JobState.RETRYING,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.PENDING,
        JobState.SUCCEEDED,
    ]


async def test_meta_of_a_stale_attempt_is_not_written(store: Store) -> None:
    """Fenced like every part of a completion: an attempt that lost its claim changes
    nothing, its meta included."""
    [queued] = await store.enqueue([job(meta={"v": 1})])
    [claimed] = await fetch(store)
    stale = done(claimed, Outcome.SUCCEEDED, meta={"v": "stale"}).replace(token="another-attempt")
    assert await store.complete([stale]) == []
    found = await store.get(queued.id)
    assert found is not None
    assert (found.state, found.meta) == (JobState.RUNNING, {"v": 1})


# -- pauses ----------------------------------------------------------------------------


async def test_a_paused_queue_yields_nothing_until_resumed(store: Store) -> None:
    paused_job, other_job = await store.enqueue([job(queue="q"), job(queue="other")])
    pause = await store.pause_queue("q")
    assert (pause.queue, pause.resume_at, pause.in_effect) == ("q", None, True)
    assert pause.paused_at.tzinfo is not None
    assert await fetch(store, "q") == []
    assert [j.id for j in await fetch(store, "other")] == [other_job.id]
    stats = {s.queue: s for s in await store.queue_stats()}
    assert (stats["q"].paused, stats["q"].resume_at, stats["q"].ready) == (True, None, 1)
    assert not stats["other"].paused

    assert await store.resume_queue("q") is True
    assert [j.id for j in await fetch(store, "q")] == [paused_job.id]
    assert await store.resume_queue("q") is False
    assert not (await store.queue_stats("q"))[0].paused


async def test_a_pause_for_a_while_ends_by_the_stores_clock(store: Store) -> None:
    [queued] = await store.enqueue([job(queue="q")])
    pause = await store.pause_queue("q", resume_after=0.4)
    assert pause.resume_at is not None
    assert close_to(pause.resume_at - pause.paused_at, 0.4)
    assert (await store.queue_stats("q"))[0].resume_at == pause.resume_at
    assert await fetch(store, "q") == []
    resume_at = pause.resume_at
    await until("the pause's time", lambda: passed(store, resume_at), timeout=10)
    assert [j.id for j in await fetch(store, "q")] == [queued.id]
    assert not (await store.queue_stats("q"))[0].paused
    assert await store.resume_queue("q") is False, "a pause whose time has come is over"


async def test_a_pause_until_a_time_and_one_already_past(store: Store) -> None:
    await store.enqueue([job(queue="q")])
    later = datetime(2999, 1, 1, tzinfo=UTC)
    pause = await store.pause_queue("q", resume_at=later)
    assert (pause.resume_at, pause.in_effect) == (later, True)
    assert await fetch(store, "q") == []

    past = await store.pause_queue("q", resume_at=datetime.now(UTC) - timedelta(hours=1))
    assert not past.in_effect, "pausing again replaces the earlier pause"
    assert not (await store.queue_stats("q"))[0].paused
    assert len(await fetch(store, "q")) == 1


async def test_queue_stats_list_a_paused_queue_without_jobs(store: Store) -> None:
    await store.pause_queue("empty")
    assert [(s.queue, s.paused, s.ready) for s in await store.queue_stats()] == [("empty", True, 0)]


@pytest.mark.postgres
async def test_resuming_wakes_a_worker_waiting_elsewhere(postgres_dsn: str) -> None:
    """PostgreSQL workers sleep on LISTEN for up to their polling interval; a resume sends
    the queue's NOTIFY, as an enqueue does, so they fetch at once. (A SQLite waiter
    looks again within ``WATCH_INTERVAL_SECONDS`` of any commit anyway.)"""
    worker_side, client_side = open_store(postgres_dsn), open_store(postgres_dsn)
    await worker_side.open()
    await client_side.open()
    try:
        await client_side.pause_queue("q")
        await client_side.enqueue([job(queue="q")])
        waiting = asyncio.create_task(worker_side.wait_for_jobs("q", 60.0))
        await asyncio.sleep(0.5)  # the waiter is listening (the enqueue's NOTIFY is past)
        started = time.monotonic()
        assert await client_side.resume_queue("q") is True
        await asyncio.wait_for(waiting, 30)
        assert time.monotonic() - started < 30, "woken by the resume, not by the timeout"
    finally:
        await worker_side.close()
        await client_side.close()


async def test_sqlite_ready_check_skips_a_paused_queue(tmp_path: Path) -> None:
    """An idle SQLite worker looks for a ready job when another process commits; a paused
    queue's backlog must not count, or the worker would fetch nothing in a tight loop
    instead of waiting (PostgreSQL waits for NOTIFY, which does not depend on it)."""
    dsn = f"sqlite:///{tmp_path}/jobs.db"
    worker_side, client_side = open_store(dsn), open_store(dsn)
    await worker_side.open()
    await client_side.open()
    try:
        await client_side.pause_queue("q")
        waiting = asyncio.create_task(worker_side.wait_for_jobs("q", 0.6))
        await asyncio.sleep(0.1)
        await client_side.enqueue([job(queue="q")])  # another connection commits
        await asyncio.sleep(0.3)
        assert not waiting.done(), "a paused queue's job woke the waiter"
        await waiting
    finally:
        await worker_side.close()
        await client_side.close()


@pytest.mark.parametrize("seconds", [0.0, 1e9])
async def test_pause_delays_at_the_bounds(store: Store, seconds: float) -> None:
    pause = await store.pause_queue("q", resume_after=seconds)
    assert pause.resume_at is not None
    assert close_to(pause.resume_at - pause.paused_at, seconds)
