"""The core alone: ``pip install slotfleet`` (no extras) into a fresh virtualenv gets
neither kopf, the kubernetes client, psycopg nor aiohttp, and runs jobs on SQLite; where
an extra is missing, the command that needs it says which one in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.core_only import EXTRAS_PACKAGES, REPO, core_only_env

pytestmark = pytest.mark.slow

TASKS = """
from slotfleet import job


@job
async def hello(name: str) -> str:
    return f"hello {name}"
"""


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def test_the_core_installs_alone_and_runs_jobs_on_sqlite(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(REPO)], tmp_path, env)
    installed = {
        p["name"].lower().replace("_", "-")
        for p in json.loads(run([python, "-m", "pip", "list", "--format=json"], tmp_path, env))
    }
    assert "slotfleet" in installed
    # Every file of the package that is not Python (the dashboard's templates and static
    # files, the migrations, py.typed) is installed too: the image is built by the same
    # `pip install`, and a file missing there fails only when a page or a migration needs it.
    where = run([python, "-c", "import slotfleet; print(slotfleet.__file__)"], tmp_path, env)
    package = Path(where.strip()).parent
    tracked = subprocess.run(
        ["git", "ls-files", "slotfleet"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    data = {Path(f).relative_to("slotfleet") for f in tracked if not f.endswith(".py")}
    assert data, "git ls-files found no package data: the check would prove nothing"
    missing = sorted(str(f) for f in data if not (package / f).is_file())
    assert not missing, f"pip install left out package data: {missing}"
    extras = {name.replace("_", "-") for name in EXTRAS_PACKAGES} | {"psycopg-binary"}
    assert not installed & extras, f"the core pulled in {sorted(installed & extras)}"

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "tasks_mod.py").write_text(TASKS)
    env["PYTHONPATH"] = str(tmp_path / "app")
    slotfleet = str(venv / "bin" / "slotfleet")
    dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
    run([slotfleet, "enqueue", "tasks_mod:hello", "name=pip", "--dsn", dsn], tmp_path, env)
    run(
        [slotfleet, "worker", "--dsn", dsn, "--burst", "--import", "tasks_mod",
         "--metrics-port", "0"],
        tmp_path,
        env,
    )  # fmt: skip
    [done] = json.loads(run([slotfleet, "jobs", "--dsn", dsn, "--json"], tmp_path, env))
    assert (done["state"], done["result"]) == ("succeeded", "hello pip")


def core_only(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """``slotfleet ARGV`` where only the core is installed (no extras' packages)."""
    return subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", *argv],
        env=core_only_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_sqlite_client_and_worker_run_without_the_extras(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'jobs.db'}"
    enqueued = core_only(tmp_path, "enqueue", "tests.tasks:async_add", "a=1", "b=2", "--dsn", dsn)
    assert enqueued.returncode == 0, enqueued.stderr
    worked = core_only(
        tmp_path, "worker", "--dsn", dsn, "--burst", "--metrics-port", "0", "--queue", "default"
    )
    assert worked.returncode == 0, worked.stderr
    listed = core_only(tmp_path, "jobs", "--dsn", dsn, "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"state": "succeeded"' in listed.stdout


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["jobs", "--dsn", "postgresql://app@db/app"], "postgres"),
        (["operator"], "operator"),
        (["worker", "--queue-resource", "ns/q", "--metrics-port", "0"], "operator"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(tmp_path: Path, argv: list[str], extra: str) -> None:
    proc = core_only(tmp_path, *argv)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"pip install 'slotfleet[{extra}]'" in proc.stderr
    assert "Traceback" not in proc.stderr
