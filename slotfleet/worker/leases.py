"""The leases one worker process holds, renewed per attempt and dropped when lost.

Leases are renewed per attempt, never per worker id: each heartbeat names the
``(job, claim token)`` pairs this process holds (attempts running in its executors, and
finished attempts whose completion is not written yet), and the store renews only those
still carrying that token. A pair the store did not renew was lost (this process was
paused past its lease, or the job went to another attempt): the attempt is stopped and
its completion dropped. So a container restarted under its pod's name, a fetch whose
reply was lost, or a process that wakes from a pause can never keep a job alive that it
does not run (docs/reliability.md).

What this module is not: it does not decide when to beat (the worker's heartbeat loop
does) and writes nothing but the heartbeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from slotfleet.models import WorkerHeartbeat
from slotfleet.store import Lease, Store
from slotfleet.worker.batcher import CompletionBatcher
from slotfleet.worker.executors import Executor

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Sends heartbeats with the held leases and obeys the store's answer."""

    def __init__(
        self,
        store: Store,
        lease_seconds: float,
        executors: Callable[[], Iterable[Executor]],
        batcher: CompletionBatcher,
    ) -> None:
        self._store = store
        self._lease_seconds = lease_seconds
        self._executors = executors
        self._batcher = batcher

    def held(self) -> list[Lease]:
        """Every attempt this process holds: running, or finished with its completion not
        written yet (a job whose result waits to be written must not go to another
        worker)."""
        held = [lease for e in self._executors() for lease in e.held()]
        return held + self._batcher.held()

    async def beat(self, beat: WorkerHeartbeat) -> None:
        """Write ``beat``, renewing the held leases; stop acting on the ones lost."""
        held = self.held()
        renewed = await self._store.heartbeat(beat, self._lease_seconds, held)
        self.drop(set(held) - renewed)

    def drop(self, leases: set[Lease]) -> None:
        """Stop the attempts of ``leases`` (an executor interrupts and never reports them)
        or, if they already ended, discard their unwritten completions."""
        for lease in leases:
            if not any(e.lose(lease) for e in self._executors()):
                self._batcher.discard(lease)
