"""``slotfleet fleet --until-idle`` for real: worker subprocesses on a sqlite file scale up
for a burst of jobs, run every one, and scale back to zero."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from slotfleet.models import Job, JobState
from slotfleet.store import open_store

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[2]
JOBS = 24

MANIFEST = """
apiVersion: slotfleet.dev/v1alpha1
kind: Queue
metadata:
  name: naps
spec:
  imports: [tests.fleet_tasks]
  executor: {kind: async, concurrency: 2}
  store: {secretRef: {name: unused-locally}}
  pollingInterval: 0.2
  drainTimeoutSeconds: 10
  autoscaling:
    minReplicas: 0
    maxReplicas: 3
    targetUtilization: 1.0
    scaleDownStabilizationSeconds: 1
    idleSeconds: 2
"""


async def test_fleet_scales_up_runs_everything_and_comes_back_down(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'fleet.db'}"
    manifest = tmp_path / "queue.yaml"
    manifest.write_text(MANIFEST)
    store = open_store(dsn)
    await store.open()
    try:
        job = Job(func="tests.fleet_tasks:nap", queue="naps", kwargs={"seconds": 0.5})
        await store.enqueue([job] * JOBS)

        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "slotfleet.cli.main", "fleet", "-f", str(manifest),
            "--dsn", dsn, "--until-idle", "--interval", "0.5",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=180)
        except TimeoutError:
            proc.terminate()
            await proc.wait()
            raise
        out = stdout.decode()
        assert proc.returncode == 0, out + stderr.decode()

        sizes = [int(m) for m in re.findall(r"naps: \d+ -> (\d+) workers", out)]
        assert max(sizes) > 1, out
        assert sizes[-1] == 0, out
        assert "scale to zero: idle for" in out
        assert "naps: idle; stopping" in out

        jobs = await store.list_jobs(queue="naps", limit=JOBS + 10)
        assert len(jobs) == JOBS
        assert {j.state for j in jobs} == {JobState.SUCCEEDED}, [j.errors for j in jobs]
        assert all(j.attempts == 1 for j in jobs)
        assert await store.workers() == []  # every worker drained and said goodbye
    finally:
        await store.close()


async def test_sigterm_drains_every_worker_and_loses_no_job(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'fleet.db'}"
    manifest = tmp_path / "queue.yaml"
    manifest.write_text(MANIFEST.replace("drainTimeoutSeconds: 10", "drainTimeoutSeconds: 1"))
    store = open_store(dsn)
    await store.open()
    try:
        job = Job(func="tests.fleet_tasks:nap", queue="naps", kwargs={"seconds": 30})
        await store.enqueue([job] * 4)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "slotfleet.cli.main", "fleet", "-f", str(manifest),
            "--dsn", dsn, "--interval", "0.5",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for _ in range(200):  # wait until the workers hold jobs
            [stats] = await store.queue_stats("naps")
            if stats.running or proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        if proc.returncode is None:
            proc.terminate()
        stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
        out = stdout.decode()
        assert proc.returncode == 0, out + stderr.decode()
        assert "naps: draining 2 worker(s)" in out

        jobs = await store.list_jobs(queue="naps")
        assert {j.state for j in jobs} == {JobState.PENDING}  # handed back, not failed
        assert await store.workers() == []
    finally:
        await store.close()


async def test_examples_queue_yaml_scales_up_and_down(tmp_path: Path) -> None:
    """The README's own manifest, run as it ships: only ``--set`` shortens its windows."""
    dsn = f"sqlite:///{tmp_path / 'emails.db'}"
    store = open_store(dsn)
    await store.open()
    try:
        # 20 slots a pod at 0.8: 16 jobs a pod, so 60 jobs want 4 pods
        burst = [
            Job(
                func="examples.tasks:send_email",
                queue="emails",
                kwargs={"to": f"u{i}", "seconds": 1},
            )
            for i in range(60)
        ]
        await store.enqueue(burst)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "slotfleet.cli.main", "fleet",
            "-f", str(ROOT / "examples" / "queue.yaml"), "--dsn", dsn,
            "--set", "autoscaling.scaleDownStabilizationSeconds=1",
            "--set", "autoscaling.idleSeconds=2",
            "--set", "pollingInterval=0.2",
            "--until-idle", "--interval", "0.5",
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=180)
        except TimeoutError:
            proc.terminate()
            await proc.wait()
            raise
        out = stdout.decode()
        assert proc.returncode == 0, out + stderr.decode()

        sizes = [int(m) for m in re.findall(r"emails: \d+ -> (\d+) workers", out)]
        assert max(sizes) > 1, out
        assert sizes[-1] == 0, out
        assert re.search(r"emails: 1 -> 0 workers: scale to zero: idle for \d+ s", out), out

        jobs = await store.list_jobs(queue="emails", limit=100)
        assert len(jobs) == len(burst)
        assert {j.state for j in jobs} == {JobState.SUCCEEDED}, [j.errors for j in jobs]
        assert all(j.attempts == 1 for j in jobs)
    finally:
        await store.close()
