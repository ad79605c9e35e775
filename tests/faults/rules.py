"""The rules of the fault analysis, one function each; ``tests.faults.analysis`` states
them exactly and runs them all. Each returns :class:`~tests.faults.model.Problem` items;
the overlap rule also returns what it excused.

What this module is not: it reads no files and starts nothing.
"""

from __future__ import annotations

import math

from slotfleet.models import JobState
from tests.faults.faultlog import KILLS, Fault, FaultKind, FaultLog
from tests.faults.holders import Holders, at
from tests.faults.ledger import Event, Execution
from tests.faults.model import Bounds, Excuse, Expect, Outcome, Problem, unreadable


def check_outcomes(outcomes: list[Outcome], expects: list[Expect]) -> list[Problem]:
    """Rule 1."""
    problems: list[Problem] = []
    found = {o.key: o for o in outcomes}
    for key in sorted(found.keys() - {x.key for x in expects}):
        problems.append(Problem(key, f"job {key} is in the store but was never planned"))
    for want in expects:
        got = found.get(want.key)
        if got is None:
            problems.append(
                Problem(want.key, f"job {want.key} ({want.behaviour}) is missing from the store")
            )
            continue
        last = got.errors[-1] if got.errors else "no error"
        what = f"job {want.key} (id {got.job_id}, {want.behaviour})"
        if got.state is not want.state:
            held = f", lease owner {got.lease_owner}" if got.state is JobState.RUNNING else ""
            problems.append(
                Problem(
                    want.key,
                    f"{what} ended {got.state.value}, expected {want.state.value} "
                    f"(attempts {got.attempts}{held}; last error: {ascii(last)[:160]})",
                )
            )
        elif want.attempts is not None and got.attempts != want.attempts:
            problems.append(
                Problem(want.key, f"{what}: {got.attempts} attempts, expected {want.attempts}")
            )
        if want.error is not None and not any(want.error in text for text in got.errors):
            problems.append(
                Problem(
                    want.key,
                    f"{what}: no error mentions {want.error!r} (errors: "
                    f"{[ascii(t)[:80] for t in got.errors]})",
                )
            )
        for text in got.errors:
            why = unreadable(text)
            if why is not None:
                problems.append(
                    Problem(want.key, f"{what}: an error is unreadable, {why}: {ascii(text)[:160]}")
                )
    return problems


def check_overlaps(
    runs: dict[str, list[Execution]], holders: Holders, bounds: Bounds
) -> tuple[list[Problem], list[Excuse]]:
    """Rule 2."""
    problems: list[Problem] = []
    excused: list[Excuse] = []
    for key, found in runs.items():
        for i, a in enumerate(found):
            for b in found[i + 1 :]:
                a_end = a.end if a.end is not None else math.inf
                if a_end <= b.start:
                    continue
                pid = holders.of(a)
                second = f"execution {b.execution[:8]} on {b.worker} started at {at(b.start)}"
                killed = holders.killed(pid)
                if killed is not None and killed <= b.start:
                    excused.append(
                        Excuse(
                            key,
                            "sigkill",
                            f"{key}: {holders.name(pid)} was SIGKILLed at {at(killed)}, "
                            f"{b.start - killed:.2f}s before {second}",
                        )
                    )
                    continue
                pause = _zombie_pause(holders, pid, a, b, bounds)
                if pause is not None:
                    limit = pause.end + holders.slack(pause.end, bounds.zombie)
                    ran = "never ended" if a.end is None else f"ended at {at(a.end)}"
                    if a.end is not None and a.end <= limit:
                        excused.append(
                            Excuse(
                                key,
                                "pause",
                                f"{key}: {holders.name(pid)} was paused "
                                f"{at(pause.start)}-{at(pause.end)} "
                                f"({pause.end - pause.start:.1f}s > lease {bounds.lease:g}s) "
                                f"when {second}; its execution {ran}, "
                                f"{a.end - pause.end:.2f}s after SIGCONT",
                            )
                        )
                    else:
                        problems.append(
                            Problem(
                                key,
                                f"job {key}: the zombie {holders.name(pid)} (paused "
                                f"{at(pause.start)}-{at(pause.end)}) kept running execution "
                                f"{a.execution[:8]}, which {ran}, past SIGCONT + "
                                f"{limit - pause.end:.2f}s = {at(limit)}, while {second}",
                            )
                        )
                    continue
                end = "never ended" if a.end is None else f"ended at {at(a.end)}"
                problems.append(
                    Problem(
                        key,
                        f"job {key} ran twice at once on live workers: execution "
                        f"{a.execution[:8]} on {holders.name(pid)} started at {at(a.start)} and "
                        f"{end}, and {second} ({_fate(holders, pid)})",
                    )
                )
    return problems, excused


