"""The child side of the process executor: a loop that runs one job at a time.

A child receives ``(func_path, kwargs_json, any_callable)`` on its pipe, runs the
function (an ``async def`` one with ``asyncio.run``) and answers ``("ok", result_json,
meta)`` or ``("err", type_name, message, traceback, meta)``; ``None`` or a closed pipe
ends it. ``any_callable`` lets it run a function not registered with ``@job`` (the queue's
``functions: any``). The result is checked against the payload limits and encoded here,
once: the parent stores this text. A function with a keyword-only parameter annotated
``QueuedJob`` (see ``instance.py``) makes the child ask for the job's fields first (it
sends ``("instance?",)`` and reads the instance without its kwargs as JSON text), and
then ``meta`` is ``("meta", meta_json)`` (what the job left in ``meta``) or
``("problem", why)`` when that cannot be stored; otherwise ``None``. SIGTERM while a job
runs sets the job's cancel token and raises :class:`JobCancelled` inside the job's code;
while the child is still importing the job's module it only sets the token, and the job
never starts (raising inside an import would leave it half done); between jobs it is
ignored (the parent decides what happens next). SIGINT is ignored: a Ctrl-C in a terminal
reaches the whole process group, and the parent drains.

A child never outlives its worker: on Linux it asks the kernel for SIGKILL when its
parent dies (``PR_SET_PDEATHSIG``). A worker killed on its own (the OOM killer picks one
process) would otherwise leave the child running its job while the store hands the job
to another worker once the lease expires: two executions at once.

What this module is not: it keeps no state between jobs except imported modules, and it
never talks to the store. It imports little, so a fresh child starts quickly.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any

from slotfleet.models.values import check_encoded_payload
from slotfleet.worker.context import CancelToken, JobCancelled, use_token
from slotfleet.worker.executors.functions import encode_result, resolve_function
from slotfleet.worker.executors.instance import instance_params, meta_problem

if TYPE_CHECKING:
    from slotfleet.models.jobs import QueuedJob


class _Current:
    """The job this child has taken: its token, and whether its own code runs yet."""

    token: CancelToken | None = None
    in_code = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    token = _Current.token
    if token is None:
        return
    token.cancel("cancelled")
    if _Current.in_code:
        raise JobCancelled("job stopped by SIGTERM")


def _run(conn: Connection, path: str, kwargs_json: str, any_callable: bool) -> tuple[Any, ...]:
    token = _Current.token = CancelToken()
    instance: QueuedJob | None = None
    try:
        # a SIGTERM while the job's module imports only sets the token ...
        func = resolve_function(path, any_callable=any_callable)
        kwargs = json.loads(kwargs_json)
        names = instance_params(func)
        if names:
            conn.send(("instance?",))
            instance = _instance(conn.recv(), kwargs)
            for name in names:
                kwargs[name] = instance
        _Current.in_code = True
        try:
            token.raise_if_cancelled()  # ... and the job never starts
            with use_token(token):
                result = func(**kwargs)
                if inspect.isawaitable(result):
                    result = asyncio.run(_await(result))
        finally:
            _Current.in_code = False
        encoded = encode_result(result)
        check_encoded_payload(result, encoded, "result")
        return ("ok", encoded, _meta(instance))
    except BaseException as exc:  # the job's SystemExit too: report it, keep serving
        return ("err", type(exc).__name__, *_describe(exc), _meta(instance))
    finally:
        _Current.token = None


def _instance(job_json: str, kwargs: dict[str, Any]) -> QueuedJob:
    """The job's instance as the worker holds it (the store's row, checked there)."""
    from slotfleet.models.jobs import TRUSTED_ROW, QueuedJob

    data = json.loads(job_json)
    data["kwargs"] = dict(kwargs)
    return QueuedJob.model_validate(data, context={TRUSTED_ROW: True})


def _meta(instance: QueuedJob | None) -> tuple[str, str] | None:
    """What goes back about the instance's ``meta`` (see the module docstring)."""
    if instance is None:
        return None
    problem = meta_problem(instance.meta)
    if problem is not None:
        return ("problem", problem)
    return ("meta", json.dumps(instance.meta, ensure_ascii=False))


def _describe(exc: BaseException) -> tuple[str, str]:
    """The message and traceback of a job's exception, even when its ``__str__`` raises
    (the child must answer whatever the job did, or it would die and take no more jobs)."""
    try:
        message = str(exc)
    except Exception as inner:
        message = f"<message unavailable: its __str__ raised {type(inner).__name__}>"
    try:
        tb = "".join(traceback.format_exception(exc))
    except Exception:
        tb = "".join(traceback.format_tb(exc.__traceback__))
    return message, tb


async def _await(awaitable: Any) -> Any:
    return await awaitable


#: ``prctl`` option: the signal this process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere
    nothing). If the parent is already gone, exit now."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # died before the request took effect
        os._exit(1)


def main(conn: Connection, parent_pid: int | None = None) -> None:
    """Serve jobs from ``conn`` until it closes; die with ``parent_pid``."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        reply = _run(conn, *message)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
