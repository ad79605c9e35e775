"""``slotfleet demo`` is the README's first command: it must finish and tell the truth."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.core_only import core_only_env

pytestmark = pytest.mark.slow


def test_demo_runs_every_kind_of_job_and_exits_zero(tmp_path: Path) -> None:
    """With the core alone (scripts/demo installs no extras): no kopf, kubernetes,
    psycopg or aiohttp can be imported by the demo or its workers."""
    proc = subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", "demo", "--jobs", "60", "--timeout", "90"],
        env=core_only_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "63/63 done" in out
    outcomes = re.search(r"outcomes:\s+(.*)", out)
    assert outcomes is not None
    assert outcomes.group(1) == "cancelled 1, failed 2, succeeded 60"
    retried = re.search(r"retried:\s+(\d+)", out)
    assert retried is not None
    assert int(retried.group(1)) == 6
    for queue in ("demo-async", "demo-threads", "demo-processes"):
        assert queue in out
    assert re.search(r'slotfleet_slots_total\{executor="async",queue="demo-async"\} 50', out)
    assert "exited with [0, 0]" in out


def test_demo_refuses_bad_options_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", "demo", "--workers", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "at least 1" in proc.stderr
