"""The fleet controller's store verbs, on both stores (the ``store`` fixture):
``fleet_snapshot`` (many queues in one read) and ``wait_for_change`` (the wake-up).

``fleet_snapshot`` must equal, queue by queue, what the four per-queue calls it replaces
return; the wake-up must come from another store object (another process) and must not
reach idle workers. Nothing here asserts on speed: bounds are only "woken, not timed out".
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from slotfleet.models import (
    Completion,
    FleetSnapshot,
    Job,
    Outcome,
    QueueSnapshot,
    QueueStats,
    WorkerHeartbeat,
)
from slotfleet.store import Store
from slotfleet.store import sqlite as sqlite_store
from tests.fixtures.stores import StoreFactory

LEASE = 30.0

#: Far longer than any wake-up: a waiter still waiting when this ends was never woken.
NEVER = 120.0


def job(queue: str, **changes: object) -> Job:
    return Job.model_validate({"func": "tests.tasks:add", "queue": queue, **changes})


def beat(worker: str, queues: dict[str, tuple[int, int]]) -> WorkerHeartbeat:
    return WorkerHeartbeat(worker_id=worker, queues=queues)


async def one_by_one(store: Store, queues: list[str]) -> FleetSnapshot:
    """What the operator read per queue before ``fleet_snapshot``: the four calls."""
    snapshots = {}
    for name in queues:
        stats = next(s for s in await store.queue_stats(name) if s.queue == name)
        snapshots[name] = QueueSnapshot(
            stats=stats,
            cancel_requests=tuple(await store.cancel_requests(queue=name)),
            running_by_worker=await store.running_by_worker(name),
        )
    return FleetSnapshot(queues=snapshots, workers=tuple(await store.workers()))


async def fill(store: Store, queue: str) -> None:
    """``queue`` with a job in every state: ready, scheduled, running on two workers (one
    with a cancel request), retrying, succeeded, failed, cancelled."""
    later = datetime.now(UTC) + timedelta(hours=1)
    await store.enqueue([job(queue, kwargs={"i": i}) for i in range(9)])
    await store.enqueue([job(queue, scheduled_at=later)])
    first = await store.fetch(queue, f"{queue}-w1", 4, LEASE, claim=secrets.token_hex(4))
    second = await store.fetch(queue, f"{queue}-w2", 2, LEASE, claim=secrets.token_hex(4))
    ok, failed, retried, _ = first
    outcomes = [(ok, Outcome.SUCCEEDED), (failed, Outcome.FAILED), (retried, Outcome.RETRY)]
    await store.complete(
        [
            Completion(
                job_id=j.id,
                worker_id=str(j.lease_owner),
                token=str(j.lease_token),
                attempt=j.attempts,
                outcome=outcome,
                retry_delay=3600.0 if outcome is Outcome.RETRY else None,
            )
            for j, outcome in outcomes
        ]
    )
    await store.request_cancel(second[0].id)  # running: a cancel request
    ready = [j for j in await store.list_jobs(queue=queue) if j.state == "pending"]
    await store.request_cancel(ready[0].id)  # the newest pending: cancelled at once


async def test_fleet_snapshot_equals_the_per_queue_reads(store: Store) -> None:
    """For queues with jobs in every state, workers, a pause, a queue known only from a
    heartbeat and one the store never heard of, the snapshot equals the four calls it
    replaces, queue by queue; queues not asked are not in it; asking twice is once."""
    for name in ("a", "b", "not-asked"):
        await fill(store, name)
    await store.pause_queue("b")
    await store.pause_queue("ended", resume_at=datetime.now(UTC) - timedelta(minutes=1))
    await store.heartbeat(beat("a-w1", {"a": (4, 3), "heartbeat-only": (2, 0)}), LEASE, [])
    await store.heartbeat(beat("b-w2", {"b": (8, 2)}), LEASE, [])
    asked = ["a", "b", "heartbeat-only", "ended", "unknown"]

    snapshot = await store.fleet_snapshot([*asked, "a"])

    expected = await one_by_one(store, asked)
    assert snapshot == expected
    assert list(snapshot.queues) == asked
    a = snapshot.queues["a"].stats  # the comparison is not between two empty reads
    counts = (a.ready, a.scheduled, a.running, a.succeeded, a.failed, a.cancelled)
    assert counts == (3, 1, 3, 1, 1, 1)  # scheduled: the retry (the later job is cancelled)
    assert snapshot.queues["a"].running_by_worker == {"a-w1": 1, "a-w2": 2}
    assert [j.queue for j in snapshot.queues["b"].cancel_requests] == ["b"]
    assert snapshot.queues["b"].stats.paused
    assert snapshot.queues["heartbeat-only"].stats.slots_total == 2
    assert snapshot.queues["unknown"] == QueueSnapshot(stats=QueueStats(queue="unknown"))
    assert len(snapshot.workers) == 2


async def test_fleet_snapshot_of_idle_queues_and_of_none(store: Store) -> None:
    """Queues with nothing running (the short read) still equal the per-queue calls; an
    empty list reads the workers only; unknown queues get empty entries."""
    await store.enqueue([job("idle"), job("idle")])
    await store.heartbeat(beat("w", {"idle": (2, 0)}), LEASE, [])
    asked = ["idle", "nobody"]
    assert await store.fleet_snapshot(asked) == await one_by_one(store, asked)
    empty = await store.fleet_snapshot([])
    assert empty == FleetSnapshot(queues={}, workers=tuple(await store.workers()))
    assert len(empty.workers) == 1


async def test_wait_for_change_returns_after_its_timeout(store: Store) -> None:
    await store.wait_for_change(0.2)  # returns: nothing happened (no bound on how fast)


async def wait_woken(waiter: asyncio.Task[None], poke: object) -> None:
    """``waiter`` ends within a few seconds of a poke; the poke is repeated if the first
    NOTIFY beat the LISTEN (not a delivery guarantee)."""
    assert callable(poke)
    for _ in range(10):
        await poke()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), 1.0)
            return
    raise AssertionError("the waiter was never woken (it would have waited NEVER s)")


async def test_wait_for_change_wakes_on_an_enqueue_elsewhere_not_on_a_heartbeat(
    store_factory: StoreFactory,
) -> None:
    watching, other = await store_factory(), await store_factory()
    await watching.wait_for_change(0.2)  # starts listening
    waiter = asyncio.create_task(watching.wait_for_change(NEVER))
    await asyncio.sleep(0.5)
    await other.heartbeat(beat("w", {"q": (1, 0)}), LEASE, [])  # a write, not a change
    await asyncio.sleep(0.5)
    assert not waiter.done(), "woken by a heartbeat"
    await wait_woken(waiter, lambda: other.enqueue([job("any-queue")]))


async def test_wait_for_change_wakes_on_a_cancel_request_but_idle_workers_do_not(
    store_factory: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel request on a running job wakes the controller, not the queue's idle
    workers (they would fetch for nothing: a cancel makes no job ready)."""
    monkeypatch.setattr(sqlite_store, "MAX_WAIT_SECONDS", NEVER)  # no wake-up by the cap
    watching, worker, other = await store_factory(), await store_factory(), await store_factory()
    [running] = await other.enqueue([job("q")])
    await other.fetch("q", "busy", 1, LEASE, claim="c")
    await watching.wait_for_change(0.2)  # starts listening; clears the enqueue above
    await worker.wait_for_jobs("q", 0.2)
    waiter = asyncio.create_task(watching.wait_for_change(NEVER))
    idle = asyncio.create_task(worker.wait_for_jobs("q", NEVER))
    await asyncio.sleep(0.5)
    assert not waiter.done()
    await wait_woken(waiter, lambda: other.request_cancel(running.id))
    await asyncio.sleep(0.5)
    assert not idle.done(), "an idle worker was woken by a cancel request"
    idle.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await idle


async def test_a_change_between_two_waits_is_not_missed(store_factory: StoreFactory) -> None:
    """A controller reads, then waits: what changed while it read ends its next wait at
    once, instead of a tick later."""
    watching, other = await store_factory(), await store_factory()
    await watching.wait_for_change(0.2)  # starts listening
    await other.enqueue([job("q")])  # while the controller is "reading"
    await asyncio.sleep(0.3)  # the notification arrives while nobody waits
    await asyncio.wait_for(watching.wait_for_change(NEVER), 10)
