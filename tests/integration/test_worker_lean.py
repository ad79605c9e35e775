"""The lean worker (issue 14) as real processes: every executor runs its jobs as before
(results, failures with retries, a job's own instance and its meta, the process
executor's children) on the slim claimed rows, and ``slotfleet worker`` imports none of
the operator, YAML, the Kubernetes client or the dashboard. Speed is measured by
``bench/``, not here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slotfleet.models import Job, JobState, RetryPolicy
from tests.fixtures.stores import StoreFactory

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def run_worker(dsn: str, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", "worker", "--metrics-port", "0", *args],
        env={**os.environ, "PYTHONPATH": str(REPO), "SLOTFLEET_DSN": dsn, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stderr


async def test_every_executor_runs_its_jobs_from_slim_claimed_rows(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    quick = RetryPolicy(base=0, jitter=0)
    jobs = await store.enqueue(
        [Job(func="tests.tasks:async_add", queue="a", kwargs={"a": i, "b": 1}) for i in range(30)]
        + [Job(func="tests.tasks:add", queue="t", kwargs={"a": i, "b": 2}) for i in range(5)]
        + [Job(func="tests.tasks:add", queue="p", kwargs={"a": i, "b": 3}) for i in range(3)]
        + [
            Job(func="tests.seed_tasks:async_count_attempts", queue="a", max_attempts=2,
                retry=quick),
            Job(func="tests.seed_tasks:count_attempts", queue="p", max_attempts=2, retry=quick),
        ]
    )  # fmt: skip
    queues = ["--queue", "a:async:10", "--queue", "t:threads:2", "--queue", "p:processes:1"]
    run_worker(store.dsn, *queues, "--burst")
    for job in jobs:
        done = await store.get(job.id)
        assert done is not None
        if "count_attempts" in job.func:
            assert done.state is JobState.FAILED
            assert done.attempts == 2
            assert done.meta == {"attempts_seen": 2}  # the instance's meta, stored per attempt
        else:
            assert done.state is JobState.SUCCEEDED, done.errors
            assert done.result == job.kwargs["a"] + job.kwargs["b"]


async def test_a_worker_serves_its_queues_without_loading_pydantic(
    store_factory: StoreFactory,
) -> None:
    """A real ``slotfleet worker``, with settings from every flag that makes them, claims,
    runs and reports jobs of a ``@job`` module without loading pydantic (issue 14: its
    memory and start-up), and so do the process executor's children. The jobs themselves
    look, late in the drain: completions written, heartbeats beaten, more claims made."""
    store = await store_factory()
    look = {"prefix": "pydantic"}
    jobs = await store.enqueue(
        [Job(func="tests.tasks:async_loaded_modules", queue="a", kwargs=look) for _ in range(20)]
        + [Job(func="tests.tasks:loaded_modules", queue="t", kwargs=look) for _ in range(5)]
        + [Job(func="tests.tasks:loaded_modules", queue="p", kwargs=look) for _ in range(3)]
    )
    run_worker(
        store.dsn,
        *("--queue", "a:async:2", "--queue", "t:threads:1", "--queue", "p:processes:1"),
        *("--import", "tests.tasks"),
        *("--rate-limit", "1000/1", "--polling-interval", "0.5", "--functions", "registered"),
        *("--heartbeat-interval", "0.2", "--burst"),
    )
    for job in jobs:
        done = await store.get(job.id)
        assert done is not None
        assert done.state is JobState.SUCCEEDED, done.errors
        assert done.result == [], f"the worker had loaded {done.result}"


def test_the_worker_command_imports_only_what_a_worker_uses() -> None:
    """``slotfleet worker`` loads its own command module only: no operator (kopf), no
    Kubernetes client, no YAML, no dashboard stack, no job client."""
    code = (
        "import sys\n"
        "from slotfleet.cli.main import build_parser\n"
        "build_parser(['worker']).parse_args(['worker', '--queue', 'q:async:5'])\n"
        "import slotfleet.worker.worker, slotfleet.store.postgres, slotfleet.store.sqlite\n"
        "import slotfleet.worker.executors.async_\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(proc.stdout.split())
    for heavy in (
        "pydantic",
        "pydantic_core",
        "kopf",
        "kubernetes",
        "yaml",
        "aiohttp",
        "starlette",
        "jinja2",
        "rich",
        "slotfleet.operator",
        "slotfleet.fleet",
        "slotfleet.dashboard",
        "slotfleet.app.client",
        "slotfleet.models.resource",
        "slotfleet.cli.jobs_cmd",
    ):
        assert heavy not in loaded, heavy
