"""The SQLite store's connection: one connection, used from one dedicated thread.

:class:`SQLiteConnection` owns the file's connection and the single-thread executor that
uses it (so the event loop never blocks on disk and the connection is never shared
between threads), applies migrations on open, translates driver errors (a locked or
unopenable file is :class:`StoreUnavailableError`, the rest :class:`StoreError`) and
keeps the in-process wake-ups of idle waiters. :class:`~slotfleet.store.sqlite.SQLiteStore`
builds its verbs on :meth:`SQLiteConnection._call`.

What this is not: it knows no verb and no SQL but the migrations'.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from slotfleet.models import StoreError, StoreUnavailableError
from slotfleet.store.rows import one_line
from slotfleet.store.sqlite_db import connect, migrate, sqlite_path

T = TypeVar("T")


class SQLiteConnection:
    """A SQLite file's connection, its thread and the error translation of every verb."""

    def __init__(self, dsn: str, *, busy_timeout: float = 30.0) -> None:
        """``busy_timeout`` is how long a write waits for another process's write lock
        before the store reports the database as unavailable."""
        self.dsn = dsn
        self.path = sqlite_path(dsn)
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._wakeups: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Event()
        """Set by this object's own enqueues and cancel requests (``wait_for_change``:
        ``PRAGMA data_version`` only shows other connections' commits)."""
        self._change_mark: tuple[Any, ...] | None = None

    # -- plumbing ---------------------------------------------------------------------

    async def _call(self, body: Callable[[sqlite3.Connection], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StoreError("the store is not open: await store.open() first")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, self._in_thread, body)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailableError(
                f"cannot use the SQLite database at {self.path}: {one_line(exc)}"
            ) from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite error on {self.path}: {one_line(exc)}") from exc

    def _in_thread(self, body: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = connect(self.path, self.busy_timeout)
        return body(self._conn)

    def _wake(self, queues: Sequence[str]) -> None:
        self._changed.set()
        for queue in set(queues):
            event = self._wakeups.pop(queue, None)
            if event is not None:
                event.set()

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slotfleet-sqlite")
        try:
            await self._call(migrate)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut(_: object = None) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, shut)
        finally:
            executor.shutdown(wait=False)
