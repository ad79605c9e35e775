"""The values the fault analysis works on: bounds, what a job's behaviour implies, a
job's final row, and the report (problems and excused overlaps).

What this module is not: the rules (``tests.faults.rules``) or the runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from slotfleet.models import JobState


@dataclass(frozen=True)
class Bounds:
    """Seconds the rules allow; all derived from the workers' settings plus a margin."""

    lease: float
    heartbeat: float
    grace: float
    """Longest time an executor takes to stop a job it interrupts (the process
    executor's SIGTERM-to-SIGKILL grace)."""
    cancel_poll: float
    margin: float
    in_flight: float = 1.0

    @property
    def recover(self) -> float:
        return self.lease + self.heartbeat + self.margin

    @property
    def zombie(self) -> float:
        return self.heartbeat + self.grace + self.margin

    @property
    def cancel(self) -> float:
        return self.cancel_poll + self.grace + self.margin


@dataclass(frozen=True)
class Expect:
    """What a job's behaviour implies for its final row."""

    key: str
    behaviour: str
    state: JobState
    attempts: int | None = None
    error: str | None = None
    """Text at least one of the job's errors must contain."""
    max_run: float | None = None
    """Longest an execution may run (an interruptible body past its timeout)."""


@dataclass(frozen=True)
class Outcome:
    """The final row of one job, reduced to what the rules read."""

    key: str
    job_id: int
    state: JobState
    attempts: int
    errors: tuple[str, ...]
    result_execution: str | None
    lease_owner: str | None = None


@dataclass(frozen=True)
class Problem:
    key: str
    """The job concerned (its queue is the part before the first ``-``)."""
    text: str

    @property
    def group(self) -> str:
        return self.key.split("-", 1)[0]


@dataclass(frozen=True)
class Excuse:
    key: str
    reason: str
    """``sigkill`` or ``pause``."""
    detail: str


@dataclass
class Report:
    name: str
    jobs: int = 0
    executions: int = 0
    reruns: int = 0
    """Jobs that ran more than once."""
    faults: dict[str, int] = field(default_factory=dict)
    excused: list[Excuse] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    """The faults (and cancels) of the run, one line each."""

    def summary(self) -> str:
        reasons = Counter(e.reason for e in self.excused)
        lines = [
            f"fault run {self.name}: {self.jobs} jobs, {self.executions} executions, "
            f"{self.reruns} jobs with more than one execution (retries included)",
            "  faults injected: "
            + (", ".join(f"{k} {v}" for k, v in self.faults.items()) or "none"),
            f"  overlapping executions excused: {len(self.excused)}"
            + (
                f" ({', '.join(f'{r} {n}' for r, n in sorted(reasons.items()))})" if reasons else ""
            ),
        ]
        lines += [f"    {line}" for line in self.timeline]
        lines += [f"    excused [{e.reason}] {e.detail}" for e in self.excused[:30]]
        if len(self.excused) > 30:
            lines.append(f"    ... and {len(self.excused) - 30} more excused")
        groups = Counter(p.group for p in self.problems)
        lines.append(
            f"  problems: {len(self.problems)}"
            + (
                f" (by queue: {', '.join(f'{g} {n}' for g, n in sorted(groups.items()))})"
                if groups
                else ""
            )
        )
        lines += [f"    PROBLEM {p.text}" for p in self.problems[:40]]
        return "\n".join(lines)


def unreadable(text: str) -> str | None:
    """Why an error text is not readable, or ``None`` when it is."""
    if not text.strip():
        return "it is empty"
    if "\x00" in text:
        return "it contains a NUL"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it contains a lone surrogate"
    return None
