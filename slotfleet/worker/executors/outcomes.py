"""How an attempt's end is described: the exceptions executors raise to end an attempt,
the wrappers that keep a job's ``SystemExit`` from stopping the worker, and the one-line
error text (plus traceback) recorded for a failed attempt.

What this module is not: it decides no outcome (``base.Executor.decide`` does) and runs
nothing. It imports only the standard library and the models' errors, so every executor
and the code around them can share it.
"""

from __future__ import annotations

import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from slotfleet.models.errors import SlotfleetError

T = TypeVar("T")


class AttemptError(SlotfleetError):
    """The attempt was ended by the executor; the message alone says why."""


class JobTimeout(AttemptError, TimeoutError):
    """The job ran past its timeout."""


class UnstorableMetaError(AttemptError):
    """What the job left in its instance's ``meta`` cannot be stored."""


class JobReleased(SlotfleetError):
    """The job was handed back to the queue unfinished (the worker is stopping)."""


class RemoteJobError(SlotfleetError):
    """An exception raised by a job in a child process, carried back as text."""

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.remote_traceback = remote_traceback


class JobExitError(SlotfleetError):
    """A job's code raised ``SystemExit`` or ``KeyboardInterrupt``; carried as an
    ordinary exception so that it fails the attempt instead of stopping the worker."""

    def __init__(self, exc: BaseException) -> None:
        message = str(exc)
        name = type(exc).__name__
        super().__init__(f"{name}: {message}" if message else name)
        self.type_name = name
        self.job_traceback = "".join(traceback.format_exception(exc))


#: What a job may raise that is not an :class:`Exception` but still only ends its attempt.
JOB_EXITS = (SystemExit, KeyboardInterrupt)


def call_job(func: Callable[..., T], kwargs: dict[str, Any]) -> T:
    """``func(**kwargs)``, with ``SystemExit``/``KeyboardInterrupt`` as :class:`JobExitError`."""
    try:
        return func(**kwargs)
    except JOB_EXITS as exc:
        raise JobExitError(exc) from None


async def await_job(awaitable: Awaitable[T]) -> T:
    """``await awaitable``, with ``SystemExit``/``KeyboardInterrupt`` as
    :class:`JobExitError` (a task raising those would stop the whole event loop)."""
    try:
        return await awaitable
    except JOB_EXITS as exc:
        raise JobExitError(exc) from None


def format_seconds(seconds: float) -> str:
    return f"{seconds:g}s"


def safe_str(exc: BaseException) -> str:
    """``str(exc)``, or a note saying it could not be had: a job's exception is user code,
    and its ``__str__`` may raise."""
    try:
        return str(exc)
    except Exception as inner:
        return f"<message unavailable: its __str__ raised {type(inner).__name__}>"


def describe_error(exc: BaseException) -> tuple[str, str]:
    """``("ExcType: message", traceback)`` for a failed attempt; never raises."""
    if isinstance(exc, RemoteJobError):
        return str(exc), exc.remote_traceback
    if isinstance(exc, JobExitError):
        return str(exc), exc.job_traceback
    if isinstance(exc, AttemptError):
        return str(exc), ""
    message = safe_str(exc)
    error = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    tb = ""
    if exc.__traceback__ is not None:
        try:
            tb = "".join(traceback.format_exception(exc))
        except Exception:  # the message again: keep the frames, which are what matter
            tb = "".join(traceback.format_tb(exc.__traceback__)) + error
    return error, tb
