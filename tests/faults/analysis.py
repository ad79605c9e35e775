"""What a fault run proved: pure rules over the ledger, the final job rows and the fault
log. Each rule returns problems (a job key and a sentence a reader can act on); the
overlap rule also returns the overlaps it excused, each with its reason, so a run can
print them.

The rules, exactly (``Bounds`` holds the numbers; a *holder* is the worker process an
execution ran in: its own pid, or its parent's for a process-executor child):

1. **Outcomes.** Every job is terminal, in the state its behaviour implies, with the
   expected attempt count and an error containing the expected text; every error text
   of every job is readable (not empty, no NUL, no lone surrogate).
2. **No overlap** of two executions ``a`` (started first) and ``b`` of one job: ``a``'s
   end (infinite when the ledger has none) is at most ``b``'s start, unless ``a``'s
   holder was **SIGKILLed** at ``k <= b.start`` (``a`` counts as ending at ``k``), or was
   **paused** from ``p`` to ``c`` with ``c - p > lease``, ``a.start < p <= b.start``, and
   ``a`` ended by ``c + heartbeat + grace + margin`` (the zombie noticed its lost lease).
   Excuse windows come from the fault log's times, never from "was signalled at some
   point". The same bound holds for a paused holder's run whose job started again
   after the pause began, even without an overlap (the new execution waited for it).
3. **Nothing after a kill.** No ledger line from a killed holder, or from a child it
   had, later than the kill plus ``in_flight`` seconds (orphaned children must die).
4. **Recovery.** A job whose execution a kill cut, and a job claimed by a dropped
   fetch reply, starts again within ``lease + heartbeat + margin`` of the fault, unless
   it ended failed or cancelled without another start.
5. **Cancel.** An execution running when its job's cancel was requested at ``r`` ends by
   ``r + cancel_poll + grace + margin`` (unless its holder was killed or paused in that
   window), and no execution of the job starts after ``r``.
6. **Run length.** Every execution ends unless a kill cut it; one whose behaviour has a
   ``max_run`` (an interruptible body past its timeout) ends within it, unless its
   holder was killed or paused while it ran.
7. **Completion on the right attempt.** A succeeded job's result names an execution
   that ended ``ok`` and is the last execution of that job to start.

The bounds of rules 2 (after SIGCONT), 4 and 5 grow by the length of any database
restart overlapping their window: nothing is recovered or acknowledged while the
database is down. Nothing else widens them.

What this module is not: it reads no files and starts nothing; the tests gather the
data (``tests.faults.driver``) and ``tests/unit/test_fault_analysis.py`` shows each
rule flag a violation and accept its legitimately excused case.
"""

from __future__ import annotations

from tests.faults.faultlog import FaultLog
from tests.faults.holders import Holders, describe
from tests.faults.ledger import Event, Execution, by_key
from tests.faults.model import Bounds, Excuse, Expect, Outcome, Problem, Report
from tests.faults.rules import (
    check_after_kill,
    check_cancels,
    check_outcomes,
    check_overlaps,
    check_recovery,
    check_results,
    check_run_lengths,
    check_zombies,
)

__all__ = ["Bounds", "Excuse", "Expect", "Outcome", "Problem", "Report", "analyse"]


def analyse(
    name: str,
    *,
    events: list[Event],
    executions: list[Execution],
    outcomes: list[Outcome],
    expects: list[Expect],
    faults: FaultLog,
    workers: dict[int, str],
    bounds: Bounds,
) -> Report:
    """Run every rule; ``workers`` maps the pid of every worker process started to its id."""
    runs = by_key(executions)
    holders = Holders(workers, faults, events)
    report = Report(
        name,
        jobs=len(outcomes),
        executions=len(executions),
        reruns=sum(len(found) > 1 for found in runs.values()),
        faults=faults.counts(),
        timeline=[describe(f) for f in faults.faults],
    )
    overlap_problems, report.excused = check_overlaps(runs, holders, bounds)
    report.problems += check_outcomes(outcomes, expects)
    report.problems += overlap_problems
    report.problems += check_zombies(runs, holders, bounds)
    report.problems += check_after_kill(events, holders, bounds)
    report.problems += check_recovery(runs, outcomes, faults, holders, bounds)
    report.problems += check_cancels(runs, outcomes, faults, holders, bounds)
    report.problems += check_run_lengths(runs, expects, holders)
    report.problems += check_results(runs, outcomes)
    return report
