"""Pausing a queue against real ``slotfleet worker`` processes and the real CLI.

``slotfleet pause`` writes the pause to the store; every worker process of the queue
honours it on its next fetch, and ``slotfleet resume`` wakes them. ``--paused`` (what a
local fleet passes for a manifest's ``spec.paused``) keeps one worker from fetching.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slotfleet.app import App
from slotfleet.models import Job, JobState
from tests.fixtures.waiting import until
from tests.integration.test_worker_processes import REPO, Workers

pytestmark = pytest.mark.slow

#: Seconds the pause is watched: many polling intervals (0.1 s) of two idle workers.
WATCH_SECONDS = 2.0


@pytest.fixture
def workers(store_dsn: str, tmp_path: Path) -> Iterator[Workers]:
    w = Workers(store_dsn, tmp_path)
    yield w
    w.cleanup()


def cli(dsn: str, *argv: str) -> str:
    """Run ``slotfleet ARGV`` as a user would; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", *argv, "--dsn", dsn],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout


async def workers_of(app: App, queue: str, count: int) -> bool:
    stats = await app.queues(queue)
    return bool(stats) and stats[0].workers == count


async def test_slotfleet_pause_holds_every_worker_process_and_resume_releases_them(
    store_dsn: str, workers: Workers
) -> None:
    async with App(store_dsn) as app:
        for _ in range(2):
            workers.start("--queue", "mail:threads:2", "--polling-interval", "0.1")
        await until("both workers to heartbeat", lambda: workers_of(app, "mail", 2))
        out = await asyncio.to_thread(cli, store_dsn, "pause", "mail")
        assert out.strip() == "queue mail paused until 'slotfleet resume mail'"
        refs = await app.enqueue_many(
            Job(func="tests.seed_tasks:job_to_run", queue="mail") for _ in range(6)
        )
        # An observation window, not a wait for something: nothing may start in it.
        for _ in range(int(WATCH_SECONDS / 0.25)):
            assert {(await app.get(r)).state for r in refs} == {JobState.PENDING}
            await asyncio.sleep(0.25)
        assert all(p.poll() is None for p in workers.procs), "the workers kept running"

        out = await asyncio.to_thread(cli, store_dsn, "resume", "mail")
        assert out.strip() == "queue mail resumed"
        done = [await app.wait(r, timeout=30) for r in refs]
        assert {j.state for j in done} == {JobState.SUCCEEDED}


async def test_a_worker_started_paused_runs_nothing(store_dsn: str, workers: Workers) -> None:
    async with App(store_dsn) as app:
        ref = await app.enqueue(Job(func="tests.seed_tasks:job_to_run", queue="mail"))
        proc = workers.start("--queue", "mail:threads", "--paused", "--burst")
        assert await workers.wait(proc) == 0, workers.log(proc)
        assert (await app.get(ref)).state is JobState.PENDING

        proc = workers.start("--queue", "mail:threads", "--burst")
        assert await workers.wait(proc) == 0, workers.log(proc)
        assert (await app.get(ref)).state is JobState.SUCCEEDED
