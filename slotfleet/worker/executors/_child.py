"""The child side of the process executor: a loop that runs one job at a time.

A child receives ``(func_path, kwargs_json)`` on its pipe, runs the function (an
``async def`` one with ``asyncio.run``) and answers ``("ok", result_json)`` or
``("err", type_name, message, traceback)``; ``None`` or a closed pipe ends it. SIGTERM
while a job runs sets the job's cancel token and raises :class:`JobCancelled` inside the
job's code; between jobs it is ignored (the parent decides what happens next). SIGINT is
ignored: a Ctrl-C in a terminal reaches the whole process group, and the parent drains.

What this module is not: it keeps no state between jobs except imported modules, and it
never talks to the store. It imports little, so a fresh child starts quickly.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import traceback
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

from slotfleet.worker.context import CancelToken, JobCancelled, use_token
from slotfleet.worker.executors.functions import encode_result, resolve_function

_running: list[CancelToken] = []


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _running:
        _running[0].cancel("cancelled")
        raise JobCancelled("job stopped by SIGTERM")


def _run(path: str, kwargs_json: str) -> tuple[Any, ...]:
    token = CancelToken()
    try:
        func = resolve_function(path)
        kwargs = json.loads(kwargs_json)
        _running.append(token)
        try:
            with use_token(token):
                result = func(**kwargs)
                if inspect.isawaitable(result):
                    result = asyncio.run(_await(result))
        finally:
            _running.clear()
        return ("ok", encode_result(result))
    except BaseException as exc:  # the job's SystemExit too: report it, keep serving
        return ("err", type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))


async def _await(awaitable: Any) -> Any:
    return await awaitable


def main(conn: Connection) -> None:
    """Serve jobs from ``conn`` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        reply = _run(*message)
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
