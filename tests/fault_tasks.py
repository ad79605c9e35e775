"""Job bodies for the fault suite that write a side-effect ledger, importable by real
``slotfleet worker`` processes (``--import tests.fault_tasks``) and their process-executor
children as ``tests.fault_tasks:work_async`` (async queues) or ``tests.fault_tasks:work``
(thread and process queues).

Every execution appends JSON lines to the file named by ``$SLOTFLEET_LEDGER``:
``start`` when the body begins, ``tick`` every :data:`TICK_SECONDS` while a long body
runs, and ``end`` when it stops, however it stops (returned, raised, interrupted). Each
line carries the job's ``key`` (from its kwargs), a fresh execution id, the behaviour,
``pid``/``ppid``, the worker id (``$SLOTFLEET_WORKER_ID``) and the wall-clock time. A line
is one ``os.write`` on an ``O_APPEND`` descriptor, so lines from concurrent processes
(workers, process-executor children, orphans) never interleave; being a file, the
ledger also works on SQLite and survives a PostgreSQL restart, unlike a side table.

The ``behaviour`` kwarg picks what the body does (see :data:`BEHAVIOURS`). Long bodies
wait in the way their executor can interrupt: ``asyncio.sleep`` (async, cancelled),
``current_token().wait`` (threads: a cancel, timeout or lost lease sets the token) and
``time.sleep`` (processes: SIGTERM raises inside it). A body that succeeds returns
``{"execution": id, ...}``, so the stored result names the execution that produced it.

What this module is not: it knows nothing of the store, the analysis or the faults; the
tests in ``tests/faults`` read the ledger (``tests.faults.ledger``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from typing import Any

from slotfleet import job

#: Environment variable naming the ledger file.
LEDGER_ENV = "SLOTFLEET_LEDGER"

#: Seconds between ``tick`` lines of a long body: a process that keeps running (an
#: orphaned child, a woken zombie) shows up in the ledger within this long.
TICK_SECONDS = 0.5

#: What a body can do. ``seconds`` is how long the work takes (``hold``: on its first
#: start only, ``again`` on later ones), ``k`` the number of planned failures of ``flaky``.
BEHAVIOURS = (
    "succeed",  # work ``seconds``, return
    "fail",  # raise on every attempt
    "flaky",  # raise on the first ``k`` starts of this job (counted in the ledger), then succeed
    "overrun",  # work ``seconds`` (far past the job's timeout), interruptibly
    "stubborn",  # ignore every interrupt for ``seconds`` (a blocking call), then check
    "linger",  # work ``seconds`` (long): the test cancels it
    "hold",  # work ``seconds`` on the first start, ``again`` afterwards: a fault's victim
    "poison_text",  # raise with a lone surrogate and a NUL in the message
    "poison_str",  # raise an exception whose ``__str__`` raises
)

#: Seconds ``hold`` works on starts after its first, unless told otherwise.
HOLD_AGAIN_SECONDS = 0.1

#: The text of a poison error: a file name that is not UTF-8 (decoded with
#: ``surrogateescape``, as ``os.listdir`` does) and a NUL.
POISON_TEXT = "cannot open 'report-\udcff.csv': embedded NUL '\x00' in path"

_fd: tuple[int, str, int] | None = None  # (pid, path, fd): reopened after a fork


class PlannedFailure(RuntimeError):
    """The failure a ``fail`` or ``flaky`` body was asked for."""


class UnprintableError(RuntimeError):
    """An exception that cannot be turned into text."""

    def __str__(self) -> str:
        raise ValueError("UnprintableError.__str__ refuses")


def ledger_path() -> str:
    return os.environ[LEDGER_ENV]


def _ledger_fd() -> int:
    global _fd
    path, pid = ledger_path(), os.getpid()
    if _fd is None or _fd[0] != pid or _fd[1] != path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fd = (pid, path, fd)
    return _fd[2]


def record(event: str, key: str, execution: str, behaviour: str, **extra: Any) -> None:
    """Append one ledger line (a single ``write`` on an ``O_APPEND`` descriptor)."""
    line = {
        "ev": event,
        "key": key,
        "exec": execution,
        "beh": behaviour,
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "worker": os.environ.get("SLOTFLEET_WORKER_ID", ""),
        "t": time.time(),
        **extra,
    }
    data = (json.dumps(line, separators=(",", ":")) + "\n").encode()
    written = os.write(_ledger_fd(), data)
    if written != len(data):  # a regular file takes the whole line or fails
        raise OSError(f"ledger write was short ({written} of {len(data)} bytes)")


def prior_starts(key: str, execution: str) -> int:
    """Starts of job ``key`` in the ledger other than ``execution``."""
    count = 0
    with open(ledger_path(), encoding="utf-8") as ledger:
        for text in ledger:
            if f'"key":"{key}"' not in text:
                continue
            line = json.loads(text)
            count += line["ev"] == "start" and line["key"] == key and line["exec"] != execution
    return count


def _raise_planned(behaviour: str, key: str, execution: str, k: int) -> None:
    """Raise what ``behaviour`` raises at its start, if anything."""
    if behaviour == "fail":
        raise PlannedFailure("planned failure (every attempt)")
    if behaviour == "flaky":
        before = prior_starts(key, execution)
        if before < k:
            raise PlannedFailure(f"planned failure {before + 1} of {k}")
    if behaviour == "poison_text":
        raise RuntimeError(POISON_TEXT)
    if behaviour == "poison_str":
        raise UnprintableError()


def _work_seconds(behaviour: str, key: str, execution: str, seconds: float, again: float) -> float:
    if behaviour == "hold" and prior_starts(key, execution) > 0:
        return again
    return seconds


def _result(key: str, execution: str) -> dict[str, Any]:
    return {
        "execution": execution,
        "key": key,
        "worker": os.environ.get("SLOTFLEET_WORKER_ID", ""),
        "pid": os.getpid(),
    }


def _end(key: str, execution: str, behaviour: str, how: str, started: float) -> None:
    record("end", key, execution, behaviour, how=how, ran=round(time.time() - started, 3))


@job
async def work_async(
    key: str,
    behaviour: str,
    seconds: float = 0.0,
    k: int = 0,
    kind: str = "async",
    again: float = HOLD_AGAIN_SECONDS,
) -> dict[str, Any]:
    """The body of async queues (see the module docstring)."""
    execution = uuid.uuid4().hex
    started = time.time()
    record("start", key, execution, behaviour, kind=kind)
    try:
        _raise_planned(behaviour, key, execution, k)
        remaining = _work_seconds(behaviour, key, execution, seconds, again)
        while remaining > 0:
            step = min(remaining, TICK_SECONDS)
            await asyncio.sleep(step)
            remaining -= step
            if remaining > 0:
                record("tick", key, execution, behaviour)
    except asyncio.CancelledError:
        _end(key, execution, behaviour, f"interrupted:{_token_reason()}", started)
        raise
    except BaseException as exc:
        _end(key, execution, behaviour, f"raised:{type(exc).__name__}", started)
        raise
    _end(key, execution, behaviour, "ok", started)
    return _result(key, execution)


@job
def work(
    key: str,
    behaviour: str,
    seconds: float = 0.0,
    k: int = 0,
    kind: str = "threads",
    again: float = HOLD_AGAIN_SECONDS,
) -> dict[str, Any]:
    """The body of thread and process queues (see the module docstring)."""
    from slotfleet.worker import JobCancelled, current_token

    execution = uuid.uuid4().hex
    started = time.time()
    record("start", key, execution, behaviour, kind=kind)
    token = current_token()
    try:
        _raise_planned(behaviour, key, execution, k)
        remaining = _work_seconds(behaviour, key, execution, seconds, again)
        if behaviour == "stubborn":
            time.sleep(remaining)  # a blocking call that nothing interrupts (in a thread)
            remaining = 0.0
        while remaining > 0:
            step = min(remaining, TICK_SECONDS)
            if kind == "processes":
                time.sleep(step)  # SIGTERM raises JobCancelled in here
            elif token.wait(step):
                raise JobCancelled(f"job {token.reason}")
            remaining -= step
            if remaining > 0:
                record("tick", key, execution, behaviour)
        token.raise_if_cancelled()
    except JobCancelled:
        _end(key, execution, behaviour, f"interrupted:{token.reason or 'cancelled'}", started)
        raise
    except BaseException as exc:
        _end(key, execution, behaviour, f"raised:{type(exc).__name__}", started)
        raise
    _end(key, execution, behaviour, "ok", started)
    return _result(key, execution)


def _token_reason() -> str:
    from slotfleet.worker import current_token

    return current_token().reason or "cancelled"
