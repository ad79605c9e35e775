"""Who held an execution and what the fault log did to that process; times and faults
as one line each. Shared by the rules (``tests.faults.rules``).

What this module is not: a rule; it judges nothing.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterable

from tests.faults.faultlog import KILLS, Fault, FaultKind, FaultLog
from tests.faults.ledger import Event, Execution


def at(t: float) -> str:
    """Wall-clock time of day, to the hundredth (as the worker logs show it)."""
    seconds, hundredths = divmod(round(t * 100), 100)
    return time.strftime("%H:%M:%S", time.localtime(seconds)) + f".{hundredths:02d}"


def describe(fault: Fault) -> str:
    """One line for the fault log's entry."""
    who = f" {fault.worker}" if fault.worker else ""
    who += f" (pid {fault.pid})" if fault.pid else ""
    span = at(fault.start)
    if fault.end - fault.start >= 0.005:
        span += f"-{at(fault.end)} ({fault.end - fault.start:.2f}s)"
    jobs = f" jobs {list(fault.jobs)}" if fault.jobs else ""
    note = f" {fault.note}" if fault.note else ""
    return f"{fault.kind.value}{who} at {span}{jobs}{note}"


class Holders:
    """Which worker process held an execution, and what the fault log did to it."""

    def __init__(self, workers: dict[int, str], faults: FaultLog, events: Iterable[Event]):
        self.workers = workers
        self.kills: dict[int, float] = {}
        for fault in faults.of(*KILLS):
            self.kills[fault.pid] = min(fault.start, self.kills.get(fault.pid, math.inf))
        self.pauses: dict[int, list[Fault]] = defaultdict(list)
        for fault in faults.of(FaultKind.PAUSE):
            self.pauses[fault.pid].append(fault)
        self.outages = faults.of(FaultKind.DB_RESTART)
        self.children: dict[int, set[int]] = defaultdict(set)
        for event in events:
            if event.pid not in workers and event.ppid in workers:
                self.children[event.ppid].add(event.pid)

    def slack(self, at: float, bound: float) -> float:
        """``bound`` plus the length of every database outage overlapping
        ``[at, at + bound]``: nothing can be recovered or acknowledged while the
        database is down."""
        return bound + sum(
            o.end - o.start for o in self.outages if o.start <= at + bound and o.end >= at
        )

    def of(self, e: Execution) -> int | None:
        if e.pid in self.workers:
            return e.pid
        if e.ppid in self.workers:
            return e.ppid
        return None

    def name(self, pid: int | None) -> str:
        return "an unknown process" if pid is None else f"{self.workers[pid]} (pid {pid})"

    def killed(self, pid: int | None) -> float | None:
        return None if pid is None else self.kills.get(pid)

    def faulted_between(self, pid: int | None, start: float, end: float) -> bool:
        """Whether ``pid`` was killed, or paused, at some time in [start, end]."""
        killed = self.killed(pid)
        if killed is not None and killed <= end:
            return True
        windows = self.pauses.get(pid, []) if pid is not None else []
        return any(p.start <= end and p.end >= start for p in windows)
