"""``spec.retentionSeconds``: when to purge a queue's finished jobs, and how.

The operator and the local fleet both purge on the first tick and then every
``RETENTION_CHECK_SECONDS``, at most ``batches`` batches a round (the rest goes on the
next round), through :func:`slotfleet.store.purge_in_batches` (the one batched purge
loop, also behind ``slotfleet jobs purge``).

What this module is not: it reports nothing (the caller logs or prints the count).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from slotfleet.models.resource import RETENTION_CHECK_SECONDS
from slotfleet.store import purge_in_batches
from slotfleet.store.base import Store

#: Batches of ``PURGE_BATCH`` rows at most per round.
PURGE_BATCHES = 10


@dataclass(slots=True)
class Retention:
    """The purge cadence of one queue (monotonic seconds of the last round)."""

    last: float | None = None

    def due(self, retention: int | None, now: float) -> bool:
        """Whether a purge round is due at ``now``; starts the round when it is."""
        if retention is None:
            return False
        if self.last is not None and now - self.last < RETENTION_CHECK_SECONDS:
            return False
        self.last = now
        return True

    @staticmethod
    async def purge(store: Store, queue: str, retention: int) -> int:
        """One round: delete ``queue``'s jobs finished over ``retention`` s ago."""
        return await purge_in_batches(
            store, timedelta(seconds=retention), queue=queue, max_batches=PURGE_BATCHES
        )
