"""Upgrading a running fleet: worker processes of the previous release run jobs on
PostgreSQL; workers of the next release start beside them and migrate the database while
those jobs are in flight (a transactional migration, then an online index build); an old
worker restarted during the build starts and claims without waiting for it; the old
workers keep claiming on the migrated schema, then drain; every job ends once, nothing is
lost.

"The previous release" is the repository's own code at the commit before the newest
PostgreSQL migration was added, written out with ``git archive`` into a temp dir and run
with ``PYTHONPATH`` pointing there first: real old code (its own worker, store and
migrations, which know every migration but the newest), not today's code with a file
removed, which would query a table the old schema lacks. The job bodies (``tests/``) are
today's, as a user's code is the same on both sides of an upgrade. It needs the git
history (a clean clone has it); without it the test fails saying so.

"The next release" is today's package copied with one online migration added after the
newest (:data:`NEXT_MIGRATION`, an index no release ships): the shipped migrations are all
transactional (docs/decisions.md), and an upgrade must be shown with an online build
running beside old workers. The build is held at its first wait ("waiting for writers
before build") by a test transaction holding a write lock on the table, so the old worker
restarted "during the build" starts before the build's snapshots, where a process waiting
on the lock the migrator holds would deadlock with it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from slotfleet.store.rows import migration_scripts
from tests.faults.ledger import by_key, executions, read_events
from tests.fixtures.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]
QUEUE = "upgrade"
HELD = 4  # jobs held running by the old workers across the migration
OLD_WORKERS, NEW_WORKERS, SLOTS = 2, 2, 4
INDEX = "slotfleet_jobs_upgrade_test"
NEXT_MIGRATION = f"""-- slotfleet: online
-- The next release's migration in tests/integration/test_fleet_upgrade.py.
CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON slotfleet_jobs (func, created_at);
"""

ENQUEUE = """
import asyncio, json, sys
from slotfleet.models import Job
from slotfleet.store import open_store

async def main() -> None:
    store = open_store(sys.argv[1])
    await store.open()
    ids = await store.enqueue_ids([Job(**spec) for spec in json.loads(sys.argv[2])])
    await store.close()
    print(json.dumps(ids))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as it was just before the newest migration, in a temp dir."""
    newest = migration_scripts("postgres")[-1][1]
    path = f"slotfleet/store/migrations/postgres/{newest}.sql"
    found = subprocess.run(
        ["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "-1", "--", path],
        capture_output=True,
        text=True,
    )
    if found.returncode != 0 or not found.stdout.strip():
        pytest.fail(f"the upgrade test needs the git history to find {path}'s commit", False)
    root = tmp_path_factory.mktemp("old-release")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", f"{found.stdout.strip()}^", "slotfleet"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    old = sorted(p.name for p in (root / "slotfleet/store/migrations/postgres").iterdir())
    assert old == [f"{name}.sql" for _, name, _ in migration_scripts("postgres")[:-1]]
    return root


@pytest.fixture(scope="module")
def next_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Today's package plus an online migration after the newest, in a temp dir."""
    root = tmp_path_factory.mktemp("next-release")
    shutil.copytree(
        REPO / "slotfleet", root / "slotfleet", ignore=shutil.ignore_patterns("__pycache__")
    )
    version = migration_scripts("postgres")[-1][0] + 1
    folder = root / "slotfleet/store/migrations/postgres"
    (folder / f"{version:04d}_upgrade_test_index.sql").write_text(NEXT_MIGRATION)
    return root


