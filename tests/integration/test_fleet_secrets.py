"""``slotfleet fleet`` keeps the DSN's password to itself: not printed, not on its
workers' command lines (``ps`` shows those to every user), not in their logs."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from slotfleet.models import Job, JobState
from slotfleet.store import open_store
from tests.fixtures.secrets import command_lines, with_password
from tests.integration.test_local_fleet import MANIFEST, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PASSWORD = "Planted-Pw-4e8a17"


async def test_the_local_fleet_never_shows_the_password(postgres_dsn: str, tmp_path: Path) -> None:
    """Regression: the fleet printed the DSN and passed --dsn to every worker."""
    dsn = with_password(postgres_dsn, PASSWORD)
    user = postgres_dsn.partition("://")[2].partition("@")[0]
    manifest = tmp_path / "queue.yaml"
    manifest.write_text(MANIFEST)
    store = open_store(dsn)
    await store.open()
    try:
        [job] = await store.enqueue(
            [Job(func="tests.fleet_tasks:nap", queue="naps", kwargs={"seconds": 2.0})]
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "slotfleet.cli.main", "fleet", "-f", str(manifest),
            "--until-idle", "--interval", "0.5",
            cwd=ROOT, env={**os.environ, "SLOTFLEET_DSN": dsn},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        seen_argv: list[str] = []
        communicate = asyncio.ensure_future(proc.communicate())
        while not communicate.done():  # look at every process while the workers run
            seen_argv += [line for line in command_lines() if "slotfleet" in line]
            await asyncio.sleep(0.2)
        out = (await communicate)[0].decode()
        assert proc.returncode == 0, out
        done = await store.get(job.id)
        assert done is not None
        assert done.state is JobState.SUCCEEDED
    finally:
        await store.close()
    assert any("slotfleet.cli.main worker" in line for line in seen_argv)  # we saw workers
    assert not [line for line in seen_argv if PASSWORD in line]
    assert PASSWORD not in out
    assert f"{user}:***@" in out  # the fleet says which store, masked