def _zombie_pause(
    holders: Holders, pid: int | None, a: Execution, b: Execution, bounds: Bounds
) -> Fault | None:
    """The latest pause of ``a``'s holder longer than the lease that began after ``a``
    started and no later than ``b`` did."""
    if pid is None:
        return None
    windows = [
        p
        for p in holders.pauses.get(pid, [])
        if p.end - p.start > bounds.lease and a.start < p.start <= b.start
    ]
    return max(windows, key=lambda p: p.start) if windows else None


def _fate(holders: Holders, pid: int | None) -> str:
    killed = holders.killed(pid)
    pauses = holders.pauses.get(pid, []) if pid is not None else []
    parts = [f"killed at {at(killed)}"] if killed is not None else []
    parts += [f"paused {at(p.start)}-{at(p.end)}" for p in pauses]
    return "its holder was " + ", ".join(parts) if parts else "its holder was never faulted"


def check_zombies(
    runs: dict[str, list[Execution]], holders: Holders, bounds: Bounds
) -> list[Problem]:
    """Rule 2, second half: a run of a holder paused longer than the lease whose job
    started again after the pause began ends by SIGCONT plus the zombie bound, even when
    the new execution only started after it ended (an overlap is rule 2 proper)."""
    problems: list[Problem] = []
    for key, found in runs.items():
        for a in found:
            pid = holders.of(a)
            windows = holders.pauses.get(pid, []) if pid is not None else []
            for pause in windows:
                limit = pause.end + holders.slack(pause.end, bounds.zombie)
                if pause.end - pause.start <= bounds.lease or not a.start < pause.start:
                    continue
                if a.end is not None and a.end <= limit:
                    continue
                later = [b for b in found if b is not a and b.start >= pause.start]
                a_end = a.end if a.end is not None else math.inf
                if later and all(b.start >= a_end for b in later):
                    ran = "never ended" if a.end is None else f"ended at {at(a.end)}"
                    problems.append(
                        Problem(
                            key,
                            f"job {key}: the zombie {holders.name(pid)} (paused "
                            f"{at(pause.start)}-{at(pause.end)}) kept running its stale "
                            f"execution {a.execution[:8]}, which {ran}, past SIGCONT + "
                            f"{limit - pause.end:.2f}s, although the job was started again "
                            f"at {at(later[0].start)}",
                        )
                    )
    return problems


def check_after_kill(events: list[Event], holders: Holders, bounds: Bounds) -> list[Problem]:
    """Rule 3."""
    problems: list[Problem] = []
    others = set(holders.workers)
    for pid, killed in holders.kills.items():
        mine = holders.children.get(pid, set())
        late = [
            e
            for e in events
            if e.t > killed + bounds.in_flight
            and (e.pid == pid or (e.pid in mine and e.ppid not in others - {pid}))
        ]
        for pid_late in sorted({e.pid for e in late}):
            lines = [e for e in late if e.pid == pid_late]
            last = max(lines, key=lambda e: e.t)
            role = "itself" if pid_late == pid else f"its child pid {pid_late}"
            problems.append(
                Problem(
                    last.key,
                    f"{holders.name(pid)} was SIGKILLed at {at(killed)} but {role} kept "
                    f"running job {last.key}: {len(lines)} ledger lines after the kill, the "
                    f"last ({last.ev}{' ' + last.how if last.how else ''}) "
                    f"{last.t - killed:.2f}s after it (allowed {bounds.in_flight:g}s)",
                )
            )
    return problems


def check_recovery(
    runs: dict[str, list[Execution]],
    outcomes: list[Outcome],
    faults: FaultLog,
    holders: Holders,
    bounds: Bounds,
) -> list[Problem]:
    """Rule 4."""
    problems: list[Problem] = []
    by_id = {o.job_id: o for o in outcomes}
    by_name = {o.key: o for o in outcomes}
    gone = (JobState.FAILED, JobState.CANCELLED)

    def expect_restart(key: str, after: float, at: float, why: str) -> None:
        later = [e for e in runs.get(key, []) if e.start > after]
        outcome = by_name.get(key)
        if not later:
            if outcome is not None and outcome.state in gone:
                return
            state = outcome.state.value if outcome is not None else "missing"
            problems.append(Problem(key, f"job {key} ({why}) never ran again; it ended {state}"))
        elif later[0].start - at > (bound := holders.slack(at, bounds.recover)):
            problems.append(
                Problem(
                    key,
                    f"job {key} ({why}) ran again {later[0].start - at:.2f}s after the fault "
                    f"(bound: lease + heartbeat + margin = {bound:.2f}s)",
                )
            )

    for fault in faults.of(*KILLS):
        held = {
            e.key: e
            for found in runs.values()
            for e in found
            if holders.of(e) == fault.pid
            and e.start < fault.start
            and (e.end is None or e.end > fault.start)
        }
        for key, e in sorted(held.items()):
            what = "SIGKILLed" if fault.kind is FaultKind.SIGKILL else "SIGKILLed and restarted"
            why = f"held by {holders.name(fault.pid)}, {what} at {at(fault.start)}"
            expect_restart(key, e.start, fault.start, why)
    for fault in faults.of(FaultKind.DROP_REPLY):
        for job_id in fault.jobs:
            outcome = by_id.get(job_id)
            if outcome is None:
                problems.append(
                    Problem(str(job_id), f"job id {job_id}, claimed by a dropped reply, is unknown")
                )
                continue
            why = f"claimed by {fault.worker} in a fetch whose reply was dropped at {at(fault.end)}"
            expect_restart(outcome.key, fault.start, fault.end, why)
    return problems


