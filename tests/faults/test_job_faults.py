"""Faults that come with the jobs themselves, on SQLite and PostgreSQL, on every
executor: error text the store cannot take as it is (a lone surrogate and a NUL) or
that cannot be made at all (``__str__`` raises), and the ordinary lives of jobs
(success, failure, retries, timeouts, cancels) with no fault at all, including a thread
job that ignores its timeout. Run with ``-rP`` (or ``-s``) to see the figures.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import BACKENDS, RunFactory
from tests.faults.plans import Settings

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_poison_error_text_fails_readably_and_blocks_no_completion(
    make_run: RunFactory, backend: str
) -> None:
    """A job failing with unstorable text (a non-UTF-8 file name, a NUL) or an
    exception whose ``__str__`` raises ends failed with a readable error, and every
    other job of the same workers still completes."""
    run = await make_run(backend, Settings(), extra=("poison_text", "poison_str"))
    await run.start(run.settings.workers)
    await run.cancel_lingerers()
    report = await run.finish()
    assert not report.problems, report.summary()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_jobs_succeed_fail_retry_time_out_and_cancel_as_declared(
    make_run: RunFactory, backend: str
) -> None:
    """No fault: every behaviour ends as declared, and a timed-out thread job whose code
    ignores its token (a blocking call) is not run again while its thread still runs."""
    run = await make_run(backend, Settings(), extra=("stubborn",))
    await run.start(run.settings.workers)
    await run.cancel_lingerers()
    report = await run.finish()
    assert not report.problems, report.summary()
