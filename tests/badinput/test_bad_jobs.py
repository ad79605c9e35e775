"""Jobs that cannot run properly, on a real ``slotfleet worker`` process of each executor
kind and both stores: a function whose module is missing or raises on import, a missing
function, wrong kwargs, results that are not JSON (or too big, too deep, circular), and
a job calling ``sys.exit``. Each must end ``failed`` with one readable line; the worker
must keep serving (a good job queued alongside, and one queued afterwards, succeed) and
still drain with exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slotfleet.models import Job, JobState, QueuedJob
from slotfleet.store import Store
from tests.fixtures.stores import StoreFactory

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TASKS = "tests.badinput.bad_tasks"

#: name -> (function, kwargs, words the error must contain); ``{a}`` is ``async_`` for
#: the async executor and empty otherwise.
Cases = dict[str, tuple[str, dict[str, object], str]]
BAD_JOBS: Cases = {
    "missing module": ("tests.no_such_module:run", {}, "no module named"),
    "missing function": ("tests.tasks:no_such_function", {}, "has no attribute"),
    "module raises on import": ("tests.broken_tasks:anything", {}, "refuses to be imported"),
    "wrong kwargs": (TASKS + ":{a}ok", {"unexpected": 1}, "unexpected"),
    "opaque result": (TASKS + ":{a}bad_result", {"kind": "opaque"}, "JSON"),
    "nan result": (TASKS + ":{a}bad_result", {"kind": "nan"}, "JSON"),
    "bytes result": (TASKS + ":{a}bad_result", {"kind": "bytes"}, "JSON"),
    "circular result": (TASKS + ":{a}bad_result", {"kind": "circular"}, "JSON"),
    "too deep result": (TASKS + ":{a}bad_result", {"kind": "deep"}, "result"),
    "lone surrogate result": (TASKS + ":{a}bad_result", {"kind": "surrogate"}, "surrogate"),
    "NUL in result": (TASKS + ":{a}bad_result", {"kind": "nul"}, "NUL"),
    "huge result": (TASKS + ":{a}bad_result", {"kind": "huge"}, "limit"),
}


class Worker:
    def __init__(self, dsn: str, tmp_path: Path, executor: str) -> None:
        self.log = tmp_path / "worker.log"
        env = {**os.environ, "PYTHONPATH": str(REPO), "SLOTFLEET_DSN": dsn}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "slotfleet.cli.main", "worker",
                    "--queue", f"bad:{executor}:4", "--polling-interval", "0.1",
                    "--metrics-port", "0", "--log-level", "WARNING",
                    "--drain-timeout", "2", "--lease-seconds", "3",
                ],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture(params=["async", "threads", "processes"])
def executor(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def worker(store_dsn: str, tmp_path: Path, executor: str) -> Iterator[Worker]:
    w = Worker(store_dsn, tmp_path, executor)
    yield w
    w.kill()


def good(executor: str) -> Job:
    prefix = "async_" if executor == "async" else ""
    return Job(func=f"{TASKS}:{prefix}ok", queue="bad")


async def settle(store: Store, ids: list[QueuedJob], worker: Worker) -> list[QueuedJob]:
    deadline = time.monotonic() + 60
    while True:
        found = [await store.get(q.id) for q in ids]
        done = [j for j in found if j is not None and j.is_terminal]
        if len(done) == len(ids):
            return done
        assert worker.proc.poll() is None, f"the worker died:\n{worker.tail()}"
        assert time.monotonic() < deadline, [(j.func, j.state) for j in found if j]
        await asyncio.sleep(0.1)


async def test_bad_jobs_fail_readably_and_the_worker_keeps_serving(
    store_factory: StoreFactory, worker: Worker, executor: str
) -> None:
    await check_bad_jobs(await store_factory(), worker, executor, BAD_JOBS)


async def test_job_calling_sys_exit_fails_and_the_worker_keeps_serving(
    store_factory: StoreFactory, worker: Worker, executor: str
) -> None:
    """``sys.exit()`` inside a job is a bug in the job, not a request to stop the worker."""
    exits: Cases = {"job calls sys.exit": (TASKS + ":{a}exits", {"code": 3}, "exit")}
    await check_bad_jobs(await store_factory(), worker, executor, exits)


async def check_bad_jobs(
    store: Store,
    worker: Worker,
    executor: str,
    cases: Cases,
) -> None:
    prefix = "async_" if executor == "async" else ""
    names = list(cases)
    bad = [
        Job(func=func.format(a=prefix), queue="bad", kwargs=kwargs)
        for func, kwargs, _ in cases.values()
    ]
    queued = await store.enqueue([good(executor), *bad, good(executor)])
    done = await settle(store, queued, worker)
    problems = []
    for name, job in zip(["good", *names, "good"], done, strict=True):
        if name == "good":
            if job.state is not JobState.SUCCEEDED:
                problems.append(f"the good job next to the bad ones ended {job.state}")
            continue
        words = cases[name][2]
        error = job.errors[-1].error if job.errors else ""
        if job.state is not JobState.FAILED:
            problems.append(f"{name}: ended {job.state}, not failed ({error!r})")
        elif "\n" in error or not error or len(error) > 500:
            problems.append(f"{name}: error is not one readable line: {error!r}")
        elif words.lower() not in error.lower():
            problems.append(f"{name}: error {error!r} does not mention {words!r}")
    alive = worker.proc.poll() is None
    if alive:
        (after,) = await store.enqueue([good(executor)])
        (after_done,) = await settle(store, [after], worker)
        if after_done.state is not JobState.SUCCEEDED:
            problems.append(f"a good job queued after the bad ones ended {after_done.state}")
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(worker.proc.wait, 30)
        except subprocess.TimeoutExpired:
            code = None
        if code != 0:
            problems.append(f"after SIGTERM the worker exited {code}, not 0")
    else:
        problems.append(f"the worker exited {worker.proc.returncode}")
    assert not problems, "\n".join(problems) + f"\n--- worker log:\n{worker.tail()}"
