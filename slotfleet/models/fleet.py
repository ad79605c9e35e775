"""One read of many queues' control figures from one store: what the operator (and any
fleet controller) needs per tick, as plain frozen values.

:class:`FleetSnapshot` is what :meth:`slotfleet.store.Store.fleet_snapshot` returns: per
queue asked, its :class:`~slotfleet.models.queues.QueueStats`, its running jobs with a
cancel request and its running jobs per lease owner, plus the live workers' heartbeats
once for all of them. Every queue asked has an entry (empty when the store knows nothing
of it), so a caller never tests for a missing key.

What this module is not: it reads nothing and validates nothing. The containers are plain
dataclasses (no pydantic here); the values inside are the store's own models, equal to
what ``queue_stats``, ``cancel_requests``, ``running_by_worker`` and ``workers`` return.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slotfleet.models.jobs import QueuedJob
    from slotfleet.models.queues import QueueStats, WorkerHeartbeat


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """One queue's figures in a :class:`FleetSnapshot`."""

    stats: QueueStats
    """Backlog by state, slots from the snapshot's live workers, the pause in effect (as
    ``queue_stats(queue)`` gives it)."""
    cancel_requests: tuple[QueuedJob, ...] = ()
    """Running jobs with a cancel request, by id (as ``cancel_requests(queue=...)``)."""
    running_by_worker: Mapping[str, int] = field(default_factory=dict)
    """Running jobs per lease owner; owners with none are absent (as
    ``running_by_worker(queue)``)."""


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Many queues of one store, read at once (see the module docstring)."""

    queues: Mapping[str, QueueSnapshot]
    """Every queue asked, by name."""
    workers: tuple[WorkerHeartbeat, ...] = ()
    """Workers seen within the store's worker TTL, by id (as ``workers()``)."""
