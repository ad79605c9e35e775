"""Open job stores, one per DSN, shared by every Queue that names the same database.

The operator reads backlog, slots, heartbeats and cancel requests from each Queue's
store every tick; opening a pool per tick would be wasteful, so stores are opened on
first use and kept. A store whose read failed is discarded and reopened on the next
tick, so a database that comes back is picked up without restarting the operator.

:func:`read_view` is one tick's read of a queue (bounded by the store timeout; a failed
read discards the store); :func:`purge_finished` deletes finished jobs for a Queue's
``retentionSeconds``, the only write the operator makes to a job store.

What this module is not: it holds no Kubernetes state and decides nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import timedelta

from slotfleet.models import QueuedJob, QueueStats, WorkerHeartbeat
from slotfleet.store import open_store
from slotfleet.store.base import Store
from slotfleet.store.rows import one_line


class StoreCache:
    """DSN -> open :class:`Store`."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._lock = asyncio.Lock()

    async def get(self, dsn: str) -> Store:
        async with self._lock:
            store = self._stores.get(dsn)
            if store is None:
                store = open_store(dsn)
                await store.open()
                self._stores[dsn] = store
            return store

    async def discard(self, dsn: str) -> None:
        async with self._lock:
            store = self._stores.pop(dsn, None)
        if store is not None:
            with contextlib.suppress(Exception):  # it is broken already; just let go
                await store.close()

    async def close(self) -> None:
        async with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            with contextlib.suppress(Exception):
                await store.close()


@dataclass(frozen=True)
class StoreView:
    """What one tick read from a queue's store (``stats`` is ``None`` when it failed)."""

    stats: QueueStats | None
    cancellations: list[QueuedJob] | None
    workers: list[WorkerHeartbeat]
    error: str | None
    leased: dict[str, int] = field(default_factory=dict)
    """The queue's running jobs per lease owner (which pods are busy)."""


async def read_view(stores: StoreCache, dsn: str, queue: str, timeout: float) -> StoreView:
    """Backlog, cancel requests, heartbeats and running jobs of ``queue``, or the error."""

    async def read() -> StoreView:
        store = await stores.get(dsn)
        stats = await store.queue_stats(queue)
        cancels = await store.cancel_requests(queue=queue)
        workers = await store.workers()
        mine = next((s for s in stats if s.queue == queue), QueueStats(queue=queue))
        leased = await store.running_by_worker(queue) if mine.running else {}
        return StoreView(mine, cancels, workers, None, leased)

    try:
        return await asyncio.wait_for(read(), timeout=timeout)
    except TimeoutError:
        error = f"no answer from the job store within {timeout:g} s"
    except Exception as exc:  # any driver error: report it, retry next tick
        error = one_line(exc)
    await stores.discard(dsn)
    return StoreView(None, None, [], error)


async def purge_finished(
    stores: StoreCache,
    dsn: str,
    queue: str,
    older_than: timedelta,
    timeout: float,
    batch: int,
    batches: int,
) -> int:
    """Delete ``queue``'s jobs finished more than ``older_than`` ago (by the database's
    clock): up to ``batches`` batches of
    ``batch`` within ``timeout`` seconds. Returns how many; errors propagate."""
    total = 0
    async with asyncio.timeout(timeout):
        store = await stores.get(dsn)
        for _ in range(batches):
            deleted = await store.purge(older_than, queue=queue, limit=batch)
            total += deleted
            if deleted < batch:
                break
    return total
