"""The fault suite's analysis rules on synthetic ledgers: each rule flags its violation
and accepts the case a fault legitimately excuses (``tests/faults/analysis.py`` states
the rules). Times are plain seconds; two worker processes, pids 100 and 200."""

from __future__ import annotations

from slotfleet.models import JobState
from tests.faults.analysis import Bounds, Expect, Outcome, analyse
from tests.faults.faultlog import Fault, FaultKind, FaultLog
from tests.faults.holders import Holders
from tests.faults.ledger import Event, Execution, by_key, executions
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

W1, W2 = 100, 200
WORKERS = {W1: "w1", W2: "w2"}
BOUNDS = Bounds(lease=4.0, heartbeat=1.0, grace=2.0, cancel_poll=1.0, margin=1.0)
# recover = 6, zombie = 4, cancel = 4, in_flight = 1


def ran(
    execution: str,
    pid: int,
    start: float,
    end: float | None = None,
    *,
    key: str = "fa-job-0",
    ppid: int = 1,
    how: str = "ok",
    ticks: tuple[float, ...] = (),
) -> list[Event]:
    """The ledger lines of one execution."""
    worker = WORKERS.get(pid) or WORKERS.get(ppid, "")

    def line(ev: str, t: float, how: str = "") -> Event:
        return Event(ev, key, execution, "hold", pid, ppid, worker, t, how, "async")

    lines = [line("start", start), *(line("tick", t) for t in ticks)]
    if end is not None:
        lines.append(line("end", end, how))
    return lines


def faults(*entries: Fault) -> FaultLog:
    return FaultLog(list(entries))


def kill(pid: int, at: float) -> Fault:
    return Fault(FaultKind.SIGKILL, at, at, WORKERS[pid], pid)


def pause(pid: int, stopped: float, continued: float) -> Fault:
    return Fault(FaultKind.PAUSE, stopped, continued, WORKERS[pid], pid)


def overlaps(events: list[Event], log: FaultLog) -> tuple[list[str], list[str]]:
    problems, excused = check_overlaps(
        by_key(executions(events)), Holders(WORKERS, log, events), BOUNDS
    )
    return [p.text for p in problems], [e.reason for e in excused]


def outcome(
    state: JobState = JobState.SUCCEEDED,
    attempts: int = 1,
    errors: tuple[str, ...] = (),
    result: str | None = None,
    key: str = "fa-job-0",
    job_id: int = 1,
) -> Outcome:
    return Outcome(key, job_id, state, attempts, errors, result)


# -- rule 1: outcomes --------------------------------------------------------------


def test_outcomes_flag_a_job_left_running_and_accept_the_expected_state() -> None:
    want = [Expect("fa-job-0", "fail", JobState.FAILED, 2, "planned failure")]
    errors = ("PlannedFailure: planned failure", "lease expired (worker w1)")
    assert check_outcomes([outcome(JobState.FAILED, 2, errors)], want) == []
    (problem,) = check_outcomes([outcome(JobState.RUNNING, 1)], want)[:1]
    assert "ended running, expected failed" in problem.text


def test_outcomes_flag_wrong_attempts_and_a_missing_error() -> None:
    want = [Expect("fa-job-0", "fail", JobState.FAILED, 2, "planned failure")]
    texts = [p.text for p in check_outcomes([outcome(JobState.FAILED, 3, ("boom",))], want)]
    assert any("3 attempts, expected 2" in t for t in texts)
    assert any("no error mentions 'planned failure'" in t for t in texts)


def test_outcomes_flag_unreadable_error_text() -> None:
    want = [Expect("fa-job-0", "poison", JobState.FAILED)]
    for bad, why in (("a\x00b", "NUL"), ("name \udcff", "surrogate"), ("  ", "empty")):
        (problem,) = check_outcomes([outcome(JobState.FAILED, 1, (bad,))], want)
        assert why in problem.text
    assert check_outcomes([outcome(JobState.FAILED, 1, ("name \ufffd",))], want) == []


