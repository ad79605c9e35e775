"""The worker: executors per queue, fetch loops, heartbeat, cancel source, drain.

One :class:`Worker` serves one or more queues, each with its own executor. It claims
jobs as slots free up (``loop.py``), writes completions in small batches
(``batcher.py``), heartbeats its slots and extends its leases, and recovers jobs whose
worker died (``store.recover_expired`` on every heartbeat, so an expired lease is back
within seconds).

Leases are renewed per attempt (held claim tokens), never per worker id: see
``leases.py``.

:meth:`Worker.run` returns after a drain: stop fetching, let running jobs finish within
``drain_timeout``, hand the rest back (``released``), flush, forget the heartbeat.

A worker that cannot reach the store when it starts (a database failover, a pod started
before its database) waits: it retries opening the store and writing its first
heartbeat with a capped exponential backoff, one log line per failure, serving
``/healthz`` (alive) and a 503 ``/readyz`` meanwhile; a stop request ends the wait at
once. Only :class:`~slotfleet.models.StoreUnavailableError` is waited out: a bad DSN or
any other settings error still fails at once.

What this module is not: it installs no signal handlers (the CLI does, and calls
:meth:`Worker.request_stop`), opens but never closes the store (its owner does), and
does not know whether cancel requests come from the store or a Kubernetes resource.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime

from slotfleet.health_server import HealthServer, MetricsServerConfig
from slotfleet.models import (
    Completion,
    InvalidSettingsError,
    JobId,
    QueueSettings,
    WorkerHeartbeat,
)
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import DEFAULT_LEASE_SECONDS, Store
from slotfleet.worker.batcher import CompletionBatcher
from slotfleet.worker.cancel import CancelSource, StoreCancelSource
from slotfleet.worker.executors import Executor, executor_class
from slotfleet.worker.leases import LeaseKeeper
from slotfleet.worker.loop import QueueLoop
from slotfleet.worker.metrics import SlotUsage, WorkerMetrics
from slotfleet.worker.retiring import Retirement
from slotfleet.worker.startup import connect_patiently

log = logging.getLogger(__name__)

#: Longest gap between heartbeats, whatever the lease: the operator and ``queue_stats``
#: count a worker as gone when it has not been seen for DEFAULT_WORKER_TTL_SECONDS (30).
MAX_HEARTBEAT_SECONDS = 10.0

#: Bounds on the store calls of a stopping worker: the "draining" heartbeat (sent while
#: jobs finish) and the goodbye (skipped when the store did not answer the flush), each;
#: writing the last completions. With a fetch's pool wait (2 s on PostgreSQL) an
#: unreachable store adds at most 7 s to the drain timeout, inside the 10 s the pod's
#: grace period adds.
ANNOUNCE_SECONDS = 2.0
FLUSH_SECONDS = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_worker_id() -> str:
    """Host, pid and a random suffix: a restarted process must never reuse an id, or its
    heartbeat would keep extending the leases its predecessor died holding."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Worker:
    """Runs the jobs of ``queues`` from ``store`` until stopped (or, in burst mode,
    until nothing is ready)."""

    def __init__(
        self,
        store: Store,
        queues: Sequence[QueueSettings],
        *,
        worker_id: str | None = None,
        max_slots: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        heartbeat_interval: float | None = None,
        drain_timeout: float = 30.0,
        cancel_source: CancelSource | None = None,
        metrics: MetricsServerConfig | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        names = [q.name for q in queues]
        if not queues:
            raise InvalidSettingsError("a worker needs at least one queue")
        if len(set(names)) != len(names):
            raise InvalidSettingsError(f"a queue is listed twice: {', '.join(names)}")
        if max_slots is not None and max_slots < 1:
            raise InvalidSettingsError("max_slots must be at least 1")
        if lease_seconds <= 0 or drain_timeout < 0:
            raise InvalidSettingsError("lease_seconds must be positive, drain_timeout >= 0")
        self.store = store
        self.queues = list(queues)
        self._worker_id = worker_id or default_worker_id()
        self.max_slots = max_slots
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval or min(
            lease_seconds / 3, MAX_HEARTBEAT_SECONDS
        )
        self.drain_timeout = drain_timeout
        self.cancel_source: CancelSource = cancel_source or StoreCancelSource(
            store, self._worker_id, interval=min(1.0, self.heartbeat_interval)
        )
        self.metrics_config = metrics
        self._clock = clock
        self.executors: dict[str, Executor] = {}
        self.metrics = WorkerMetrics(self)
        self._loops: dict[str, QueueLoop] = {}
        self._batcher = CompletionBatcher(store, clock=clock)
        self.leases = LeaseKeeper(
            store, lease_seconds, lambda: self.executors.values(), self._batcher
        )
        self.retirement = Retirement(
            lambda: self._loops.values(), lambda: self._safely(self._beat())
        )
        """Whether a scale-down chose this worker (see ``retiring.py``)."""
        self._stopping = asyncio.Event()
        self._slot_changed = asyncio.Event()
        self._started_at: datetime | None = None
        self.ready = False
        """True once the store is open and the first heartbeat is written."""
        self.waiting_for_store = False
        """True while the store is unreachable at startup (and :meth:`run` retries)."""
        self._registered = False
        self.draining = False
        self.alive = False
        """True while :meth:`run` runs."""

    # -- ExecutorHost -------------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def now(self) -> datetime:
        return self._clock()

    def job_completed(self, job: ClaimedJob, completion: Completion, duration: float) -> None:
        self._batcher.add(completion)
        self.metrics.job_completed(job.queue, completion.outcome.value, duration)

    def lease_lost(self, job: ClaimedJob) -> None:
        log.warning(
            "job %s (attempt %d) lost its lease: this worker stops it; another attempt owns it",
            job.id,
            job.attempts,
        )
        self.metrics.job_completed(job.queue, "lost", 0.0)

    def slot_freed(self, queue: str) -> None:
        self._slot_changed.set()
        loops = self._loops.values() if self.max_slots is not None else [self._loops[queue]]
        for loop in loops:
            loop.wake.set()

    # -- WorkerControl ------------------------------------------------------------

    async def cancel(self, job_id: JobId) -> bool:
        for executor in self.executors.values():
            if executor.holds(job_id):
                from slotfleet.models.jobs import Reference  # a cancel: off the hot path

                await executor.cancel(Reference(identifier=job_id))
                return True
        return False

    def set_retiring(self, mark: str | None) -> None:  # see retiring.py
        self.retirement.set(mark)

    def set_paused(self, queue: str, paused: bool) -> None:
        loop = self._loops.get(queue)
        if loop is not None and loop.paused != paused:
            loop.paused = paused
            loop.wake.set()

    # -- SlotSource ---------------------------------------------------------------

    def slot_usage(self) -> Iterator[SlotUsage]:
        """Slots per queue; with ``max_slots`` no queue reports more than the cap, so the
        autoscaler's slots per pod are the ones a pod can really fill."""
        cap = self.max_slots
        global_free = self._global_free()
        for name, executor in self.executors.items():
            total = executor.concurrency if cap is None else min(executor.concurrency, cap)
            busy = executor.busy_slots
            free = min(max(0, total - busy), global_free)
            yield SlotUsage(name, executor.kind, total, busy, free)

    # -- lifecycle ----------------------------------------------------------------

    def request_stop(self) -> None:
        """Begin a drain; :meth:`run` returns when it is done. Safe from signal handlers
        installed with ``loop.add_signal_handler``."""
        self._stopping.set()

    def busy_slots(self) -> int:
        return sum(e.busy_slots for e in self.executors.values())

    def _global_free(self) -> int:
        if self.max_slots is None:
            return 1 << 30
        return max(0, self.max_slots - self.busy_slots())

    async def run(self, *, burst: bool = False) -> None:
        """Serve until :meth:`request_stop`; with ``burst``, until every queue has
        nothing ready and nothing running. Always ends with a drain."""
        if self.alive:
            raise RuntimeError("this worker is already running")
        self.alive = True
        self._stopping.clear()
        self._registered = False
        self.executors = {}
        server: HealthServer | None = None
        tasks: list[asyncio.Task[None]] = []
        try:
            if self.metrics_config is not None and self.metrics_config.port:
                server = HealthServer(
                    self.metrics_config,
                    render_metrics=self.metrics.render,
                    alive=lambda: self.alive,
                    not_ready=self._not_ready,
                )
                await server.start()
            self.executors = {q.name: executor_class(q.executor)(self, q) for q in self.queues}
            self._loops = {name: self._make_loop(e) for name, e in self.executors.items()}
            for loop in self._loops.values():
                self.retirement.apply_to(loop)
            self._started_at = self.now()
            if not await self._connect():
                return  # stopped while waiting for the store: nothing ran, nothing to hand back
            self.ready = True
            background = [self._batcher.run(), self._heartbeats(), self.cancel_source.run(self)]
            tasks = [asyncio.create_task(c) for c in background]
            fetchers = [asyncio.create_task(loop.run()) for loop in self._loops.values()]
            watchers: list[asyncio.Task[object]] = [asyncio.create_task(self._stopping.wait())]
            if burst:
                watchers.append(asyncio.create_task(self._burst_watch()))
            done, _ = await asyncio.wait(
                [*tasks, *fetchers, *watchers], return_when=asyncio.FIRST_COMPLETED
            )
            self._stopping.set()
            await asyncio.gather(*fetchers, *watchers, return_exceptions=True)
            for task in done:
                crash = None if task.cancelled() else task.exception()
                if crash is not None:  # a bug, not a store blip: those are handled inside
                    raise crash
        finally:
            try:
                await self._drain(tasks)
            finally:
                if server is not None:
                    await server.stop()
                self.alive = False
                self.ready = False
                self.waiting_for_store = False

    def _make_loop(self, executor: Executor) -> QueueLoop:
        return QueueLoop(
            self.store,
            executor,
            worker_id=self.worker_id,
            lease_seconds=self.lease_seconds,
            global_free=self._global_free,
            stopping=self._stopping,
            on_fetched=self.metrics.job_started,
        )

    def _not_ready(self) -> str | None:
        """Why ``/readyz`` answers 503, or ``None`` when the worker is serving."""
        if self.draining:
            return "draining"
        if self.waiting_for_store:
            return "store unreachable"
        return None if self.ready else "starting"

    async def _connect(self) -> bool:
        """Open the store and write the first heartbeat, waiting out an unreachable store;
        return ``False`` if stopped meanwhile."""

        def waiting(now: bool) -> None:
            self.waiting_for_store = now

        return await connect_patiently(self._open_and_register, self._stopping, waiting)

    async def _open_and_register(self) -> None:
        await self.store.open()
        await self._beat()
        self._registered = True

    async def _drain(self, tasks: list[asyncio.Task[None]]) -> None:
        """Let running jobs finish (up to ``drain_timeout``), then write what is left.

        Besides the drain timeout, the store calls here are bounded (see
        ``FLUSH_SECONDS``), so a worker stops inside its pod's grace period (drain timeout
        + 10 s) even when the database is unreachable; jobs whose completions were not
        written by then run again when their leases expire (nothing is lost)."""
        self.draining = True
        self._stopping.set()
        announce: asyncio.Task[None] | None = None
        store_answers = True
        try:
            if self._registered:  # tell the operator now, without holding up the drain
                announce = asyncio.create_task(self._bounded(self._beat(), ANNOUNCE_SECONDS))
            if self.executors:
                await self._wait_idle(self.drain_timeout)
                if self.busy_slots():
                    log.warning("drain timeout: handing %d running jobs back", self.busy_slots())
                for executor in self.executors.values():
                    await executor.stop()
                await self._bounded(self._settle(), ANNOUNCE_SECONDS)
                if not await self._batcher.flush(timeout=FLUSH_SECONDS):
                    store_answers = False
                    log.warning("some completions were not written; their leases will expire")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.retirement.stop()
            if announce is not None:
                await announce
            if self._registered and store_answers:  # else it ages out of the heartbeats
                await self._bounded(self.store.remove_worker(self.worker_id), ANNOUNCE_SECONDS)
            self.draining = False

    async def _bounded(self, call: Awaitable[None], seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._safely(call)
        except TimeoutError:
            log.warning("store call given up after %gs while stopping", seconds)

    async def _wait_idle(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self.busy_slots():
                    self._slot_changed.clear()
                    await self._slot_changed.wait()
        except TimeoutError:
            pass

    async def _settle(self) -> None:
        for loop in self._loops.values():
            await loop.settle()

    async def _beat(self) -> None:
        beat = WorkerHeartbeat(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues={u.queue: (u.total, u.busy) for u in self.slot_usage()},
            started_at=self._started_at,
            last_seen=self.now(),
            draining=self.draining,
            retiring=self.retirement.confirmed,
        )
        await self.leases.beat(beat)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            await self._safely(self._beat())
            await self._safely(self.store.recover_expired())

    @staticmethod
    async def _safely(awaitable: object) -> None:
        try:
            await awaitable  # type: ignore[misc]
        except Exception as exc:  # a store blip must not stop the worker
            log.warning("store call failed: %s", exc)

    async def _burst_watch(self) -> None:
        """Return when nothing is running, nothing is being fetched or written, and the
        store has nothing ready for an unpaused queue (paused neither here nor in the
        store; checked twice around the query, so a job claimed meanwhile is noticed)."""
        active = {name for name, loop in self._loops.items() if not loop.paused}
        while True:
            await asyncio.sleep(0.05)
            if not self._quiet():
                continue
            fetched = sum(loop.fetched for loop in self._loops.values())
            try:
                stats = await self.store.queue_stats()
            except Exception as exc:
                log.warning("reading queue stats failed: %s", exc)
                continue
            if any(s.ready for s in stats if s.queue in active and not s.paused):
                continue
            if self._quiet() and fetched == sum(loop.fetched for loop in self._loops.values()):
                return

    def _quiet(self) -> bool:
        return (
            self.busy_slots() == 0
            and self._batcher.pending == 0
            and not any(loop.fetching for loop in self._loops.values())
        )
