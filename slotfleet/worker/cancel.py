"""Cancel sources: how a worker learns that a running job should stop.

A :class:`CancelSource` runs beside the worker and calls
:meth:`WorkerControl.cancel` for each running job whose cancellation was requested.
Without a cluster, :class:`StoreCancelSource` polls the store's cancel requests for this
worker's jobs. In Kubernetes another source watches the worker's own ``Queue`` resource
(``status.cancellations`` and ``spec.paused``); both speak only this small protocol, so
the worker does not know where requests come from.

What this module is not: it never cancels pending jobs (the store does that at once
when the cancel is requested) and never writes anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from slotfleet.models import JobId
from slotfleet.store import Store

log = logging.getLogger(__name__)


class WorkerControl(Protocol):
    """What a cancel source may do to a worker."""

    async def cancel(self, job_id: JobId) -> bool:
        """Stop the running job ``job_id`` if this worker runs it; return whether it does."""
        ...

    def set_paused(self, queue: str, paused: bool) -> None:
        """Stop (or resume) fetching new jobs of ``queue``; running jobs go on."""
        ...

    @property
    def worker_id(self) -> str:
        """The worker's id (in a pod, the pod's name)."""
        ...

    def set_retiring(self, mark: str | None) -> None:
        """Stop claiming and confirm ``mark`` through the heartbeat (a scale-down chose
        this worker), or claim again (``None``); see ``slotfleet.worker.retiring``."""
        ...


class CancelSource(Protocol):
    """Something that feeds cancel requests (and pauses) into a worker."""

    async def run(self, control: WorkerControl) -> None:
        """Deliver requests to ``control`` until cancelled."""
        ...


class StoreCancelSource:
    """Polls ``store.cancel_requests(worker_id=...)`` every ``interval`` seconds."""

    def __init__(self, store: Store, worker_id: str, interval: float = 1.0) -> None:
        self.store = store
        self.worker_id = worker_id
        self.interval = interval

    async def run(self, control: WorkerControl) -> None:
        delivered: set[JobId] = set()
        while True:
            try:
                requests = await self.store.cancel_requests(worker_id=self.worker_id)
            except Exception as exc:  # a store blip: try again on the next tick
                log.warning("reading cancel requests failed: %s", exc)
                requests = []
            wanted = {job.id for job in requests}
            delivered &= wanted
            for job_id in wanted - delivered:
                if await control.cancel(job_id):
                    delivered.add(job_id)
            await asyncio.sleep(self.interval)
