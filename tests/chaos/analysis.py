"""What a chaos run proved: pure checks over the final job rows and the executions table.

Definitions used by the checks:

- *execution*: one row in ``executions``, written by the job body when it starts;
- *winning execution*: the one whose worker is named in the job's stored result (the
  result is only written by a completion that held the job's lease, once);
- *succeeded twice*: a job with an execution, other than its winning one, by a worker
  the test did not kill (SIGKILL run) or drain (SIGTERM run). Executions by killed or
  drained workers are expected; any other duplicate is a problem;
- *recovery time*: from the SIGKILL to the ``lease expired (worker W ...)`` error the
  store records when another worker takes the job back;
- *re-run delay*: from the signal to the next execution of a job the signalled worker
  held; *gap*: between two consecutive executions of one job.

What this is not: it starts nothing and reads nothing; the test gathers the data.
"""

from __future__ import annotations

import re
import signal
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from slotfleet.models import JobState, QueuedJob

#: An execution row may be written this long after its worker was killed: the insert
#: was on the wire when the signal landed and the server ran it afterwards.
IN_FLIGHT_SECONDS = 0.5

_LEASE_EXPIRED = re.compile(r"^lease expired \(worker (?P<worker>\S+) ")


@dataclass(frozen=True)
class Execution:
    token: int
    worker: str
    at: datetime


@dataclass(frozen=True)
class Bounds:
    """Seconds allowed for recovery and re-runs."""

    lease: float
    heartbeat: float
    drain: float
    longest_job: float
    margin: float


