"""The worker's HTTP endpoint: slot gauges reflect running jobs; probes follow the
worker's life (ready after the first heartbeat, not ready while draining)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import aiohttp

from slotfleet.models import ExecutorKind, Job, JobState, QueueSettings
from slotfleet.worker import MetricsServerConfig, Worker
from tests.fixtures.stores import StoreFactory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as response:
        return response.status, await response.text()


async def until(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.05)


async def test_metrics_and_probes(store_factory: StoreFactory, tmp_path: Path) -> None:
    store = await store_factory()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    queue = QueueSettings(
        name="work", executor=ExecutorKind.ASYNC, concurrency=3, polling_interval=0.1
    )
    worker = Worker(
        store,
        [queue],
        metrics=MetricsServerConfig(port=port),
        heartbeat_interval=0.5,
        drain_timeout=10,
    )
    marker = tmp_path / "started"
    (long_job,) = await store.enqueue(
        [
            Job(
                func="tests.tasks:async_sleep",
                queue="work",
                kwargs={"seconds": 60, "marker": str(marker)},
            )
        ]
    )
    await store.enqueue([Job(func="tests.tasks:async_add", queue="work", kwargs={"a": 1, "b": 2})])
    task = asyncio.create_task(worker.run())
    async with aiohttp.ClientSession() as session:

        async def serving() -> bool:
            try:
                return (await get(session, base + "/readyz"))[0] == 200
            except aiohttp.ClientConnectionError:
                return False

        await until(serving)
        assert (await get(session, base + "/healthz"))[0] == 200

        async def one_busy() -> bool:
            return (
                'slotfleet_slots_busy{executor="async",queue="work"} 1.0'
                in (await get(session, base + "/metrics"))[1]
            )

        await until(one_busy)
        status, text = await get(session, base + "/metrics")
        assert status == 200
        assert 'slotfleet_slots_total{executor="async",queue="work"} 3.0' in text
        assert 'slotfleet_slots_free{executor="async",queue="work"} 2.0' in text
        assert 'slotfleet_jobs_total{outcome="succeeded",queue="work"} 1.0' in text
        assert 'slotfleet_job_duration_seconds_count{queue="work"} 1.0' in text
        assert 'slotfleet_job_pickup_latency_seconds_count{queue="work"} 2.0' in text

        worker.request_stop()  # drains: the long job keeps its slot until cancelled

        async def not_ready() -> bool:
            return (await get(session, base + "/readyz"))[0] == 503

        await until(not_ready)
        assert (await get(session, base + "/healthz"))[0] == 200
        await store.request_cancel(long_job.id)
        await asyncio.wait_for(task, 15)
    job = await store.get(long_job.id)
    assert job is not None
    assert job.state is JobState.CANCELLED


async def test_max_slots_caps_the_slots_reported(
    store_factory: StoreFactory, tmp_path: Path
) -> None:
    """With ``max_slots`` 3 over two queues of 4, neither the gauges nor the heartbeat the
    autoscaler reads claim more than 3 slots, and a job on one queue takes a free slot
    from the other too."""
    store = await store_factory()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    queues = [
        QueueSettings(name=name, executor=ExecutorKind.ASYNC, concurrency=4, polling_interval=0.1)
        for name in ("a", "b")
    ]
    worker = Worker(
        store,
        queues,
        max_slots=3,
        metrics=MetricsServerConfig(port=port),
        heartbeat_interval=0.3,
        drain_timeout=0,
    )
    marker = tmp_path / "started"
    await store.enqueue(
        [
            Job(
                func="tests.tasks:async_sleep",
                queue="a",
                kwargs={"seconds": 60, "marker": str(marker)},
            )
        ]
    )
    task = asyncio.create_task(worker.run())
    try:
        async with aiohttp.ClientSession() as session:

            async def one_busy() -> bool:
                try:
                    text = (await get(session, base + "/metrics"))[1]
                except aiohttp.ClientConnectionError:
                    return False
                return 'slotfleet_slots_busy{executor="async",queue="a"} 1.0' in text

            await until(one_busy)
            text = (await get(session, base + "/metrics"))[1]
        for name in ("a", "b"):
            assert f'slotfleet_slots_total{{executor="async",queue="{name}"}} 3.0' in text
            assert f'slotfleet_slots_free{{executor="async",queue="{name}"}} 2.0' in text

        async def heartbeat_busy() -> bool:
            beats = await store.workers()
            return bool(beats) and beats[0].queues.get("a") == (3, 1)

        await until(heartbeat_busy)
        (beat,) = await store.workers()
        assert beat.queues == {"a": (3, 1), "b": (3, 0)}
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 15)
