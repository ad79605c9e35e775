"""Real ``slotfleet worker`` processes: drain on SIGTERM, recovery after SIGKILL, poison
jobs, burst mode. Each test runs worker subprocesses against one store file (or
PostgreSQL database) and checks the jobs' end states through the store."""

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

from slotfleet.models import Job, JobId, JobState, QueuedJob, RetryPolicy
from slotfleet.store import Store, open_store
from tests.fixtures.postgres import PostgresServer
from tests.fixtures.stores import StoreFactory
from tests.fixtures.tcp_forwarder import TcpForwarder

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QUICK = RetryPolicy(base=0, jitter=0)


class Workers:
    """Starts worker subprocesses (each in its own process group) and cleans up."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": str(REPO), "SLOTFLEET_DSN": self.dsn}
        log = open(self.tmp_path / f"worker-{len(self.procs)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "slotfleet.cli.main", "worker", "--metrics-port", "0", *args],
            cwd=self.tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        index = self.procs.index(proc)
        return (self.tmp_path / f"worker-{index}.log").read_text(errors="replace")

    async def wait(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"worker did not exit:\n{self.log(proc)}"
            await asyncio.sleep(0.05)
        return proc.returncode

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers(store_dsn: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(store_dsn, tmp_path)
    yield w
    w.cleanup()


async def wait_state(
    store: Store, job_id: JobId, states: set[JobState], timeout: float = 30
) -> QueuedJob:
    deadline = time.monotonic() + timeout
    while True:
        job = await store.get(job_id)
        assert job is not None
        if job.state in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.state}: {job.errors}"
        await asyncio.sleep(0.05)


async def wait_file(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("executor", ["async", "threads", "processes"])
async def test_sigterm_lets_running_job_finish_and_exits_zero(
    store_factory: StoreFactory, workers: Workers, tmp_path: Path, executor: str
) -> None:
    store = await store_factory()
    marker = tmp_path / "started"
    func = "tests.tasks:async_sleep" if executor == "async" else "tests.tasks:stubborn_sleep"
    kwargs: dict[str, object] = {"seconds": 1.5}
    if executor == "async":
        kwargs["marker"] = str(marker)
    (job,) = await store.enqueue([Job(func=func, queue="work", kwargs=kwargs)])
    proc = workers.start("--queue", f"work:{executor}:2", "--polling-interval", "0.1")
    if executor == "async":
        await wait_file(marker)
    else:
        await wait_state(store, job.id, {JobState.RUNNING})
    proc.send_signal(signal.SIGTERM)
    assert await workers.wait(proc) == 0, workers.log(proc)
    done = await store.get(job.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED, workers.log(proc)
    assert await store.workers() == []


@pytest.mark.parametrize("executor", ["async", "threads", "processes"])
async def test_sigterm_past_drain_timeout_hands_job_back(
    store_factory: StoreFactory, workers: Workers, tmp_path: Path, executor: str
) -> None:
    store = await store_factory()
    marker = tmp_path / "started"
    func = "tests.tasks:async_sleep" if executor == "async" else "tests.tasks:sleep"
    (job,) = await store.enqueue(
        [Job(func=func, queue="work", kwargs={"seconds": 60, "marker": str(marker)})]
    )
    proc = workers.start(
        "--queue", f"work:{executor}:2", "--polling-interval", "0.1", "--drain-timeout", "0.5"
    )
    await wait_file(marker)
    proc.send_signal(signal.SIGTERM)
    assert await workers.wait(proc) == 0, workers.log(proc)
    back = await store.get(job.id)
    assert back is not None
    assert back.state is JobState.PENDING, workers.log(proc)
    assert back.attempts == 0


async def test_sigkilled_worker_job_is_recovered_by_another(
    store_factory: StoreFactory, workers: Workers, tmp_path: Path
) -> None:
    store = await store_factory()
    marker = tmp_path / "started"
    (job,) = await store.enqueue(
        [
            Job(
                func="tests.tasks:sleep",
                queue="work",
                kwargs={"seconds": 1.0, "marker": str(marker)},
                max_attempts=3,
                retry=QUICK,
            )
        ]
    )
    options = ("--queue", "work:processes:1", "--polling-interval", "0.1", "--lease-seconds", "1")
    first = workers.start(*options)
    await wait_file(marker)
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its children, as a pod kill would
    first.wait()
    marker.unlink()
    second = workers.start(*options)
    done = await wait_state(store, job.id, {JobState.SUCCEEDED, JobState.FAILED})
    assert done.state is JobState.SUCCEEDED, workers.log(second)
    assert done.attempts == 2
    assert done.lease_owner != ""
    assert any("lease" in e.error for e in done.errors)
    second.send_signal(signal.SIGTERM)
    assert await workers.wait(second) == 0


async def test_poison_job_in_process_executor_fails_after_max_attempts(
    store_factory: StoreFactory, workers: Workers
) -> None:
    store = await store_factory()
    poison, ok = await store.enqueue(
        [
            Job(func="tests.tasks:exit_hard", queue="work", max_attempts=3, retry=QUICK),
            Job(func="tests.tasks:add", queue="work", kwargs={"a": 1, "b": 2}),
        ]
    )
    proc = workers.start("--queue", "work:processes:1", "--polling-interval", "0.1", "--burst")
    assert await workers.wait(proc, timeout=60) == 0, workers.log(proc)
    dead = await store.get(poison.id)
    assert dead is not None
    assert dead.state is JobState.FAILED
    assert dead.attempts == 3
    assert [e.error for e in dead.errors] == ["worker process exited with code 1"] * 3
    fine = await store.get(ok.id)
    assert fine is not None
    assert fine.state is JobState.SUCCEEDED
    assert fine.result == 3


async def test_poison_job_that_kills_its_worker_ends_failed(
    store_factory: StoreFactory, workers: Workers
) -> None:
    store = await store_factory()
    (poison,) = await store.enqueue(
        [Job(func="tests.tasks:exit_hard", queue="work", max_attempts=2, retry=QUICK)]
    )
    options = ("--queue", "work:threads:1", "--polling-interval", "0.1", "--lease-seconds", "1")
    for _ in range(4):
        proc = workers.start(*options, "--burst")
        await workers.wait(proc)
        job = await store.get(poison.id)
        assert job is not None
        if job.state is JobState.FAILED:
            break
        await asyncio.sleep(1.1)  # let the dead worker's lease run out
        await store.recover_expired()
    job = await store.get(poison.id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.attempts == 2


async def test_burst_drains_every_queue_and_exits(
    store_factory: StoreFactory, workers: Workers
) -> None:
    store = await store_factory()
    jobs = await store.enqueue(
        [Job(func="tests.tasks:async_add", queue="a", kwargs={"a": i, "b": 1}) for i in range(20)]
        + [Job(func="tests.tasks:add", queue="b", kwargs={"a": i, "b": 2}) for i in range(20)]
    )
    proc = workers.start("--queue", "a", "--queue", "b:threads:4", "--burst", "--max-slots", "3")
    assert await workers.wait(proc, timeout=60) == 0, workers.log(proc)
    for job in jobs:
        done = await store.get(job.id)
        assert done is not None
        assert done.state is JobState.SUCCEEDED
        assert done.result == job.kwargs["a"] + job.kwargs["b"]


@pytest.mark.postgres
async def test_sigterm_with_the_database_gone_still_exits_inside_the_grace_period(
    postgres_server: PostgresServer, postgres_dsn: str, tmp_path: Path
) -> None:
    """The pod's grace period is the drain timeout + 10 s. With PostgreSQL unreachable
    every store call of a stopping worker would wait out its connect timeout (10 s each,
    about 35 s in all before they were bounded); the worker must exit 0 in time, and the
    job it could not hand back comes back when its lease expires."""
    forwarder = TcpForwarder(postgres_server.port)
    forwarder.start()
    store = open_store(postgres_dsn)
    await store.open()
    direct = f":{postgres_server.port}/"
    workers = Workers(postgres_dsn.replace(direct, f":{forwarder.port}/"), tmp_path)
    try:
        marker = tmp_path / "started"
        (job,) = await store.enqueue(
            [
                Job(
                    func="tests.tasks:async_sleep",
                    queue="work",
                    kwargs={"seconds": 60, "marker": str(marker)},
                    max_attempts=3,
                )
            ]
        )
        drain = 1.0
        proc = workers.start(
            "--queue", "work:async:2", "--polling-interval", "0.2", "--lease-seconds", "3",
            "--drain-timeout", str(drain),
        )  # fmt: skip
        await wait_file(marker)
        forwarder.cut()
        await asyncio.sleep(1.5)  # fetches and heartbeats now wait for connections
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await workers.wait(proc, timeout=60) == 0, workers.log(proc)
        took = time.monotonic() - sent
        print(f"stopped {took:.1f}s after SIGTERM with the database unreachable")
        assert took < drain + 10, f"took {took:.1f}s, past the grace period\n{workers.log(proc)}"
        await asyncio.sleep(3.5)  # the lease runs out
        assert job.id in await store.recover_expired()
        back = await store.get(job.id)
        assert back is not None
        assert back.state is JobState.RETRYING, back
    finally:
        workers.cleanup()
        forwarder.stop()
        await store.close()
