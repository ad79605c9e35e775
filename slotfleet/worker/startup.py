"""Waiting for the store at start-up, and awaiting anything unless a stop comes first.

A worker started before its database (a failover, a pod scheduled first) waits: it
retries with a capped exponential backoff, one log line per failure. Only
:class:`~slotfleet.models.StoreUnavailableError` is waited out; a bad DSN or any other
settings error fails at once.

What this module is not: it opens nothing itself (the caller's ``connect`` does) and
keeps no state beyond the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from slotfleet.models import StoreUnavailableError

log = logging.getLogger(__name__)

#: First and longest pause between attempts to reach the store at startup.
STARTUP_BACKOFF_SECONDS = (0.2, 5.0)


async def unless_stopped(awaitable: Awaitable[None], stopping: asyncio.Event) -> bool:
    """Await ``awaitable`` unless ``stopping`` is set first (it is then cancelled);
    return whether it completed. Its exception, if any, propagates."""
    work = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in (work, stop):
            if not future.done():
                future.cancel()
        await asyncio.gather(work, stop, return_exceptions=True)
    if work.cancelled():
        return False
    work.result()
    return True


async def connect_patiently(
    connect: Callable[[], Awaitable[None]],
    stopping: asyncio.Event,
    waiting: Callable[[bool], None],
) -> bool:
    """Run ``connect`` until it succeeds, waiting out an unreachable store with a capped
    exponential backoff (``waiting(True)`` while it does); return ``False`` if stopped
    meanwhile."""
    delay, longest = STARTUP_BACKOFF_SECONDS
    while True:
        try:
            if not await unless_stopped(connect(), stopping):
                return False
        except StoreUnavailableError as exc:
            waiting(True)
            log.warning("store unreachable, retrying in %gs: %s", delay, exc)
            if not await unless_stopped(asyncio.sleep(delay), stopping):
                return False
            delay = min(longest, delay * 2)
            continue
        waiting(False)
        return True
