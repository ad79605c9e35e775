"""The driver of one fault run: enqueue the plan, wait for the moments a fault needs,
then end the run (every job terminal, workers drained) and analyse it.

Waiting has one shape, :meth:`Run.until`: a condition polled every 0.1 s with a
timeout, failing with what it waited for and the log tails of crashed workers. The end
of a run (:meth:`Run.finish`) stops waiting early, without failing by itself, when
nothing progresses (no ledger line, no job changing state) for
:attr:`~tests.faults.plans.Settings.stall` seconds: the analysis then reports every job
left behind, which is how a stranded job shows up.

What this module is not: the rules (``tests.faults.analysis``) or the faults themselves
(``tests.faults.fleet``, ``tests.faults.pgproxy``); the tests decide which fault to
inject when.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from slotfleet.models import TERMINAL_STATES, JobId, JobState, QueuedJob
from slotfleet.store import Store
from tests.faults.analysis import Outcome, Problem, Report, analyse
from tests.faults.faultlog import KILLS, Fault, FaultKind, FaultLog
from tests.faults.fleet import Fleet, WorkerProc
from tests.faults.ledger import Execution, executions, read_events
from tests.faults.plans import KINDS, QUEUES, Planned, Settings

T = TypeVar("T")

#: Every report of the session, for the closing figures (``tests/faults/conftest.py``).
REPORTS: list[Report] = []


@dataclass
class Run:
    name: str
    settings: Settings
    store: Store
    fleet: Fleet
    faults: FaultLog
    ledger: Path
    planned: list[Planned]
    sqlite_path: Path | None = None
    ids: dict[str, JobId] = field(default_factory=dict)

    # ------------------------------------------------------------------ reading

    def executions(self) -> list[Execution]:
        return executions(read_events(self.ledger))

    def held_by(self, proc: WorkerProc) -> list[Execution]:
        """Executions running in ``proc`` or its children (no end in the ledger yet)."""
        return [e for e in self.executions() if e.end is None and proc.pid in (e.pid, e.ppid)]

    async def jobs(self) -> list[QueuedJob]:
        found: list[QueuedJob] = []
        for queue in QUEUES.values():
            after: JobId | None = None
            while True:
                page = await self.store.list_jobs(queue=queue, limit=500, after_id=after)
                if not page:
                    break
                found += page
                after = page[-1].id
        return found

    # ------------------------------------------------------------------ waiting

    async def until(self, what: str, check: Callable[[], Awaitable[T | None]], timeout: float) -> T:
        """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            result = await check()
            if result:
                return result
            crashed = self.fleet.crashed()
            assert not crashed, f"while waiting for {what}: " + self._crash_text(crashed)
            assert time.monotonic() < deadline, f"timed out after {timeout:g}s waiting for {what}"
            await asyncio.sleep(0.1)

    @staticmethod
    def _crash_text(procs: list[WorkerProc]) -> str:
        return "\n".join(
            f"worker {p.worker_id} (pid {p.pid}) exited {p.popen.returncode} unasked:\n{p.tail()}"
            for p in procs
        )

    async def enqueue(self) -> None:
        queued = await self.store.enqueue([p.job for p in self.planned])
        for planned, job in zip(self.planned, queued, strict=True):
            self.ids[planned.key] = job.id
            if planned.expect.behaviour.startswith("poison"):
                at = time.time()
                self.faults.add(
                    Fault(FaultKind.POISON, at, at, jobs=(job.id,), note=planned.expect.behaviour)
                )

    async def ready(self, *procs: WorkerProc) -> None:
        """Wait until each of ``procs`` (this very process, by pid) has heartbeated."""

        async def check() -> bool:
            seen = {(w.worker_id, w.pid) for w in await self.store.workers()}
            return all((p.worker_id, p.pid) in seen for p in procs)

        await self.until("the workers' first heartbeats", check, 30 + self.settings.margin)

    async def start(self, count: int) -> list[WorkerProc]:
        procs = [self.fleet.start() for _ in range(count)]
        await self.ready(*procs)
        return procs

    async def holding(self, proc: WorkerProc, behaviour: str = "hold") -> list[Execution]:
        """Wait until ``proc`` runs a ``behaviour`` job on every executor; return them."""

        async def check() -> list[Execution] | None:
            held = [e for e in self.held_by(proc) if e.behaviour == behaviour]
            return held if {e.kind for e in held} >= set(KINDS) else None

        what = f"{proc.worker_id} to run a {behaviour} job on every executor"
        return await self.until(what, check, 30 + self.settings.margin)

    async def cancel_lingerers(self) -> None:
        """Wait for each ``linger`` job to start, then ask for its cancellation."""
        for planned in self.planned:
            if planned.expect.behaviour != "linger":
                continue
            key = planned.key

            async def started(key: str = key) -> bool:
                return any(e.key == key for e in self.executions())

            await self.until(f"{key} to start", started, 30 + self.settings.margin)
            asked = time.time()
            await self.store.request_cancel(self.ids[key])
            self.faults.add(Fault(FaultKind.CANCEL, asked, time.time(), jobs=(self.ids[key],)))

    async def pause_past_lease(
        self, proc: WorkerProc, taken: Callable[[], Awaitable[bool]]
    ) -> Fault:
        """Stop ``proc``'s process group until its lease has passed and ``taken`` says its
        jobs were taken from it (or the recovery bound is over), then continue it.

        On SQLite a stopped process inside a write transaction would stall every worker
        (another fault, not this one): such a pause is undone at once and tried again."""
        while True:
            stopped = self.fleet.pause(proc)
            if await asyncio.to_thread(self._store_writable):
                break
            self.fleet.resume(proc, stopped)
            await asyncio.sleep(0.05)
        bound = self.settings.bounds().recover + self.settings.margin
        while time.time() - stopped <= bound:
            if time.time() - stopped > self.settings.lease + 1.0 and await taken():
                break
            await asyncio.sleep(0.1)
        return self.fleet.resume(proc, stopped)

    def started_again(self, victims: list[Execution]) -> Callable[[], Awaitable[bool]]:
        """Whether every victim has a later execution (another worker took it)."""
        first = {e.key: e.execution for e in victims}

        async def check() -> bool:
            again = {
                e.key for e in self.executions() if first.get(e.key, e.execution) != e.execution
            }
            return again == set(first)

        return check

    def recovered(self, victims: list[Execution]) -> Callable[[], Awaitable[bool]]:
        """Whether the store put every victim back in the queue (nobody runs it yet)."""
        ids = [self.ids[e.key] for e in victims]

        async def check() -> bool:
            rows = [await self.store.get(i) for i in ids]
            return all(r is not None and r.state is JobState.RETRYING for r in rows)

        return check

    def _store_writable(self) -> bool:
        if self.sqlite_path is None:
            return True
        conn = sqlite3.connect(self.sqlite_path, timeout=0.5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            conn.close()

    # ------------------------------------------------------------------ the end

    async def finish(self) -> Report:
        """Wait for every job to end (or for progress to stop), drain the workers,
        analyse the run, print its figures and return the report."""
        extra = await self._wait_terminal()
        await self._wait_ledger_quiet()
        bad = await asyncio.to_thread(self.fleet.stop_all, self.settings.drain + 15)
        extra += [
            Problem(
                "",
                f"worker {p.worker_id} (pid {p.pid}) exited {p.popen.returncode} "
                f"after SIGTERM:\n{p.tail()}",
            )
            for p in bad
        ]
        events = read_events(self.ledger)
        report = analyse(
            self.name,
            events=events,
            executions=executions(events),
            outcomes=[outcome(job) for job in await self.jobs()],
            expects=[p.expect for p in self.planned],
            faults=self.faults,
            workers=self.fleet.pids,
            bounds=self.settings.bounds(),
        )
        report.problems[:0] = extra
        self.faults.dump(self.ledger.with_name("faults.jsonl"))
        REPORTS.append(report)
        print(report.summary())
        return report

    async def _wait_terminal(self) -> list[Problem]:
        deadline = time.monotonic() + self.settings.deadline
        last: tuple[int, tuple[str, ...]] | None = None
        changed = time.monotonic()
        reported: set[int] = set()
        problems: list[Problem] = []
        while True:
            jobs = await self.jobs()
            for proc in self.fleet.crashed():
                if proc.pid not in reported:
                    reported.add(proc.pid)
                    problems.append(Problem("", self._crash_text([proc])))
            if all(j.state in TERMINAL_STATES for j in jobs):
                return problems
            progress = (self.ledger.stat().st_size, tuple(j.state.value for j in jobs))
            if progress != last:
                last, changed = progress, time.monotonic()
            now = time.monotonic()
            if now - changed > self.settings.stall or now > deadline:
                left = sum(j.state not in TERMINAL_STATES for j in jobs)
                print(f"{self.name}: stopped waiting with {left} jobs not terminal")
                return problems
            await asyncio.sleep(0.2)

    async def _wait_ledger_quiet(self) -> None:
        """Give executions still running (a body that ignored its interrupt) a bounded
        moment to end before the workers are stopped."""
        killed = {f.pid for f in self.faults.of(*KILLS)}
        deadline = time.monotonic() + self.settings.stall
        while time.monotonic() < deadline:
            open_ = [e for e in self.executions() if e.end is None]
            if all(e.pid in killed or e.ppid in killed for e in open_):
                return
            await asyncio.sleep(0.2)


def outcome(job: QueuedJob) -> Outcome:
    result = job.result if isinstance(job.result, dict) else {}
    execution = result.get("execution")
    return Outcome(
        key=str(job.kwargs.get("key", f"id-{job.id}")),
        job_id=job.id,
        state=JobState(job.state),
        attempts=job.attempts,
        errors=tuple(e.error for e in job.errors),
        result_execution=execution if isinstance(execution, str) else None,
        lease_owner=job.lease_owner,
    )
