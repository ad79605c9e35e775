"""The fault log: every fault a run injected (and every cancel it asked for), with its
wall-clock start and end, in the same clock as the ledger (``time.time()``).

- ``sigkill``: the worker process ``pid`` (only it: its process-executor children are
  left alone, as the OOM killer leaves them) was killed at ``start`` (= ``end``);
- ``restart``: ``pid`` was SIGKILLed at ``start`` and a new process with the same worker
  id started at ``end`` (its pid in ``note``);
- ``sigterm``: the worker was asked to drain at ``start`` (not a fault that excuses
  anything: a drained job is handed back only once its execution has stopped);
- ``pause``: the worker's process group was stopped at ``start`` and continued at
  ``end`` (SIGSTOP/SIGCONT, a frozen container or VM);
- ``drop_reply``: the reply to a claim by ``worker`` that claimed ``jobs`` was swallowed
  and the connection dropped (``start``: claim sent, ``end``: connection dropped);
- ``db_restart``: PostgreSQL was stopped at ``start`` and was back at ``end``;
- ``poison``: job ``jobs[0]`` raises unstorable or unprintable error text (``note``);
- ``cancel``: not a fault, a request: ``request_cancel`` for ``jobs[0]`` at ``start``.

What this module is not: it injects nothing (``tests.faults.fleet`` and
``tests.faults.pgproxy`` do) and judges nothing (``tests.faults.analysis``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path


class FaultKind(StrEnum):
    SIGKILL = "sigkill"
    RESTART = "restart"
    SIGTERM = "sigterm"
    PAUSE = "pause"
    DROP_REPLY = "drop_reply"
    DB_RESTART = "db_restart"
    POISON = "poison"
    CANCEL = "cancel"


#: Kinds that end a worker process.
KILLS = frozenset({FaultKind.SIGKILL, FaultKind.RESTART})


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    start: float
    end: float
    worker: str = ""
    pid: int = 0
    jobs: tuple[int, ...] = ()
    note: str = ""


@dataclass
class FaultLog:
    """Faults in the order they were injected."""

    faults: list[Fault] = field(default_factory=list)

    def add(self, fault: Fault) -> Fault:
        self.faults.append(fault)
        return fault

    def of(self, *kinds: FaultKind) -> list[Fault]:
        return [f for f in self.faults if f.kind in kinds]

    def counts(self) -> dict[str, int]:
        """Faults injected per kind (cancel requests are not faults)."""
        counted = Counter(f.kind.value for f in self.faults if f.kind is not FaultKind.CANCEL)
        return dict(sorted(counted.items()))

    def dump(self, path: Path) -> None:
        """One JSON line per fault, for a post-mortem next to the ledger."""
        with path.open("w", encoding="utf-8") as out:
            for fault in self.faults:
                out.write(json.dumps({**asdict(fault), "kind": fault.kind.value}) + "\n")
