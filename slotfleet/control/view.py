"""One tick's view of a queue: what its store says, read once per database.

:func:`read_views` reads every queue a fleet controller follows on one database in one
go; :class:`QueueView` is what a tick decides from. Busy slots per worker come from
:func:`slotfleet.scaling.busy_by_worker` (running jobs by lease owner, or the heartbeat
if higher), the one meaning of "busy" for marking and for the autoscaler's floor.

What this module is not: it keeps no connection (the caller owns the store) and reads
no cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from slotfleet.models import QueuedJob, QueueStats, WorkerHeartbeat
from slotfleet.scaling import busy_by_worker
from slotfleet.store.base import Store


@dataclass(frozen=True, slots=True)
class QueueView:
    """What one tick read about a queue (``stats`` is ``None`` when the read failed)."""

    queue: str
    stats: QueueStats | None
    cancellations: list[QueuedJob] | None = None
    workers: Sequence[WorkerHeartbeat] = ()
    leased: Mapping[str, int] = field(default_factory=dict)
    """The queue's running jobs per lease owner."""
    error: str | None = None
    opening: bool = False
    """The store is still being opened (connecting, migrating): not known to be down."""

    @classmethod
    def failed(cls, queue: str, error: str | None, *, opening: bool = False) -> QueueView:
        return cls(queue, None, None, (), {}, error, opening)

    def busy(self) -> dict[str, int]:
        """Worker id -> busy slots on this queue (empty without the store's figures)."""
        if self.stats is None:
            return {}
        return busy_by_worker(self.leased, self.workers, self.queue)


async def read_views(store: Store, queues: Sequence[str]) -> dict[str, QueueView]:
    """Backlog, cancel requests, heartbeats and running jobs of every queue in
    ``queues`` from one store, in a fixed number of statements (:meth:`Store.
    fleet_snapshot`) however many queues there are. Errors propagate."""
    snapshot = await store.fleet_snapshot(queues)
    workers = list(snapshot.workers)
    return {
        name: QueueView(name, q.stats, list(q.cancel_requests), workers, dict(q.running_by_worker))
        for name, q in snapshot.queues.items()
    }
