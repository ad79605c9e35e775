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
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from slotfleet.models import Job, JobId, JobState, QueuedJob, RetryPolicy, StoreUnavailableError
from slotfleet.store import Store, open_store
from slotfleet.store.postgres import FETCH_POOL_WAIT_SECONDS
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


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g}s"
        await asyncio.sleep(0.05)


LEASE = 2.0
"""Seconds of the leases in the lease tests; the bounds below derive from it."""


async def test_a_worker_restarted_under_the_same_id_does_not_keep_its_predecessors_jobs(
    store_factory: StoreFactory, workers: Workers, tmp_path: Path
) -> None:
    """Regression (issue 9, finding 1): a container restarted in its pod keeps its pod
    name as worker id; its heartbeat renewed every lease naming that id, so the job its
    predecessor died holding stayed ``running`` for as long as the new process lived."""
    store = await store_factory()
    (job,) = await store.enqueue(
        [
            Job(
                func="tests.tasks:async_sleep_logged",
                queue="work",
                kwargs={"seconds": 60, "log_dir": str(tmp_path)},
                max_attempts=3,
                retry=QUICK,
            )
        ]
    )
    options = ("--worker-id", "pod-a", "--queue", "work", "--lease-seconds", str(LEASE))
    first = workers.start(*options, "--polling-interval", "0.1")
    await wait_until(lambda: asyncio.to_thread(lambda: any(tmp_path.glob("*.start"))), "start", 30)
    os.killpg(first.pid, signal.SIGKILL)  # the container dies; the pod (and its name) stays
    first.wait()
    killed_at = time.monotonic()
    workers.start(*options, "--polling-interval", "0.1")

    async def run_again() -> bool:
        current = await store.get(job.id)
        return current is not None and current.attempts == 2

    # Lease, plus a heartbeat (a third of it) for someone to notice, plus start-up.
    await wait_until(run_again, "the dead process's job never came back", 3 * LEASE + 10)
    again = await store.get(job.id)
    assert again is not None
    assert again.errors[0].error == "lease expired (worker pod-a stopped heartbeating)"
    assert time.monotonic() - killed_at >= LEASE * 0.9, "recovered before its lease ran out"


JOB_SECONDS = 15.0
"""Long enough that a zombie left to run would outlast the bound on its stopping."""


async def test_a_paused_worker_stops_its_stale_attempt_when_it_wakes(
    store_factory: StoreFactory, workers: Workers, tmp_path: Path
) -> None:
    """Regression (issue 9): a worker paused past its lease (SIGSTOP; a long GC; a VM
    migration) woke up believing it still held its job and ran it to the end beside the
    attempt that had taken it over. Its next heartbeat now tells it the lease is gone,
    and it stops its copy at once."""
    store = await store_factory()
    (job,) = await store.enqueue(
        [
            Job(
                func="tests.tasks:async_sleep_logged",
                queue="work",
                kwargs={"seconds": JOB_SECONDS, "log_dir": str(tmp_path)},
                max_attempts=3,
                retry=QUICK,
            )
        ]
    )
    options = ("--queue", "work", "--lease-seconds", str(LEASE), "--polling-interval", "0.1")
    zombie = workers.start(*options)
    zombie_start = tmp_path / f"{zombie.pid}.start"
    await wait_until(lambda: asyncio.to_thread(zombie_start.exists), "zombie start", 30)
    zombie.send_signal(signal.SIGSTOP)
    try:
        other = workers.start(*options)
        other_start = tmp_path / f"{other.pid}.start"
        await wait_until(lambda: asyncio.to_thread(other_start.exists), "takeover", 3 * LEASE + 10)
    finally:
        zombie.send_signal(signal.SIGCONT)
    zombie_end = tmp_path / f"{zombie.pid}.end"
    # One heartbeat interval (a third of the lease) and a store round trip, with margin;
    # left alone, the zombie's copy would run on for most of JOB_SECONDS after waking.
    await wait_until(lambda: asyncio.to_thread(zombie_end.exists), "zombie kept running", 5)
    assert not (tmp_path / f"{other.pid}.end").exists(), "the new attempt must run on"
    done = await wait_state(store, job.id, {JobState.SUCCEEDED, JobState.FAILED}, timeout=60)
    assert done.state is JobState.SUCCEEDED
    assert done.result == other.pid, "the result must be the new attempt's"
    assert "lost its lease" in workers.log(zombie)


async def test_process_children_die_with_their_worker(
    store_factory: StoreFactory, workers: Workers, tmp_path: Path
) -> None:
    """Regression (issue 9): a worker killed on its own (the OOM killer picks one process)
    left its process-executor child running the job, which then ran a second time on
    another worker once the lease expired. Children now die with their worker."""
    store = await store_factory()
    pid_file = tmp_path / "child.pid"
    await store.enqueue(
        [
            Job(
                func="tests.tasks:sleep_in_child",
                queue="work",
                kwargs={"seconds": 60, "pid_file": str(pid_file)},
            )
        ]
    )
    proc = workers.start("--queue", "work:processes:1", "--polling-interval", "0.1")
    await wait_file(pid_file)
    child = int(pid_file.read_text())
    os.kill(proc.pid, signal.SIGKILL)  # the worker alone, not its process group
    proc.wait()

    def gone() -> bool:  # exited (a zombie waiting for init to reap it counts as gone)
        try:
            stat = Path(f"/proc/{child}/stat").read_text()
        except FileNotFoundError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    async def child_gone() -> bool:
        return await asyncio.to_thread(gone)

    await wait_until(child_gone, f"child {child} outlived its worker", 10)


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
async def test_every_call_of_a_fetch_round_gives_up_on_a_lost_database_within_the_fetch_wait(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    """A stopping worker waits for its fetch round, so each store call of the round waits
    at most ``FETCH_POOL_WAIT_SECONDS`` for a connection. Regression: handing back the
    claim of a fetch whose reply was lost waited out the whole connect timeout (10 s), and
    a worker told to stop right then took 16.7 s, past its pod's grace period."""
    forwarder = TcpForwarder(postgres_server.port)
    forwarder.start()
    direct = f":{postgres_server.port}/"
    store = open_store(postgres_dsn.replace(direct, f":{forwarder.port}/"))
    await store.open()
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "fetch": lambda: store.fetch("work", "w", 1, 3.0, claim="c"),
        "release_claim": lambda: store.release_claim("w", "c"),
        "take_rate_tokens": lambda: store.take_rate_tokens("work", 1, 10, 1.0),
    }
    try:
        forwarder.cut()
        for name, call in calls.items():
            # The pool may still hold connections the cut killed: each of those fails
            # once on its own, then the call has to wait for a new one.
            for _ in range(4):
                with pytest.raises(StoreUnavailableError) as caught:
                    await call()
                if "no connection within" in str(caught.value):
                    break
            message = str(caught.value)
            assert f"no connection within {FETCH_POOL_WAIT_SECONDS:g}s" in message, (name, message)
    finally:
        forwarder.stop()
        await store.close()


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
