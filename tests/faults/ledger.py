"""Reading the side-effect ledger written by ``tests.fault_tasks``: lines to events,
events to executions.

An :class:`Execution` is one run of a job body, from its ``start`` line to its ``end``
line; ``end`` is ``None`` when the ledger has no end for it (its process was killed, or
it is still running). ``last_seen`` is the time of its latest line of any kind.

What this module is not: it decides nothing about what is allowed (that is
``tests.faults.analysis``) and never writes the ledger (``tests.fault_tasks`` does).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Event:
    """One ledger line."""

    ev: str
    key: str
    execution: str
    behaviour: str
    pid: int
    ppid: int
    worker: str
    t: float
    how: str = ""
    kind: str = ""


@dataclass(frozen=True)
class Execution:
    """One run of a job body, as the ledger saw it."""

    key: str
    execution: str
    behaviour: str
    kind: str
    worker: str
    pid: int
    ppid: int
    start: float
    end: float | None
    how: str
    last_seen: float

    @property
    def ended(self) -> bool:
        return self.end is not None


def parse_line(text: str) -> Event:
    line = json.loads(text)
    return Event(
        ev=str(line["ev"]),
        key=str(line["key"]),
        execution=str(line["exec"]),
        behaviour=str(line["beh"]),
        pid=int(line["pid"]),
        ppid=int(line["ppid"]),
        worker=str(line["worker"]),
        t=float(line["t"]),
        how=str(line.get("how", "")),
        kind=str(line.get("kind", "")),
    )


def read_events(path: Path) -> list[Event]:
    """Every complete line of the ledger (a missing file is an empty ledger)."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [parse_line(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


def executions(events: list[Event]) -> list[Execution]:
    """Executions in order of start; lines of an execution whose start is missing are
    ignored (a ledger cannot lose a start: it is written before anything else)."""
    by_id: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_id[event.execution].append(event)
    found: list[Execution] = []
    for execution, lines in by_id.items():
        starts = [e for e in lines if e.ev == "start"]
        if not starts:
            continue
        start = starts[0]
        ends = [e for e in lines if e.ev == "end"]
        found.append(
            Execution(
                key=start.key,
                execution=execution,
                behaviour=start.behaviour,
                kind=start.kind,
                worker=start.worker,
                pid=start.pid,
                ppid=start.ppid,
                start=start.t,
                end=ends[0].t if ends else None,
                how=ends[0].how if ends else "",
                last_seen=max(e.t for e in lines),
            )
        )
    return sorted(found, key=lambda x: (x.start, x.execution))


def by_key(found: list[Execution]) -> dict[str, list[Execution]]:
    """Executions per job key, each list in order of start."""
    grouped: dict[str, list[Execution]] = defaultdict(list)
    for execution in found:
        grouped[execution.key].append(execution)
    return dict(grouped)