def check_cancels(
    runs: dict[str, list[Execution]],
    outcomes: list[Outcome],
    faults: FaultLog,
    holders: Holders,
    bounds: Bounds,
) -> list[Problem]:
    """Rule 5."""
    problems: list[Problem] = []
    by_id = {o.job_id: o.key for o in outcomes}
    for fault in faults.of(FaultKind.CANCEL):
        key = by_id.get(fault.jobs[0], "")
        asked = fault.start
        for e in runs.get(key, []):
            if e.start >= asked:
                problems.append(
                    Problem(key, f"job {key} started at {at(e.start)}, after its cancel request")
                )
                continue
            if e.end is not None and e.end <= asked:
                continue
            pid = holders.of(e)
            bound = holders.slack(asked, bounds.cancel)
            if holders.faulted_between(pid, asked, asked + bound):
                continue
            if e.end is None or e.end - asked > bound:
                took = "never stopped" if e.end is None else f"stopped {e.end - asked:.2f}s later"
                problems.append(
                    Problem(
                        key,
                        f"job {key} was asked to cancel at {at(asked)} while running on "
                        f"{holders.name(pid)} and {took} (bound {bound:.2f}s)",
                    )
                )
    return problems


def check_run_lengths(
    runs: dict[str, list[Execution]], expects: list[Expect], holders: Holders
) -> list[Problem]:
    """Rule 6."""
    problems: list[Problem] = []
    limits = {x.key: x.max_run for x in expects}
    for key, found in runs.items():
        for e in found:
            pid = holders.of(e)
            if pid is None:
                problems.append(
                    Problem(
                        key,
                        f"job {key}: execution {e.execution[:8]} ran in pid {e.pid}, "
                        "which is no worker and no worker's child",
                    )
                )
                continue
            end = e.end if e.end is not None else math.inf
            if holders.faulted_between(pid, e.start, end):
                continue
            if e.end is None:
                problems.append(
                    Problem(
                        key,
                        f"job {key}: execution {e.execution[:8]} on {holders.name(pid)} started at "
                        f"{at(e.start)} and never ended (last seen {at(e.last_seen)}), yet its "
                        "holder was never killed",
                    )
                )
                continue
            limit = limits.get(key)
            if limit is not None and e.end - e.start > limit:
                problems.append(
                    Problem(
                        key,
                        f"job {key}: execution {e.execution[:8]} on {holders.name(pid)} ran "
                        f"{e.end - e.start:.2f}s past a timeout (allowed {limit:.2f}s)",
                    )
                )
    return problems


def check_results(runs: dict[str, list[Execution]], outcomes: list[Outcome]) -> list[Problem]:
    """Rule 7."""
    problems: list[Problem] = []
    for o in outcomes:
        if o.state is not JobState.SUCCEEDED:
            continue
        found = runs.get(o.key, [])
        named = [e for e in found if e.execution == o.result_execution]
        if not named:
            problems.append(
                Problem(
                    o.key,
                    f"job {o.key} succeeded with a result naming execution "
                    f"{o.result_execution!r}, which the ledger does not have",
                )
            )
            continue
        if named[0].how != "ok":
            problems.append(
                Problem(
                    o.key, f"job {o.key}: its result names an execution that ended {named[0].how}"
                )
            )
        last = found[-1]
        if last.execution != o.result_execution:
            problems.append(
                Problem(
                    o.key,
                    f"job {o.key}: the completion of execution {named[0].execution[:8]} "
                    f"(on {named[0].worker}, started {at(named[0].start)}) landed although "
                    f"execution {last.execution[:8]} (on {last.worker}, started "
                    f"{at(last.start)}) was the job's latest attempt",
                )
            )
    return problems