def test_outcomes_flag_missing_and_unplanned_jobs() -> None:
    texts = [
        p.text
        for p in check_outcomes(
            [outcome(key="fa-x-0")], [Expect("fa-job-0", "s", JobState.SUCCEEDED)]
        )
    ]
    assert any("never planned" in t for t in texts)
    assert any("missing from the store" in t for t in texts)


# -- rule 2: overlaps --------------------------------------------------------------


def test_sequential_executions_are_no_overlap() -> None:
    assert overlaps(ran("a", W1, 0, 5) + ran("b", W2, 5), faults()) == ([], [])


def test_overlap_on_live_workers_is_flagged() -> None:
    problems, excused = overlaps(ran("a", W1, 0, 10) + ran("b", W2, 5, 8), faults())
    assert excused == []
    assert "ran twice at once on live workers" in problems[0]


def test_overlap_is_excused_when_the_holder_was_killed_before_the_second_start() -> None:
    events = ran("a", W1, 0) + ran("b", W2, 8, 9)
    assert overlaps(events, faults(kill(W1, 3))) == ([], ["sigkill"])


def test_a_kill_after_the_second_start_excuses_nothing() -> None:
    """The old chaos analysis excused a duplicate whenever the worker was signalled at
    any later time; a kill excuses only what happens after it."""
    events = ran("a", W1, 0) + ran("b", W2, 5, 9)
    for killed_at in (6.0, 20.0):
        problems, excused = overlaps(events, faults(kill(W1, killed_at)))
        assert excused == []
        assert "ran twice at once" in problems[0]


def test_a_kill_of_another_process_under_the_same_id_excuses_nothing() -> None:
    """A restarted container keeps its worker id; the excuse follows the process."""
    workers = {**WORKERS, 300: "w1"}
    events = ran("a", W1, 0, 10) + ran("b", W2, 5, 9)
    log = faults(Fault(FaultKind.SIGKILL, 3, 3, "w1", 300))
    problems, _ = check_overlaps(by_key(executions(events)), Holders(workers, log, events), BOUNDS)
    assert len(problems) == 1


def test_zombie_overlap_is_excused_when_it_stops_soon_after_sigcont() -> None:
    events = ran("a", W1, 0, 13, how="interrupted:lease") + ran("b", W2, 7, 8)
    assert overlaps(events, faults(pause(W1, 2, 9))) == ([], ["pause"])


def test_zombie_that_keeps_running_after_sigcont_is_flagged() -> None:
    events = ran("a", W1, 0, 20) + ran("b", W2, 7, 8)
    problems, excused = overlaps(events, faults(pause(W1, 2, 9)))
    assert excused == []
    assert "the zombie w1 (pid 100)" in problems[0]
    assert "past SIGCONT + 4.00s" in problems[0]


def test_a_pause_shorter_than_the_lease_excuses_nothing() -> None:
    problems, excused = overlaps(ran("a", W1, 0, 6) + ran("b", W2, 4, 5), faults(pause(W1, 2, 5)))
    assert excused == []
    assert len(problems) == 1


def test_a_pause_that_began_after_the_second_start_excuses_nothing() -> None:
    problems, excused = overlaps(ran("a", W1, 0, 12) + ran("b", W2, 1, 2), faults(pause(W1, 2, 9)))
    assert excused == []
    assert len(problems) == 1


def zombies(events: list[Event], log: FaultLog) -> list[str]:
    found = by_key(executions(events))
    return [p.text for p in check_zombies(found, Holders(WORKERS, log, events), BOUNDS)]


def test_a_zombie_run_must_stop_after_sigcont_even_when_the_new_run_waited_for_it() -> None:
    log = faults(pause(W1, 2, 9))
    (problem,) = zombies(ran("a", W1, 0, 20) + ran("b", W1, 21, 22), log)
    assert "kept running its stale execution a" in problem
    assert zombies(ran("a", W1, 0, 12) + ran("b", W1, 12, 13), log) == []
    assert zombies(ran("a", W1, 0, 20), log) == []  # nobody took its job: its lease held
    # An overlap is rule 2's to report, once.
    assert zombies(ran("a", W1, 0, 20) + ran("b", W2, 7, 8), log) == []


