"""The operator's store reads over ``fleet_snapshot`` (``operator/stores.py``), on both
stores: ``read_views`` gives every queue the view the per-queue calls it replaced give,
a failed read is one scrubbed line for every queue, and ``wait_for_change`` over several
DSNs wakes on any of them and only sleeps on a broken one. A store still being opened
(migrating, on PostgreSQL) when a read's bound ends is not down, and its open goes on.
"""

from __future__ import annotations

import asyncio
import contextlib

import psycopg

from slotfleet.control import QueueView
from slotfleet.models import Job
from slotfleet.operator.stores import StoreCache, read_views, wait_for_change
from slotfleet.store import Store
from slotfleet.store import postgres_sql as sql
from tests.fixtures.stores import StoreFactory

#: A DSN nothing listens on, with a password that must never be shown.
BROKEN = "postgresql://user:s3cret-pw@127.0.0.1:1/db?connect_timeout=1"


def job(queue: str) -> Job:
    return Job(func="tests.tasks:add", queue=queue)


async def per_queue(store: Store, queue: str) -> QueueView:
    """The view as the operator read it before ``fleet_snapshot``: four calls a queue."""
    [stats] = await store.queue_stats(queue)
    cancels = await store.cancel_requests(queue=queue)
    leased = await store.running_by_worker(queue) if stats.running else {}
    return QueueView(queue, stats, cancels, await store.workers(), leased)


async def test_read_views_equals_the_per_queue_reads(
    store_dsn: str, store_factory: StoreFactory
) -> None:
    store = await store_factory()
    await store.enqueue([job("a"), job("a"), job("b")])
    [running] = await store.fetch("a", "w1", 1, 30.0, claim="c")
    await store.request_cancel(running.id)
    stores = StoreCache()
    try:
        queues = ["a", "b", "never-seen"]
        views = await read_views(stores, store_dsn, queues, 10.0)
        assert views == {q: await per_queue(store, q) for q in queues}
        assert views["a"].leased == {"w1": 1}
        assert [j.id for j in views["a"].cancellations or []] == [running.id]
    finally:
        await stores.close()


async def test_read_views_failure_is_one_scrubbed_line_for_every_queue() -> None:
    stores = StoreCache()
    try:
        views = await read_views(stores, BROKEN, ["a", "b"], 10.0)
    finally:
        await stores.close()
    assert set(views) == {"a", "b"}
    error = views["a"].error
    assert error is not None
    assert views["b"].error == error
    assert views["a"].stats is None
    assert "\n" not in error
    assert "s3cret-pw" not in error


async def test_wait_for_change_wakes_on_any_store_and_sleeps_on_a_broken_one(
    store_dsn: str, store_factory: StoreFactory
) -> None:
    other = await store_factory()
    stores = StoreCache()
    try:
        await wait_for_change(stores, [BROKEN, store_dsn], 0.2)  # opens, starts listening
        waiter = asyncio.create_task(wait_for_change(stores, [BROKEN, store_dsn], 120.0))
        await asyncio.sleep(0.5)
        assert not waiter.done(), "the broken store ended the wait"
        for _ in range(10):  # again if the first NOTIFY beat the LISTEN
            await other.enqueue([job("q")])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), 1.0)
                break
        assert waiter.done(), "an enqueue never woke the operator's wait"
    finally:
        await stores.close()


async def test_a_store_still_opening_is_not_down_and_its_open_is_never_cut(
    postgres_dsn: str,
) -> None:
    """Regression: at a thousand new Queues on a fresh database, the operator's first
    read timed out (5 s) while the store was still migrating; the timeout cancelled the
    open, the store was discarded, and every later tick opened it anew and waited for the
    migration lock again, so every Queue flapped to StoreReachable=False with a Warning
    Event and back. Now the open goes on past the read's bound (its views say
    ``opening``, not an error), later reads wait for the same open, and a cancelled
    waiter does not cancel it."""
    holder = await psycopg.AsyncConnection.connect(postgres_dsn, autocommit=True)
    key = {"key": sql.MIGRATION_RUN_LOCK_KEY}
    await holder.execute(sql.TRY_RUN_LOCK, key)  # another process is migrating
    stores = StoreCache()
    try:
        views = await read_views(stores, postgres_dsn, ["a"], 0.5)
        assert views["a"].opening
        assert views["a"].stats is None
        assert "still opening the job store" in (views["a"].error or "")
        waiter = asyncio.create_task(wait_for_change(stores, [postgres_dsn], 30.0))
        await asyncio.sleep(0.3)
        waiter.cancel()  # the observer cancels its wait every round
        await asyncio.gather(waiter, return_exceptions=True)
        assert stores.opening(postgres_dsn), "a cancelled wait cut the open"
        again = await read_views(stores, postgres_dsn, ["a"], 0.5)
        assert again["a"].opening
        await holder.execute(sql.RUN_UNLOCK, key)  # the other process is done
        views = await read_views(stores, postgres_dsn, ["a"], 10.0)
        assert views["a"].stats is not None
        assert not views["a"].opening
        assert not stores.opening(postgres_dsn)
    finally:
        await stores.close()
        await holder.close()
