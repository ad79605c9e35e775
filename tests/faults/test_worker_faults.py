"""Faults done to worker processes, on SQLite (one file, several workers) and PostgreSQL:
SIGKILL of the worker alone, a restart under the same worker id, and a pause past the
lease (the zombie). Every run serves async, thread and process queues at once.

Each test starts one worker alone so that it takes the ``hold`` jobs (the victims, one
per executor, 20 s on their first start), waits until it runs all three, starts the
rest of the fleet, requests the cancels, then injects its fault at a moment the ledger
shows. The analysis (``tests.faults.analysis``) then checks the whole run; run with
``-rP`` (or ``-s``) to see the figures.
"""

from __future__ import annotations

import pytest

from tests.faults.analysis import Report
from tests.faults.conftest import BACKENDS, RunFactory
from tests.faults.driver import Run
from tests.faults.fleet import WorkerProc
from tests.faults.ledger import Execution
from tests.faults.plans import Settings

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

SETTINGS = Settings(hold=20.0)


async def victims_held(run: Run) -> tuple[WorkerProc, list[Execution]]:
    """One worker takes the victims (a ``hold`` job on each executor), the others join,
    the lingering jobs get cancelled; return the worker and its victims."""
    target = (await run.start(1))[0]
    victims = await run.holding(target)
    await run.start(run.settings.workers - 1)
    await run.cancel_lingerers()
    return target, victims


def verdict(report: Report) -> None:
    assert not report.problems, report.summary()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_sigkilled_worker_loses_no_job_and_its_children_die(
    make_run: RunFactory, backend: str
) -> None:
    """The OOM killer takes the worker process: its jobs come back within the lease and
    run once more, and its process-executor children stop with it."""
    run = await make_run(backend, SETTINGS)
    target, _ = await victims_held(run)
    run.fleet.sigkill(target)
    await run.start(1)  # the replacement a Deployment would start
    report = await run.finish()
    verdict(report)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_worker_restarted_under_its_id_keeps_none_of_its_jobs(
    make_run: RunFactory, backend: str
) -> None:
    """A container restarted in its pod keeps its name (``--worker-id $(POD_NAME)``): the
    new process must not keep its predecessor's jobs alive; they come back within the
    lease."""
    run = await make_run(backend, SETTINGS)
    target, _ = await victims_held(run)
    again = run.fleet.restart(target)
    await run.ready(again)
    report = await run.finish()
    verdict(report)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_worker_paused_past_its_lease_stops_its_stale_runs(
    make_run: RunFactory, backend: str
) -> None:
    """A worker frozen longer than its lease (SIGSTOP of its process group) loses its
    jobs to others; once continued it must stop its stale runs promptly and none of
    its completions may land on the new attempts."""
    run = await make_run(backend, SETTINGS)
    target, victims = await victims_held(run)
    await run.pause_past_lease(target, run.started_again(victims))
    report = await run.finish()
    verdict(report)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_lone_worker_paused_past_its_lease_lands_no_stale_completion(
    make_run: RunFactory, backend: str
) -> None:
    """The only worker of the queues is frozen past its lease; a worker of another queue
    recovers its jobs, and once continued it claims them again itself. Its stale runs
    must stop promptly, and a stale run's completion must not land on the new attempt
    (a completion fenced by owner alone does). A ``hold`` job works 14 s on every
    start here, so a stale run outlives the pause and the new attempt outlives the
    stale run."""
    run = await make_run(backend, Settings(hold=14.0, hold_again=14.0, workers=1))
    # Serves only an idle queue; its heartbeats recover expired leases of every queue.
    janitor = run.fleet.start(args=run.settings.worker_args(("fz:async:1",)))
    await run.ready(janitor)
    target = (await run.start(1))[0]
    victims = await run.holding(target)
    await run.cancel_lingerers()
    await run.pause_past_lease(target, run.recovered(victims))
    report = await run.finish()
    verdict(report)