# -- rule 3: nothing after a kill ---------------------------------------------------


def test_an_orphaned_child_that_keeps_running_is_flagged() -> None:
    events = ran("a", 101, 0, 12, ppid=W1, ticks=(2.0, 4.0, 6.0))
    (problem,) = check_after_kill(events, Holders(WORKERS, faults(kill(W1, 3)), events), BOUNDS)
    assert "its child pid 101 kept running job fa-job-0" in problem.text
    assert "9.00s after it" in problem.text


def test_lines_within_the_in_flight_allowance_and_other_workers_children_pass() -> None:
    events = ran("a", 101, 0, 3.5, ppid=W1, how="interrupted:cancelled")
    events += ran("b", 201, 0, 12, ppid=W2, key="fa-job-1", ticks=(6.0,))
    assert check_after_kill(events, Holders(WORKERS, faults(kill(W1, 3)), events), BOUNDS) == []


# -- rule 4: recovery ---------------------------------------------------------------


def recovery(events: list[Event], log: FaultLog, state: JobState) -> list[str]:
    found = by_key(executions(events))
    holders = Holders(WORKERS, log, events)
    problems = check_recovery(found, [outcome(state)], log, holders, BOUNDS)
    return [p.text for p in problems]


def test_a_killed_holders_job_must_start_again_within_the_bound() -> None:
    log = faults(kill(W1, 10))
    assert recovery(ran("a", W1, 0) + ran("b", W2, 14, 15), log, JobState.SUCCEEDED) == []
    (late,) = recovery(ran("a", W1, 0) + ran("b", W2, 20, 21), log, JobState.SUCCEEDED)
    assert "ran again 10.00s after the fault" in late
    (never,) = recovery(ran("a", W1, 0), log, JobState.RUNNING)
    assert "never ran again; it ended running" in never


def test_a_killed_holders_job_that_ended_failed_needs_no_restart() -> None:
    assert recovery(ran("a", W1, 0), faults(kill(W1, 10)), JobState.FAILED) == []


def test_jobs_of_a_dropped_claim_reply_must_start_within_the_bound() -> None:
    drop = Fault(FaultKind.DROP_REPLY, 10, 10.1, "w1", jobs=(1,))
    assert recovery(ran("a", W2, 15, 16), faults(drop), JobState.SUCCEEDED) == []
    (never,) = recovery([], faults(drop), JobState.RUNNING)
    assert "claimed by w1 in a fetch whose reply was dropped" in never


# -- rule 5: cancel -----------------------------------------------------------------


def cancels(events: list[Event], log: FaultLog) -> list[str]:
    holders = Holders(WORKERS, log, events)
    problems = check_cancels(by_key(executions(events)), [outcome()], log, holders, BOUNDS)
    return [p.text for p in problems]


def test_a_cancelled_execution_must_stop_within_the_bound() -> None:
    asked = Fault(FaultKind.CANCEL, 10, 10, jobs=(1,))
    assert cancels(ran("a", W1, 0, 11, how="interrupted:cancelled"), faults(asked)) == []
    (slow,) = cancels(ran("a", W1, 0, 20), faults(asked))
    assert "stopped 10.00s later (bound 4.00s)" in slow
    assert cancels(ran("a", W1, 0, 20), faults(asked, kill(W1, 12))) == []
    (again,) = cancels(ran("a", W1, 0, 11) + ran("b", W2, 12, 13), faults(asked))
    assert "after its cancel request" in again


# -- rule 6: run lengths ------------------------------------------------------------


def lengths(events: list[Event], log: FaultLog, max_run: float | None = None) -> list[str]:
    expects = [Expect("fa-job-0", "overrun", JobState.FAILED, max_run=max_run)]
    problems = check_run_lengths(by_key(executions(events)), expects, Holders(WORKERS, log, events))
    return [p.text for p in problems]


