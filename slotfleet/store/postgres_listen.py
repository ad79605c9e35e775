"""Wake-ups for idle PostgreSQL workers (and fleet controllers): one long-lived LISTEN
connection per store and use.

The connection is not from the pool: it sits in LISTEN for the store's lifetime. A
background task reads notifications (payload: the queue name) and wakes whoever waits
on that queue (:meth:`Listener.wait`, notifications of the first channel only), and
whoever waits for any change on any of its channels (:meth:`Listener.wait_any`, which
also remembers a change that came while nobody waited). When the connection drops it
wakes every waiter (a job may have arrived unheard, so they should fetch) and
reconnects with backoff.

What this is not: a delivery guarantee. A notification sent while nobody listens is
lost; workers still poll at their polling interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from slotfleet.models import SlotfleetError

log = logging.getLogger(__name__)

#: Seconds of silence after which the listener checks its connection is alive.
_PING_SECONDS = 30.0


class Listener:
    """Waits for notifications on ``channel`` over connections from ``connect``."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[psycopg.AsyncConnection[Any]]],
        channel: str,
        *also: str,
    ) -> None:
        """Listen on ``channel`` (queue wake-ups) and on ``also`` (changes only)."""
        self._connect = connect
        self._channel = channel
        self._channels = (channel, *also)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._any: set[asyncio.Future[None]] = set()
        self._changed = False
        self._listening = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="slotfleet-listen"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._wake_all()
        self._change()

    async def wait(self, queue: str, timeout: float) -> None:
        """Return on a notification for ``queue``, a lost connection, or ``timeout``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(queue, set())
        waiters.add(future)
        try:
            await self._until(future, timeout)
        finally:
            waiters.discard(future)

    async def _until(self, future: asyncio.Future[None], timeout: float) -> None:
        """Wait for ``future`` (a notification) or ``timeout``. While not listening
        (connecting, or the database is down) a notification could not reach us, so
        LISTEN comes first."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await self._listening.wait()
                await future

    async def wait_any(self, timeout: float) -> None:
        """Return on a notification on any channel (or one since the previous call
        returned), a lost connection, or ``timeout``."""
        if self._changed:
            self._changed = False
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._any.add(future)
        try:
            await self._until(future, timeout)
        finally:
            self._any.discard(future)
        # What came before this return, the caller reads next. Not when cancelled: a
        # change that came meanwhile is kept for the next call.
        self._changed = False

    def _notified(self, channel: str, payload: str) -> None:
        if channel == self._channel:
            self._wake(payload)
        self._change()

    def _change(self) -> None:
        self._changed = True
        for future in self._any:
            if not future.done():
                future.set_result(None)

    def _wake(self, queue: str) -> None:
        for future in self._waiters.pop(queue, set()):
            if not future.done():
                future.set_result(None)

    def _wake_all(self) -> None:
        for queue in list(self._waiters):
            self._wake(queue)

    async def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await self._connect()
                async with conn:
                    for channel in self._channels:
                        await conn.execute(f"LISTEN {channel}")
                    self._listening.set()
                    delay = 0.1
                    while True:
                        async for notify in conn.notifies(timeout=_PING_SECONDS):
                            self._notified(notify.channel, notify.payload)
                        await conn.execute("SELECT 1")
            except (psycopg.Error, OSError, SlotfleetError) as exc:
                log.info("listen connection lost (%s); reconnecting in %.1fs", exc, delay)
            lost = self._listening.is_set()
            self._listening.clear()
            self._wake_all()
            if lost:  # a change may have gone unheard; a failed reconnect is no news
                self._change()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
