"""Which workers are busy: running jobs per worker, from the store's two views of it.

A worker's heartbeat carries its busy slots, but only as of its last beat (a third of a
lease ago, seconds); a running job's ``lease_owner`` names its worker the moment the job
is claimed. Whatever picks workers to remove (the operator's ``pod-deletion-cost``, the
local fleet's victims) and the autoscaler's floor (:attr:`Observation.busy_pods`) take
the larger of the two, so a job claimed since the last beat still protects its worker.

What this module is not: it reads nothing itself (the caller passes what it read from
the store) and it decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from slotfleet.models import WorkerHeartbeat


def busy_by_worker(
    leased: Mapping[str, int], beats: Iterable[WorkerHeartbeat], queue: str
) -> dict[str, int]:
    """Worker id -> busy slots on ``queue``: the larger of its running jobs on ``queue``
    (``leased``, from :meth:`Store.running_by_worker`) and its heartbeat's busy slots.
    Workers with neither are absent."""
    busy: dict[str, int] = {owner: n for owner, n in leased.items() if owner and n > 0}
    for beat in beats:
        slots = beat.queues.get(queue, (0, 0))[1]
        if slots > busy.get(beat.worker_id, 0):
            busy[beat.worker_id] = slots
    return busy