@dataclass
class ChaosReport:
    mode: str
    signalled: list[str] = field(default_factory=list)
    jobs: int = 0
    executions: int = 0
    signalled_workers: int = 0
    recovered_jobs: int = 0
    jobs_run_more_than_once: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    rerun_seconds: list[float] = field(default_factory=list)
    gap_seconds: list[float] = field(default_factory=list)
    restart_seconds: float = 0.0
    held_by_worker: dict[str, int] = field(default_factory=dict)
    """Jobs each signalled worker held (and that were run again or recovered)."""
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def spread(values: list[float]) -> str:
            if not values:
                return "n/a"
            return (
                f"median {statistics.median(values):.2f}s, max {max(values):.2f}s (n={len(values)})"
            )

        return "\n".join(
            [
                f"chaos ({self.mode}): {self.jobs} jobs, {self.executions} executions",
                f"  workers {'killed' if self.mode == 'SIGKILL' else 'drained'}: "
                f"{self.signalled_workers}",
                f"  recovered (handed back) jobs: {self.recovered_jobs}; "
                f"jobs run more than once: {self.jobs_run_more_than_once}",
                f"  time to recover (signal -> lease expired): {spread(self.recovery_seconds)}",
                f"  signal -> next execution: {spread(self.rerun_seconds)}",
                f"  gap between executions: {spread(self.gap_seconds)}",
                "  jobs held per signalled worker: "
                + ", ".join(f"{w}={self.held_by_worker.get(w, 0)}" for w in self.signalled),
                f"  PostgreSQL restart took {self.restart_seconds:.2f}s",
                f"  problems: {len(self.problems)}",
            ]
        )


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def analyse(
    *,
    mode: signal.Signals,
    expected: int,
    jobs: list[QueuedJob],
    executions: list[Execution],
    signalled: dict[str, datetime],
    restart: tuple[datetime, datetime] | None,
    bounds: Bounds,
) -> ChaosReport:
    """Check the run; ``signalled`` maps each worker the test sent ``mode`` to the time."""
    report = ChaosReport(mode=mode.name, jobs=len(jobs), executions=len(executions))
    report.signalled_workers = len(signalled)
    report.signalled = sorted(signalled)
    holders: dict[str, set[int]] = defaultdict(set)
    problems = report.problems
    restart_extra = 0.0
    if restart is not None:
        report.restart_seconds = restart_extra = _seconds(restart[1], restart[0])

    def slack(at: datetime, bound: float) -> float:
        """``bound`` plus the restart's length when the window overlaps the restart."""
        if restart is None:
            return bound
        overlaps = _seconds(restart[1], at) >= 0 and _seconds(at, restart[0]) <= bound
        return bound + restart_extra if overlaps else bound

    by_token: dict[int, list[Execution]] = defaultdict(list)
    for execution in sorted(executions, key=lambda e: e.at):
        by_token[execution.token].append(execution)

    tokens = [int(job.kwargs["token"]) for job in jobs]
    if len(jobs) != expected:
        problems.append(f"{len(jobs)} jobs in the store, {expected} enqueued")
    if len(set(tokens)) != len(tokens):
        problems.append(f"{len(tokens) - len(set(tokens))} tokens were enqueued twice")
    missing = set(range(expected)) - set(tokens)
    if missing:
        problems.append(f"{len(missing)} jobs lost, e.g. tokens {sorted(missing)[:10]}")

    recover_bound = bounds.lease + bounds.heartbeat + bounds.margin
    if mode is signal.SIGKILL:
        rerun_bound = recover_bound + bounds.margin
    else:
        rerun_bound = bounds.drain + bounds.margin
    for job, token in zip(jobs, tokens, strict=True):
        runs = by_token.get(token, [])
        if job.state is not JobState.SUCCEEDED:
            last = job.errors[-1].error if job.errors else ""
            problems.append(f"job {job.id} ended {job.state} ({last})")
            continue
        if not runs:
            problems.append(f"job {job.id} succeeded without recording an execution")
            continue
        winner = job.result.get("worker") if isinstance(job.result, dict) else None
        winning = [r for r in runs if r.worker == winner]
        if not winning:
            problems.append(f"job {job.id}: result names {winner!r}, who never ran it")
            continue
        losers = list(runs)
        losers.remove(winning[-1])
        if len(runs) > 1:
            report.jobs_run_more_than_once += 1
        if mode is signal.SIGKILL and len(runs) > job.attempts:
            problems.append(f"job {job.id}: {len(runs)} executions but {job.attempts} attempts")
        held_by_signalled = False
        for run in losers:
            at = signalled.get(run.worker)
            if at is None or _seconds(run.at, at) > IN_FLIGHT_SECONDS:
                when = "never" if at is None else f"at {at:%H:%M:%S.%f}"
                problems.append(
                    f"job {job.id} also ran on {run.worker} at {run.at:%H:%M:%S.%f} without "
                    f"that run counting, and the test signalled {run.worker} {when} "
                    "(a job executed twice by live workers)"
                )
                continue
            held_by_signalled = True
            holders[run.worker].add(job.id)
            following = [r for r in runs if r.at > run.at]
            if not following:
                continue
            gap = _seconds(following[0].at, run.at)
            after_signal = _seconds(following[0].at, at)
            report.gap_seconds.append(gap)
            report.rerun_seconds.append(after_signal)
            if after_signal > slack(at, rerun_bound):
                problems.append(
                    f"job {job.id} held by {run.worker} ran again {after_signal:.2f}s after the "
                    f"{mode.name} (bound {slack(at, rerun_bound):.2f}s)"
                )
            if gap > slack(at, rerun_bound + bounds.longest_job):
                problems.append(f"job {job.id}: {gap:.2f}s between executions")
        recovered_from_kill = False
        for error in job.errors:
            match = _LEASE_EXPIRED.match(error.error)
            if match is None:
                continue
            owner = match["worker"]
            at = signalled.get(owner)
            if mode is not signal.SIGKILL or at is None:
                problems.append(
                    f"job {job.id}: the lease of {owner}, which the test did not kill, expired "
                    f"at {error.at:%H:%M:%S.%f} ({error.error})"
                )
                continue
            recovered_from_kill = True
            holders[owner].add(job.id)
            took = _seconds(error.at, at)
            report.recovery_seconds.append(took)
            if took > slack(at, recover_bound):
                problems.append(
                    f"job {job.id} held by {owner} was recovered {took:.2f}s after the kill "
                    f"(bound {slack(at, recover_bound):.2f}s)"
                )
        if held_by_signalled or recovered_from_kill:
            report.recovered_jobs += 1
    report.held_by_worker = {w: len(ids) for w, ids in holders.items()}
    return report
