"""Task functions for worker and executor tests, importable as ``tests.tasks:<name>``.

Every one is registered with ``@job`` (workers run nothing else by default) except
``plain_add`` and ``plain_async_add``, which stand for any importable callable.

Child processes of the process executor and worker subprocesses import this module, so
it must stay importable with only the repository root on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from slotfleet import job
from slotfleet.worker.context import current_token


class Opaque:
    """Not JSON-serializable."""


@job
async def async_add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


@job
def add(a: int, b: int) -> int:
    return a + b


@job
async def async_fail(message: str = "boom") -> None:
    raise ValueError(message)


@job
def fail(message: str = "boom") -> None:
    raise ValueError(message)


def _mark(marker: str | None) -> None:
    if marker:
        Path(marker).write_text("started")


@job
async def async_sleep(seconds: float, marker: str | None = None) -> str:
    _mark(marker)
    await asyncio.sleep(seconds)
    return "slept"


@job
async def async_hold(release_file: str, most: float = 240.0) -> str:
    """Runs until ``release_file`` exists (at most ``most`` seconds): a job whose end the
    test decides, once it has seen what it waits for, instead of a length guessed to
    outlast it."""
    release = Path(release_file)
    deadline = time.monotonic() + most
    while time.monotonic() < deadline:
        if await asyncio.to_thread(release.exists):
            return "released"
        await asyncio.sleep(0.1)
    return "timed out"


@job
def sleep(seconds: float, marker: str | None = None) -> str:
    """Sleeps cooperatively: returns early when its cancel token is set."""
    _mark(marker)
    current_token().wait(seconds)
    return "slept"


@job
def stubborn_sleep(seconds: float) -> str:
    """Ignores its cancel token."""
    time.sleep(seconds)
    return "slept"


@job
async def async_opaque() -> Any:
    return Opaque()


@job
def opaque() -> Any:
    return Opaque()


@job
def token_state() -> bool:
    return current_token().cancelled


@job
def exit_hard(code: int = 1) -> None:
    """Kills the process that runs it (a poison job for the process executor)."""
    os._exit(code)


@job
def pid() -> int:
    return os.getpid()


@job
async def async_pid() -> int:
    return os.getpid()


@job
def flaky(marker: str) -> str:
    """Fails on the first attempt, succeeds on the next."""
    path = Path(marker)
    if not path.exists():
        path.write_text("1")
        raise ConnectionError("first attempt fails")
    return "ok"


@job
def stubborn_sleep_then_mark(seconds: float, marker: str) -> str:
    """Ignores its cancel token, then writes ``marker`` as its last act."""
    time.sleep(seconds)
    Path(marker).write_text("returned")
    return "slept"


@job
async def async_sleep_logged(seconds: float, log_dir: str) -> int:
    """Sleeps, leaving ``<pid>.start`` in ``log_dir`` first and ``<pid>.end`` however it
    ends (completion, cancellation); returns the pid of the process that ran it."""
    folder = Path(log_dir)
    (folder / f"{os.getpid()}.start").write_text("started")
    try:
        await asyncio.sleep(seconds)
    finally:
        (folder / f"{os.getpid()}.end").write_text("ended")
    return os.getpid()


@job
def sleep_in_child(seconds: float, pid_file: str) -> str:
    """Writes the pid of the process running it, then sleeps (for process executors)."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


class Unprintable(Exception):
    """An exception whose message cannot be had: ``str()`` raises."""

    def __str__(self) -> str:
        raise RuntimeError("no message for you")


#: An error message no store keeps as it is: a lone surrogate (a non-UTF-8 file name
#: decoded with surrogateescape) and a NUL.
POISON_TEXT = "cannot open b'caf\udce9.txt' \x00 here"


@job
def poison(kind: str = "text") -> None:
    """Raises an error whose text is poison (``kind="text"``) or unprintable."""
    if kind == "unprintable":
        raise Unprintable()
    raise OSError(POISON_TEXT)


@job
async def async_poison(kind: str = "text") -> None:
    poison(kind)


@job
def ignore_sigterm(seconds: float) -> str:
    """Ignores SIGTERM (only meaningful in a process executor's child)."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return "slept"


class _Decorated:
    """Stands in for the app's ``@job`` object (its mark included): the real function is
    ``__wrapped__``."""

    __slotfleet_job__ = True

    def __init__(self, func: Any) -> None:
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the worker must call __wrapped__, not the decorator")


decorated_add = _Decorated(add)
async_decorated_add = _Decorated(async_add)


def plain_add(a: int, b: int) -> int:
    """Not registered with @job: refused unless the queue runs any callable."""
    return a + b


async def plain_async_add(a: int, b: int) -> int:
    """Not registered with @job either (for the async executor)."""
    return a + b


@job
def loaded_modules(prefix: str) -> list[str]:
    """The modules the running worker has loaded whose names start with ``prefix``."""
    import sys

    return sorted(m for m in sys.modules if m.startswith(prefix))


@job
async def async_loaded_modules(prefix: str) -> list[str]:
    """:func:`loaded_modules`, from a coroutine on the worker's event loop."""
    return loaded_modules(prefix)
