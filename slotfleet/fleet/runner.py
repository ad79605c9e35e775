"""The local fleet: a Queue manifest run as worker processes on this machine.

What the operator does with pods, this does with subprocesses: every tick it reads the
queue's backlog and slots from the store, asks the same autoscaler
(:mod:`slotfleet.scaling`) how many workers the queue wants, starts
``slotfleet worker`` processes or sends SIGTERM to some, and prints a line whenever the
decision changes. Scale-down picks idle workers first (fewest busy slots in their
heartbeats or running jobs, newest first), the fleet never shrinks below the workers
holding a job, and a terminated worker drains: no running job is killed by a scale-down.
Stopping the fleet drains every worker.

What this module is not: it runs no jobs itself, needs no cluster and no kopf, and
talks to the store only through the :class:`~slotfleet.store.base.Store` protocol.
Workers run in their own process group, so a Ctrl-C reaches the fleet alone, which
then drains them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from slotfleet.control import QueueView, Retention, Sizer, read_views, size_fleet, worker_args
from slotfleet.fleet.manifest import QueueManifest
from slotfleet.models import QueueStats, SlotfleetError, WorkerHeartbeat
from slotfleet.models.resource import AutoscalingMode
from slotfleet.scaling import Decision, busy_by_worker
from slotfleet.store import DSN_ENV
from slotfleet.store.base import Store

#: Seconds a terminated worker gets beyond its drain timeout before it is killed.
KILL_GRACE_SECONDS = 10.0


class Process(Protocol):
    """The part of :class:`subprocess.Popen` the fleet uses."""

    pid: int

    def poll(self) -> int | None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class Launcher(Protocol):
    """Starts one worker process with a given id."""

    def start(self, worker_id: str) -> Process: ...


def worker_command(manifest: QueueManifest, worker_id: str) -> list[str]:
    """The ``slotfleet worker`` command line for one worker of ``manifest``'s queue
    (:func:`slotfleet.control.worker_args`, as the operator writes it). The DSN is not on
    it (a command line is visible to every local user in ``ps``): workers read it from
    ``$SLOTFLEET_DSN`` (:meth:`SubprocessLauncher.environment`)."""
    args = worker_args(
        manifest.spec,
        manifest.queue,
        worker_id=worker_id,
        metrics_host="127.0.0.1",
        metrics_port=0,
        paused=manifest.spec.paused,
    )
    return [sys.executable, "-m", "slotfleet.cli.main", *args]


@dataclass(frozen=True, slots=True)
class SubprocessLauncher:
    """Starts ``slotfleet worker`` subprocesses in this directory, each in its own
    process group (signals come from the fleet, not the terminal)."""

    manifest: QueueManifest
    dsn: str
    env: Mapping[str, str]

    def environment(self) -> dict[str, str]:
        """The workers' environment: this one, the manifest's plain ``env`` values (a
        local fleet has no Secrets or pod fields to resolve ``valueFrom`` with), and the
        DSN in ``$SLOTFLEET_DSN``."""
        plain = {v.name: v.value for v in self.manifest.spec.env if v.value is not None}
        return {**self.env, **plain, DSN_ENV: self.dsn}

    def start(self, worker_id: str) -> Process:
        return subprocess.Popen(
            worker_command(self.manifest, worker_id), env=self.environment(), process_group=0
        )


@dataclass(slots=True)
class Worker:
    """One process of the fleet."""

    id: str
    process: Process
    started_at: float
    stopping_since: float | None = None


def choose_victims(
    candidates: Sequence[str],
    beats: Sequence[WorkerHeartbeat],
    queue: str,
    count: int,
    leased: Mapping[str, int] | None = None,
) -> list[str]:
    """The ``count`` workers to stop: fewest busy slots first, then the newest.

    ``candidates`` are in start order. Busy slots are the larger of a worker's heartbeat
    and its running jobs (``leased``, by lease owner; a heartbeat lags a claim). A
    worker with neither is still starting or idle.
    """
    busy = busy_by_worker(leased or {}, beats, queue)
    order = sorted(range(len(candidates)), key=lambda i: (busy.get(candidates[i], 0), -i))
    return [candidates[i] for i in order[: max(count, 0)]]


@dataclass(slots=True)
class LocalFleet:
    """Sizes one queue's worker processes. Call :meth:`step` every tick, or :meth:`run`."""

    manifest: QueueManifest
    store: Store
    launcher: Launcher
    clock: Callable[[], float] = time.monotonic
    """Monotonic seconds; the autoscaler's notion of time."""
    say: Callable[[str], None] = print
    """Where the fleet's one-line reports go."""
    id_prefix: str = "fleet"
    """Workers are ``{id_prefix}-1``, ``-2``, ...; unique per fleet sharing a store."""
    workers: dict[str, Worker] = field(default_factory=dict)
    sizer: Sizer = field(default_factory=Sizer)
    retention: Retention = field(default_factory=Retention)
    last_stats: QueueStats | None = None
    view: QueueView | None = None
    """What the store said at the last tick."""
    _serial: int = 0
    _last_reported: tuple[int, str] | None = None

    @property
    def active(self) -> list[Worker]:
        """Workers not told to stop, in start order."""
        return [w for w in self.workers.values() if w.stopping_since is None]

    def reap(self) -> None:
        """Forget exited workers; kill those that outlived their drain timeout."""
        now = self.clock()
        limit = self.manifest.spec.drain_timeout_seconds + KILL_GRACE_SECONDS
        for worker in list(self.workers.values()):
            code = worker.process.poll()
            if code is not None:
                del self.workers[worker.id]
                if worker.stopping_since is None or code != 0:
                    self.say(f"{self.manifest.queue}: worker {worker.id} exited with code {code}")
            elif worker.stopping_since is not None and now - worker.stopping_since > limit:
                self.say(f"{self.manifest.queue}: worker {worker.id} did not drain; killing it")
                worker.process.kill()

    # the FleetPort the core sizes (slotfleet.control.size_fleet)

    def size(self) -> int:
        return len(self.active)

    def members(self) -> list[str]:
        return [w.id for w in self.active]

    async def mark(self, busy: Mapping[str, int]) -> bool:
        return True  # resize picks idle victims itself; nothing to mark ahead

    def retire(self, decision: Decision) -> Decision:
        # no mark ahead: resize signals the idle workers it picks in the same tick, a
        # narrower window than a pod's (docs/operations.md, "Scale-down")
        return decision

    async def resize(
        self, decision: Decision, busy: Mapping[str, int], *, overridden: bool
    ) -> Decision:
        current = len(self.active)
        if decision.replicas > current:
            for _ in range(decision.replicas - current):
                self._start()
        elif decision.replicas < current:
            view = self.view
            beats = list(view.workers) if view is not None else []
            leased = dict(view.leased) if view is not None else {}
            ids = [w.id for w in self.active]
            count = current - decision.replicas
            for worker_id in choose_victims(ids, beats, self.manifest.queue, count, leased):
                self._stop(self.workers[worker_id])
        return decision

    async def step(self) -> Decision:
        """One tick: reap, observe, decide, start or stop workers, report."""
        self.reap()
        queue = self.manifest.queue
        self.view = (await read_views(self.store, [queue]))[queue]
        stats = self.last_stats = self.view.stats or QueueStats(queue=queue)
        await self.purge_finished()
        current = len(self.active)
        spec = self.manifest.spec
        decision = await size_fleet(
            self, self.sizer, spec, self.view, at=self.clock(), paused=spec.paused,
            hpa_sizes=False,
        )  # fmt: skip
        assert decision is not None  # the view has figures, and no HPA sizes a local fleet
        self._report(current, decision, stats)
        return decision

    async def purge_finished(self) -> int:
        """``retentionSeconds`` as the operator applies it: on the first tick, then about
        once a minute, delete the queue's jobs finished longer ago (in batches)."""
        retention = self.manifest.spec.retention_seconds
        if retention is None or not self.retention.due(retention, self.clock()):
            return 0
        total = await Retention.purge(self.store, self.manifest.queue, retention)
        if total:
            queue = self.manifest.queue
            self.say(f"{queue}: deleted {total} job(s) finished over {retention}s ago")
        return total

    def idle(self, decision: Decision) -> bool:
        """At the smallest size with nothing pending or running (for ``--until-idle``)."""
        stats, spec = self.last_stats, self.manifest.spec
        off = spec.autoscaling.mode is AutoscalingMode.OFF
        return (
            stats is not None
            and decision.replicas == len(self.active)
            and decision.replicas <= (spec.replicas if off else spec.autoscaling.min_replicas)
            and stats.ready + stats.scheduled + stats.running == 0
        )

    async def run(
        self,
        stop: asyncio.Event,
        *,
        interval: float = 1.0,
        duration: float | None = None,
        until_idle: bool = False,
    ) -> None:
        """Step every ``interval`` seconds until ``stop`` is set, ``duration`` passes or,
        with ``until_idle``, the fleet is idle; then drain every worker."""
        deadline = math.inf if duration is None else self.clock() + duration
        try:
            while not stop.is_set() and self.clock() < deadline:
                decision = await self.step()
                if until_idle and self.idle(decision):
                    self.say(f"{self.manifest.queue}: idle; stopping")
                    break
                remaining = max(0.0, min(interval, deadline - self.clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=remaining)
        finally:
            await self.drain()

    async def drain(self, poll: float = 0.1) -> None:
        """SIGTERM every worker and wait for all to exit (killing stragglers)."""
        self.reap()
        for worker in self.active:
            self._stop(worker)
        if self.workers:
            self.say(f"{self.manifest.queue}: draining {len(self.workers)} worker(s)")
        while self.workers:
            self.reap()
            if self.workers:
                await asyncio.sleep(poll)

    def _start(self) -> None:
        self._serial += 1
        worker_id = f"{self.id_prefix}-{self._serial}"
        try:
            process = self.launcher.start(worker_id)
        except OSError as exc:
            raise SlotfleetError(f"cannot start worker {worker_id}: {exc}") from exc
        self.workers[worker_id] = Worker(worker_id, process, self.clock())

    def _stop(self, worker: Worker) -> None:
        if worker.stopping_since is None:
            worker.stopping_since = self.clock()
            worker.process.terminate()

    def _report(self, current: int, decision: Decision, stats: QueueStats) -> None:
        # Every change is reported; of the non-changes only the first of a hold (why a
        # scale-down is not happening yet), not each steady tick.
        kind = decision.reason.partition(":")[0]
        key = (decision.replicas, kind)
        if decision.replicas == current and (kind != "holding" or key == self._last_reported):
            return
        self._last_reported = key
        self.say(
            f"{self.manifest.queue}: {current} -> {decision.replicas} workers: {decision.reason}"
            f" [ready {stats.ready}, running {stats.running},"
            f" slots {stats.slots_busy}/{stats.slots_total} busy]"
        )
