"""A worker's part in a race-free scale-down: stop claiming when retired, and say so.

The operator lists the pods it is about to remove in the Queue's ``status.retiring``
(``slotfleet.scaling.retire`` says why and how). The worker's Queue source
(``kube_source.py``) reads its own entry with :func:`mark_for` and hands it to
:meth:`Retirement.set`; then

* every fetch loop of the worker stops claiming (like a pause of all its queues: running
  jobs go on);
* once no loop is between a claim and handing its jobs to an executor, the mark becomes
  :attr:`Retirement.confirmed` and a heartbeat is written at once: the store now says
  "this worker claims nothing more, and here are its busy slots", and every later
  heartbeat says it again. The operator shrinks the fleet only after that;
* when the mark is lifted (a new burst wants the pod after all), the loops claim again.

What this module is not: it reads no Queue (the source does), writes nothing but through
the heartbeat callback, and never stops the worker (SIGTERM does that, after).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

log = logging.getLogger(__name__)


def mark_for(status: Mapping[str, Any] | None, worker_id: str) -> str | None:
    """This worker's mark in a Queue's ``status`` (its ``retiring[].since``), if listed."""
    for entry in (status or {}).get("retiring") or []:
        if isinstance(entry, Mapping) and entry.get("pod") == worker_id:
            return str(entry.get("since") or "")
    return None


class ClaimingLoop(Protocol):
    """What a retirement needs of a fetch loop (``slotfleet.worker.loop.QueueLoop``)."""

    retiring: bool
    """No claims while set (checked before each round, with no await before the claim)."""
    settled: asyncio.Event
    """Set while no claim is in flight nor its jobs on their way to the executor."""
    wake: asyncio.Event


class Retirement:
    """Whether this worker is retiring, and whether it has confirmed that."""

    def __init__(
        self, loops: Callable[[], Iterable[ClaimingLoop]], beat: Callable[[], Awaitable[None]]
    ) -> None:
        self._loops = loops
        self._beat = beat
        self.mark: str | None = None
        """The mark the operator set for this worker, if any."""
        self.confirmed: str | None = None
        """The mark once no claim is in flight any more: what heartbeats echo."""
        self._confirming: set[asyncio.Task[None]] = set()

    def set(self, mark: str | None) -> None:
        """Follow the Queue's mark for this worker (``None``: not retiring)."""
        if mark == self.mark:
            return
        self.mark = mark
        self.confirmed = None
        for loop in self._loops():
            loop.retiring = mark is not None
            loop.wake.set()
        log.info("retiring for a scale-down: claiming no more jobs" if mark else "claiming again")
        task = asyncio.create_task(self._confirm(mark))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)

    def apply_to(self, loop: ClaimingLoop) -> None:
        """Give a loop made after the mark arrived the same state."""
        loop.retiring = self.mark is not None

    async def _confirm(self, mark: str | None) -> None:
        # a loop that is settled now stays so: it sees ``retiring`` before its next claim
        for loop in list(self._loops()):
            await loop.settled.wait()
        if mark == self.mark:  # not superseded meanwhile
            self.confirmed = mark
            await self._beat()

    async def stop(self) -> None:
        """Cancel a confirmation still under way (the worker is stopping)."""
        for task in list(self._confirming):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
