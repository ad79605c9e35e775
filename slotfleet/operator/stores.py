"""Open job stores, one per DSN, shared by every Queue that names the same database.

The operator reads backlog, slots, heartbeats and cancel requests from each Queue's
store every tick; opening a pool per tick would be wasteful, so stores are opened on
first use and kept. A store whose read failed is discarded and reopened on the next
tick, so a database that comes back is picked up without restarting the operator.

What this module is not: it never writes jobs; it holds no Kubernetes state.
"""

from __future__ import annotations

import asyncio
import contextlib

from slotfleet.store import open_store
from slotfleet.store.base import Store


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
