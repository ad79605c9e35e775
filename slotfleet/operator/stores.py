"""Open job stores, one per DSN, shared by every Queue that names the same database.

The operator reads backlog, slots, heartbeats and cancel requests of every Queue on a
database once per tick (:func:`read_views`); opening a pool per tick would be wasteful,
so stores are opened on first use and kept. A store whose read failed is discarded and
reopened on the next tick, so a database that comes back is picked up without
restarting the operator. :func:`wait_for_change` sleeps until a job is enqueued or a
cancel requested on any of those databases, or a timeout, so a tick can start at once
instead of at its interval.

What this module is not: it holds no Kubernetes state and decides nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence

from slotfleet.control import QueueView
from slotfleet.control import read_views as control_read_views
from slotfleet.store import open_store
from slotfleet.store.base import Store
from slotfleet.store.dsn import scrub
from slotfleet.store.rows import one_line


class StoreCache:
    """DSN -> open :class:`Store`.

    A store is opened once, by one task per DSN that no caller's cancellation or
    timeout stops (opening may migrate the schema, which can take longer than a read may
    wait); callers wait for it each with their own bound, and one slow database never
    holds up the stores of others."""

    def __init__(self) -> None:
        self._stores: dict[str, Store] = {}
        self._opening: dict[str, asyncio.Task[Store]] = {}

    def opening(self, dsn: str) -> bool:
        """Whether the store of ``dsn`` is being opened now."""
        return dsn in self._opening

    async def get(self, dsn: str) -> Store:
        store = self._stores.get(dsn)
        if store is not None:
            return store
        task = self._opening.get(dsn)
        if task is None:
            task = self._opening[dsn] = asyncio.create_task(self._open(dsn))
        return await asyncio.shield(task)

    async def _open(self, dsn: str) -> Store:
        try:
            store = open_store(dsn)
            await store.open()
            self._stores[dsn] = store
            return store
        finally:
            self._opening.pop(dsn, None)

    async def discard(self, dsn: str) -> None:
        store = self._stores.pop(dsn, None)
        if store is not None:
            with contextlib.suppress(Exception):  # it is broken already; just let go
                await store.close()

    async def close(self) -> None:
        opening, self._opening = list(self._opening.values()), {}
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
        stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            with contextlib.suppress(Exception):
                await store.close()


async def read_views(
    stores: StoreCache, dsn: str, queues: Sequence[str], timeout: float
) -> dict[str, QueueView]:
    """One tick's read of every queue in ``queues`` on database ``dsn``
    (:func:`slotfleet.control.read_views`), bounded by ``timeout``; a failed read
    discards the store and every queue's view carries the one-line error (the DSN's
    password scrubbed). A store still being opened when the bound ends (connecting,
    migrating the schema) is no failure yet: the open goes on, and the views say
    ``opening``."""
    opened = False
    try:
        async with asyncio.timeout(timeout):
            store = await stores.get(dsn)
            opened = True
            return await control_read_views(store, queues)
    except TimeoutError:
        if not opened and stores.opening(dsn):
            error = f"still opening the job store (connecting, migrating) after {timeout:g} s"
            return {queue: QueueView.failed(queue, error, opening=True) for queue in queues}
        error = f"no answer from the job store within {timeout:g} s"
    except Exception as exc:  # any driver error: report it, retry next tick
        error = scrub(one_line(exc), dsn)
    await stores.discard(dsn)
    return {queue: QueueView.failed(queue, error) for queue in queues}


async def wait_for_change(stores: StoreCache, dsns: Iterable[str], timeout: float) -> None:
    """Return when a job was enqueued (or made ready again) or a cancel requested in any
    of the stores of ``dsns`` since the previous call returned, or after ``timeout``
    seconds (:meth:`~slotfleet.store.Store.wait_for_change`). A store that cannot be
    opened or waited on only sleeps: its error is the next read's to report, and it must
    not turn the wait into a busy loop."""

    async def one(dsn: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            store = await stores.get(dsn)
            await store.wait_for_change(max(0.0, deadline - loop.time()))
        except Exception:  # reported by the next read_views, not here
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    waits = [asyncio.create_task(one(dsn)) for dsn in dict.fromkeys(dsns)]
    if not waits:
        await asyncio.sleep(max(0.0, timeout))
        return
    try:
        await asyncio.wait(waits, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
