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
from datetime import timedelta
from typing import Protocol

from slotfleet.fleet.manifest import QueueManifest
from slotfleet.models import QueueStats, SlotfleetError, WorkerHeartbeat
from slotfleet.models.queues import FunctionPolicy
from slotfleet.models.resource import PURGE_BATCH, RETENTION_CHECK_SECONDS, AutoscalingMode
from slotfleet.scaling import Decision, Observation, ScalerState, busy_by_worker, decide
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
    """The ``slotfleet worker`` command line for one worker of ``manifest``'s queue. The
    DSN is not on it (a command line is visible to every local user in ``ps``): workers
    read it from ``$SLOTFLEET_DSN`` (:meth:`SubprocessLauncher.environment`)."""
    spec = manifest.spec
    queue = f"{manifest.queue}:{spec.executor.kind.value}:{spec.executor.concurrency}"
    argv = [
        sys.executable, "-m", "slotfleet.cli.main", "worker",
        "--queue", queue,
        "--worker-id", worker_id,
        "--metrics-host", "127.0.0.1",
        "--metrics-port", "0",
        "--drain-timeout", str(spec.drain_timeout_seconds),
        "--lease-seconds", str(spec.lease_seconds),
        "--polling-interval", str(spec.polling_interval),
    ]  # fmt: skip
    if spec.rate_limit is not None:
        argv += ["--rate-limit", f"{spec.rate_limit.count}/{spec.rate_limit.period:g}"]
    if spec.paused:
        argv.append("--paused")
    if spec.functions is not FunctionPolicy.REGISTERED:
        argv += ["--functions", spec.functions.value]
    for module in spec.imports:
        argv += ["--import", module]
    return argv


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
    state: ScalerState = field(default_factory=ScalerState)
    last_stats: QueueStats | None = None
    beats: list[WorkerHeartbeat] = field(default_factory=list)
    """Heartbeats as of the last tick."""
    leased: dict[str, int] = field(default_factory=dict)
    """The queue's running jobs per worker as of the last tick."""
    last_purge: float | None = None
    """Clock reading of the last ``retentionSeconds`` purge."""
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

    def decide(self, stats: QueueStats) -> Decision:
        """The autoscaler's decision for ``stats`` (or the fixed size with mode off)."""
        spec = self.manifest.spec
        current = len(self.active)
        if spec.autoscaling.mode is AutoscalingMode.OFF:
            return Decision(spec.replicas, "fixed: autoscaling is off", spec.replicas)
        # Busy slots from heartbeats can lag a fetch by a heartbeat; running jobs in the
        # store cannot. Either shows work in flight, so take the larger.
        busy = busy_by_worker(self.leased, self.beats, self.manifest.queue)
        observation = Observation(
            at=self.clock(),
            replicas=current,
            slots_per_pod=spec.executor.concurrency,
            busy=max(stats.slots_busy, stats.running),
            # A paused queue's backlog is no demand (as the operator sees it).
            ready_pending=0 if spec.paused or stats.paused else stats.ready,
            busy_pods=sum(1 for w in self.active if busy.get(w.id, 0) > 0),
        )
        decision, self.state = decide(self.state, observation, spec.autoscaling)
        return decision

    async def stats(self) -> QueueStats:
        name = self.manifest.queue
        found = [s for s in await self.store.queue_stats(name) if s.queue == name]
        return found[0] if found else QueueStats(queue=name)

    async def step(self) -> Decision:
        """One tick: reap, observe, decide, start or stop workers, report."""
        self.reap()
        stats = self.last_stats = await self.stats()
        self.beats = await self.store.workers()
        self.leased = (
            await self.store.running_by_worker(self.manifest.queue) if stats.running else {}
        )
        await self.purge_finished()
        decision = self.decide(stats)
        current = len(self.active)
        self._report(current, decision, stats)
        if decision.replicas > current:
            for _ in range(decision.replicas - current):
                self._start()
        elif decision.replicas < current:
            ids = [w.id for w in self.active]
            count = current - decision.replicas
            for worker_id in choose_victims(
                ids, self.beats, self.manifest.queue, count, self.leased
            ):
                self._stop(self.workers[worker_id])
        return decision

    async def purge_finished(self) -> int:
        """``retentionSeconds`` as the operator applies it: on the first tick, then about
        once a minute, delete the queue's jobs finished longer ago (in batches)."""
        retention = self.manifest.spec.retention_seconds
        now = self.clock()
        if retention is None or (
            self.last_purge is not None and now - self.last_purge < RETENTION_CHECK_SECONDS
        ):
            return 0
        self.last_purge = now
        older_than = timedelta(seconds=retention)
        total = 0
        while True:
            deleted = await self.store.purge(
                older_than, queue=self.manifest.queue, limit=PURGE_BATCH
            )
            total += deleted
            if deleted < PURGE_BATCH:
                break
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
