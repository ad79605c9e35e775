"""A worker chosen for a scale-down (``slotfleet.worker.retiring``), on both stores: it
stops claiming, confirms through its heartbeat only once no claim is in flight (so the
confirmation counts every job it took), and claims again when its mark is lifted.

Real workers and a real store in this process; the worker is told through
``Worker.set_retiring``, the call its Queue source makes for ``status.retiring``. The same
path through real worker pods, their Queue watch and the operator is
``tests/kube/test_retiring.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any, cast

from slotfleet.models import Job, JobState, QueueSettings, WorkerHeartbeat
from slotfleet.models.claimed import ClaimedJob
from slotfleet.store import Store
from slotfleet.worker import Worker
from tests.fixtures.stores import StoreFactory
from tests.fixtures.waiting import until

QUEUE = "shrinking"


class GatedStore:
    """A real store whose fetches can be counted, and held at the door."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.fetches = 0
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def fetch(
        self, queue: str, worker_id: str, limit: int, lease_seconds: float, *, claim: str
    ) -> list[ClaimedJob]:
        self.entered.set()
        await self.gate.wait()
        self.fetches += 1
        return await self._store.fetch(queue, worker_id, limit, lease_seconds, claim=claim)


@contextlib.asynccontextmanager
async def serving(store: Store | GatedStore, worker_id: str) -> AsyncIterator[Worker]:
    settings = QueueSettings(name=QUEUE, concurrency=2, polling_interval=0.1)
    worker = Worker(
        cast(Store, store), [settings], worker_id=worker_id, heartbeat_interval=0.5,
        drain_timeout=5.0,
    )  # fmt: skip
    task = asyncio.create_task(worker.run())
    try:
        await until("the worker to start", lambda: worker.ready or task.done())
        yield worker
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)


async def beat_of(store: Store, worker_id: str) -> WorkerHeartbeat | None:
    return next((w for w in await store.workers() if w.worker_id == worker_id), None)


def sleeper(seconds: float) -> Job:
    return Job(func="tests.tasks:async_sleep", queue=QUEUE, kwargs={"seconds": seconds})


async def test_a_retiring_worker_claims_nothing_and_claims_again_once_unmarked(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    watched = GatedStore(await store_factory())
    async with serving(watched, "retiring") as retiring:
        async with serving(await store_factory(), "witness"):
            retiring.set_retiring("mark-1")

            async def confirmed() -> bool:
                beat = await beat_of(store, "retiring")
                return beat is not None and beat.retiring == "mark-1"

            await until("the retiring worker to confirm in its heartbeat", confirmed)
            fetches = watched.fetches
            jobs = await store.enqueue([sleeper(0.05) for _ in range(6)])
            done = [await until("a job to end", partial(_ended, store, j.id)) for j in jobs]
            assert {(j.state, j.claimed_by) for j in done} == {(JobState.SUCCEEDED, "witness")}
            assert watched.fetches == fetches, "a retiring worker asked the store for jobs"
        # the witness is gone; lifting the mark puts the retiring worker back to work
        retiring.set_retiring(None)

        async def unmarked() -> bool:
            beat = await beat_of(store, "retiring")
            return beat is not None and beat.retiring is None

        await until("the heartbeat to drop the mark", unmarked)
        (job,) = await store.enqueue([sleeper(0.05)])
        ran = await until("the job to run", lambda: _ended(store, job.id), timeout=10)
        assert (ran.state, ran.claimed_by) == (JobState.SUCCEEDED, "retiring")


async def test_a_claim_in_flight_is_confirmed_with_its_job_counted(
    store_factory: StoreFactory,
) -> None:
    """The race the mark closes, at the worker: a fetch already under way when the mark
    arrives still claims; the confirmation waits for it, and the heartbeat that confirms
    carries the job's busy slot, so the operator never takes this worker for idle."""
    store = await store_factory()
    watched = GatedStore(await store_factory())
    async with serving(watched, "racer") as worker:
        watched.gate.clear()
        watched.entered.clear()
        await until("a fetch at the door", watched.entered.is_set)
        (job,) = await store.enqueue([sleeper(1.0)])
        worker.set_retiring("mark-2")
        for _ in range(5):  # the confirmation's turns on the event loop: it must wait
            await asyncio.sleep(0)
        assert worker.retirement.confirmed is None
        watched.gate.set()

        async def confirmed() -> WorkerHeartbeat | None:
            beat = await beat_of(store, "racer")
            return beat if beat is not None and beat.retiring == "mark-2" else None

        beat = await until("the confirmation", confirmed)
        assert beat.queues[QUEUE][1] == 1, "the confirming heartbeat must count the job"
        running = await store.get(job.id)
        assert running is not None
        assert (running.state, running.lease_owner) == (JobState.RUNNING, "racer")
        fetches = watched.fetches
        ended = await until("the job to end", lambda: _ended(store, job.id), timeout=15)
        assert (ended.state, ended.attempts) == (JobState.SUCCEEDED, 1)
        assert watched.fetches == fetches


async def _ended(store: Store, job_id: int) -> Any:
    found = await store.get(job_id)  # type: ignore[arg-type]
    return found if found is not None and found.is_terminal else None