class Fleet:
    """Worker processes of either release on one database, stopped by PID at the end."""

    def __init__(self, dsn: str, tmp_path: Path, old_release: Path, next_release: Path) -> None:
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.old_release = old_release
        self.next_release = next_release
        self.ledger = tmp_path / "ledger.jsonl"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def env(self, old: bool, worker_id: str = "") -> dict[str, str]:
        path = f"{self.old_release if old else self.next_release}{os.pathsep}{REPO}"
        env = {**os.environ, "PYTHONPATH": path, "SLOTFLEET_LEDGER": str(self.ledger)}
        return {**env, "SLOTFLEET_WORKER_ID": worker_id} if worker_id else env

    def start(self, worker_id: str, old: bool) -> None:
        log = open(self.tmp_path / f"{worker_id}.log", "wb")  # noqa: SIM115
        self.procs[worker_id] = subprocess.Popen(
            [
                *(sys.executable, "-m", "slotfleet.cli.main", "worker", "--dsn", self.dsn),
                *("--queue", f"{QUEUE}:async:{SLOTS}"),
                *("--import", "tests.tasks", "--metrics-port", "0", "--drain-timeout", "30"),
            ],
            cwd=self.tmp_path,
            env=self.env(old, worker_id),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def log(self, worker_id: str) -> str:
        return (self.tmp_path / f"{worker_id}.log").read_text(errors="replace")

    def enqueue_old(self, jobs: list[dict[str, Any]]) -> list[int]:
        """Enqueue through the previous release's store (the first open migrates)."""
        out = subprocess.run(
            [sys.executable, "-c", ENQUEUE, self.dsn, json.dumps(jobs)],
            cwd=self.tmp_path,
            env=self.env(old=True),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        ids: list[int] = json.loads(out.stdout)
        return ids

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def fleet(
    postgres_dsn: str, tmp_path: Path, old_release: Path, next_release: Path
) -> Iterator[Fleet]:
    made = Fleet(postgres_dsn, tmp_path, old_release, next_release)
    yield made
    made.stop()


def ledger_jobs(keys: range, seconds: float) -> list[dict[str, Any]]:
    return [
        {
            "queue": QUEUE,
            "func": "tests.fault_tasks:work_async",
            "kwargs": {"key": f"k{i}", "behaviour": "succeed", "seconds": seconds},
        }
        for i in keys
    ]


def rows(conn: psycopg.Connection[dict[str, Any]], query: str) -> list[dict[str, Any]]:
    return conn.execute(query.encode()).fetchall()


def build_phase(conn: psycopg.Connection[dict[str, Any]]) -> str:
    found = rows(
        conn,
        "SELECT phase FROM pg_stat_progress_create_index "
        "WHERE command = 'CREATE INDEX CONCURRENTLY'",
    )
    return str(found[0]["phase"]) if found else ""


def test_a_running_fleet_upgraded_with_jobs_in_flight_runs_every_job_once(
    fleet: Fleet, postgres_dsn: str, tmp_path: Path
) -> None:
    newest_version, newest = migration_scripts("postgres")[-1][:2]
    online = f"{newest_version + 1:04d}_upgrade_test_index"
    release = tmp_path / "release"
    held = [
        {"queue": QUEUE, "func": "tests.tasks:async_hold", "kwargs": {"release_file": str(release)}}
        for _ in range(HELD)
    ]
    # The previous release's schema, jobs and fleet: the held jobs fill one worker's slots.
    ids = fleet.enqueue_old(held + ledger_jobs(range(0, 40), 0.2))
    for n in range(OLD_WORKERS):
        fleet.start(f"old-{n}", old=True)
    conn = psycopg.connect(postgres_dsn, autocommit=True, row_factory=dict_row)
    writer = psycopg.connect(postgres_dsn, autocommit=True)
    with conn, writer:
        versions = {r["version"] for r in rows(conn, "SELECT version FROM slotfleet_migrations")}
        assert versions == {v for v, _, _ in migration_scripts("postgres")[:-1]}
        wait_until(
            "the held jobs running on old workers",
            lambda: (
                len(
                    rows(
                        conn,
                        "SELECT id FROM slotfleet_jobs WHERE state = 'running' "
                        "AND func = 'tests.tasks:async_hold'",
                    )
                )
                == HELD
            ),
        )
        # A write in progress: the online build will wait for it before building.
        writer.execute("BEGIN")
        writer.execute("UPDATE slotfleet_jobs SET priority = priority WHERE id = -1")

        # The next release's workers start together beside them: one migrates, one waits.
        for n in range(NEW_WORKERS):
            fleet.start(f"new-{n}", old=False)

        def recorded(version: int) -> list[dict[str, Any]]:
            return rows(
                conn, f"SELECT applied_at FROM slotfleet_migrations WHERE version = {version}"
            )

        applied_at = wait_until("the newest migration recorded", lambda: recorded(newest_version))
        wait_until("the online build started", lambda: "before build" in build_phase(conn))

        # An old worker restarted during the build starts and claims; old clients enqueue.
        fleet.start("old-2", old=True)
        ids += fleet.enqueue_old(ledger_jobs(range(40, 80), 0.2))
        wait_until(
            "the restarted old worker claiming during the build",
            lambda: rows(conn, "SELECT id FROM slotfleet_jobs WHERE claimed_by = 'old-2'"),
        )
        assert "before build" in build_phase(conn)
        assert not recorded(newest_version + 1)
        writer.execute("COMMIT")
        wait_until("the online migration recorded", lambda: recorded(newest_version + 1))
        valid = rows(
            conn, f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{INDEX}'::regclass"
        )
        assert valid == [{"indisvalid": True}]

        release.touch()
        old = [f"old-{n}" for n in range(OLD_WORKERS + 1)]
        for worker_id in old:
            os.kill(fleet.procs[worker_id].pid, signal.SIGTERM)
        for worker_id in old:
            assert fleet.procs[worker_id].wait(60) == 0, fleet.log(worker_id)
        wait_until(
            "every job finished",
            lambda: (
                not rows(
                    conn, "SELECT id FROM slotfleet_jobs WHERE state NOT IN ('succeeded', 'failed')"
                )
            ),
            timeout=60,
        )
        jobs = rows(conn, "SELECT * FROM slotfleet_jobs ORDER BY id")

    # Nothing lost, each job run once and succeeded, by old and new workers.
    assert len(ids) == HELD + 80
    assert sorted(j["id"] for j in jobs) == sorted(ids)
    assert {(j["state"], j["attempts"]) for j in jobs} == {("succeeded", 1)}
    runs = by_key(executions(read_events(fleet.ledger)))
    assert sorted(runs) == sorted(f"k{i}" for i in range(80))
    assert all(len(r) == 1 and r[0].how == "ok" for r in runs.values()), runs
    assert {r[0].worker.split("-")[0] for r in runs.values()} == {"old", "new"}
    # The held jobs were in flight on old workers across the migrations and ended there.
    for job in jobs[:HELD]:
        assert job["claimed_by"] in ("old-0", "old-1")
        assert job["started_at"] < applied_at[0]["applied_at"] < job["completed_at"]
    # Each migration applied by one new worker; the other new worker waited, saying so.
    logs = {worker_id: fleet.log(worker_id) for worker_id in fleet.procs}
    for name in (newest, online):
        assert sum(text.count(f"applied migration {name}") for text in logs.values()) == 1, logs
    assert any("waiting for another process to finish migrating" in t for t in logs.values())
    for worker_id, text in logs.items():
        assert "Traceback" not in text, (worker_id, text)
        assert "ERROR" not in text, (worker_id, text)