def test_an_execution_must_end_unless_a_kill_cut_it() -> None:
    (problem,) = lengths(ran("a", W1, 0), faults())
    assert "never ended" in problem
    assert lengths(ran("a", W1, 0), faults(kill(W1, 3))) == []


def test_an_interruptible_body_past_its_timeout_must_stop_within_max_run() -> None:
    assert lengths(ran("a", W1, 0, 3), faults(), max_run=4.0) == []
    (problem,) = lengths(ran("a", W1, 0, 10), faults(), max_run=4.0)
    assert "ran 10.00s past a timeout" in problem
    assert lengths(ran("a", W1, 0, 10), faults(pause(W1, 1, 8)), max_run=4.0) == []


def test_an_execution_in_an_unknown_process_is_flagged() -> None:
    (problem,) = lengths(ran("a", 999, 0, 1), faults())
    assert "no worker and no worker's child" in problem


# -- rule 7: the completion lands on the attempt that produced it -------------------


def results(events: list[Event], result: str | None) -> list[str]:
    found = by_key(executions(events))
    return [p.text for p in check_results(found, [outcome(result=result)])]


def test_the_result_must_name_the_latest_execution() -> None:
    events = ran("a", W1, 0, 3, how="interrupted:lease") + ran("b", W2, 2, 4)
    assert results(events, "b") == []
    stale = ran("a", W1, 0, 3) + ran("b", W2, 2, 4)
    (problem,) = results(stale, "a")
    assert "landed although execution b" in problem


def test_a_result_naming_an_unknown_or_interrupted_execution_is_flagged() -> None:
    assert "which the ledger does not have" in results(ran("a", W1, 0, 1), "zzz")[0]
    (problem,) = results(ran("a", W1, 0, 1, how="interrupted:cancelled"), "a")
    assert "ended interrupted:cancelled" in problem


# -- all rules at once ---------------------------------------------------------------


def test_analyse_counts_excuses_and_reports_problems_by_queue() -> None:
    events = ran("a", W1, 0) + ran("b", W2, 8, 9)
    events += ran("c", W2, 0, 1, key="ft-job-0", how="raised:PlannedFailure")
    log = faults(kill(W1, 3))
    report = analyse(
        "synthetic",
        events=events,
        executions=executions(events),
        outcomes=[outcome(result="b"), outcome(JobState.RUNNING, key="ft-job-0", job_id=2)],
        expects=[
            Expect("fa-job-0", "hold", JobState.SUCCEEDED),
            Expect("ft-job-0", "fail", JobState.FAILED),
        ],
        faults=log,
        workers=WORKERS,
        bounds=BOUNDS,
    )
    assert [e.reason for e in report.excused] == ["sigkill"]
    assert [p.group for p in report.problems] == ["ft"]
    assert report.reruns == 1
    assert report.faults == {"sigkill": 1}
    assert "excused [sigkill]" in report.summary()


def test_executions_pair_starts_and_ends_by_execution_id() -> None:
    events = ran("b", W2, 5, 6) + ran("a", W1, 0)
    found = executions(events)
    assert [e.execution for e in found] == ["a", "b"]
    assert isinstance(found[0], Execution)
    assert found[0].end is None
    assert found[1].end == 6


def test_a_database_restart_in_the_window_widens_the_recovery_bound_by_its_length() -> None:
    events = ran("a", W1, 0) + ran("b", W2, 20, 21)
    outage = Fault(FaultKind.DB_RESTART, 12, 17)
    assert recovery(events, faults(kill(W1, 10)), JobState.SUCCEEDED) != []
    assert recovery(events, faults(kill(W1, 10), outage), JobState.SUCCEEDED) == []
    later = Fault(FaultKind.DB_RESTART, 30, 35)
    assert recovery(events, faults(kill(W1, 10), later), JobState.SUCCEEDED) != []
