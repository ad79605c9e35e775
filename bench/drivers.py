"""The two queue libraries behind one small interface, so every scenario runs the same
steps against each: make a fresh store, enqueue no-op jobs, start worker processes,
read what happened from the database.

``SlotfleetDriver`` works on PostgreSQL and SQLite; ``ChancyDriver`` (PostgreSQL only)
needs the ``chancy`` package, installed only in the benchmark virtualenv. Timings of a
drain come from the database (first ``started_at`` to last ``completed_at``), so worker
start-up and the harness's polling are not counted; wall time is kept as well.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psycopg

from bench import pg as pgmod
from bench.common import REPO

QUEUE = "bench"


def job_function(kind: str, registered: bool = False) -> str:
    """Module and name of the no-op for an executor kind (``registered``: its ``@job``
    twin, which slotfleet's workers run by default)."""
    name = "noop_async" if kind == "async" else "noop"
    return f"bench.tasks.{'sf_' if registered else ''}{name}"


@dataclass
class Span:
    """What the database says about a queue's jobs."""

    total: int
    done: int
    first_started: float | None
    last_completed: float | None

    @property
    def seconds(self) -> float | None:
        if self.first_started is None or self.last_completed is None:
            return None
        return self.last_completed - self.first_started


class Driver(Protocol):
    name: str
    burst_exits: bool

    def fresh(self) -> None: ...
    def configure(self, kind: str, concurrency: int) -> None: ...
    def enqueue(self, n: int, batch: int, kind: str) -> None: ...
    def build(self, n: int, kind: str) -> list[Any]: ...
    def enqueue_built(self, jobs: list[Any], batch: int) -> None: ...
    def enqueue_one(self, kind: str) -> None: ...
    def worker_command(self, kind: str, concurrency: int, burst: bool) -> list[str]: ...
    def span(self) -> Span: ...
    def started(self) -> int: ...
    def pickups_ms(self) -> list[float]: ...
    def close(self) -> None: ...


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- slotfleet ---------------------------------------------------------------------------

_cli_ok: bool | None = None


def slotfleet_cli_available() -> bool:
    """Whether ``slotfleet worker`` exists yet (else the harness's equivalent runner)."""
    global _cli_ok
    if _cli_ok is None:
        proc = subprocess.run(
            [sys.executable, "-m", "slotfleet.cli.main", "worker", "--help"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        _cli_ok = proc.returncode == 0 and "--burst" in proc.stdout
    return _cli_ok


class SlotfleetDriver:
    """slotfleet through its public API (``App.enqueue_many``) and its CLI worker."""

    name = "slotfleet"
    burst_exits = True

    def __init__(self, pg: pgmod.Postgres | None, tree: str | None = None) -> None:
        """``tree``: a directory holding another ``slotfleet`` package (a git worktree
        of another commit) for the worker processes to import instead of this one."""
        self.pg = pg
        self.tree = tree
        self._tmp = Path(tempfile.mkdtemp(prefix="slotfleet-bench-sqlite-"))
        self._n = 0
        self.dsn = ""
        self._loop = asyncio.new_event_loop()
        self._app: Any = None
        self._metrics_port = 19464

    @property
    def backend(self) -> str:
        return "postgres" if self.pg else "sqlite"

    def _close_app(self) -> None:
        if self._app is not None:
            self._loop.run_until_complete(self._app.close())
            self._app = None

    def fresh(self) -> None:
        from slotfleet.app import App

        self._close_app()
        if self.pg is not None:
            pgmod.reset_database(self.pg)
            self.dsn = self.pg.dsn
        else:
            self._n += 1
            for old in self._tmp.glob("*"):
                old.unlink()
            self.dsn = f"sqlite:///{self._tmp}/bench-{self._n}.db"
        self._app = App(self.dsn)
        self._loop.run_until_complete(self._app.open())  # applies migrations

    def configure(self, kind: str, concurrency: int) -> None:
        """slotfleet takes the executor on the worker's command line."""

    def _jobs(self, n: int, kind: str) -> list[Any]:
        from slotfleet.models import Job

        module, _, func = job_function(kind, registered=True).rpartition(".")
        return [Job(func=f"{module}:{func}", queue=QUEUE) for _ in range(n)]

    def enqueue(self, n: int, batch: int, kind: str) -> None:
        async def go() -> None:
            left = n
            while left > 0:
                size = min(batch, left)
                await self._app.enqueue_many(self._jobs(size, kind))
                left -= size

        self._loop.run_until_complete(go())

    def build(self, n: int, kind: str) -> list[Any]:
        return self._jobs(n, kind)

    def enqueue_built(self, jobs: list[Any], batch: int) -> None:
        async def go() -> None:
            for start in range(0, len(jobs), batch):
                await self._app.enqueue_many(jobs[start : start + batch])

        self._loop.run_until_complete(go())

    def enqueue_one(self, kind: str) -> None:
        [job] = self._jobs(1, kind)
        self._loop.run_until_complete(self._app.enqueue(job))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> list[str]:
        spec = f"{QUEUE}:{kind}:{concurrency}"
        if self.tree is not None:
            self._metrics_port += 1
            start = (
                f"import runpy, sys; sys.path.insert(0, {self.tree!r}); "
                "runpy.run_module('slotfleet.cli.main', run_name='__main__', alter_sys=True)"
            )
            cmd = [sys.executable, "-c", start, "worker", "--dsn", self.dsn,
                   "--queue", spec, "--metrics-port", str(self._metrics_port),
                   "--log-level", "WARNING"]  # fmt: skip
        elif slotfleet_cli_available():
            self._metrics_port += 1
            cmd = [sys.executable, "-m", "slotfleet.cli.main", "worker", "--dsn", self.dsn,
                   "--queue", spec, "--metrics-port", str(self._metrics_port),
                   "--log-level", "WARNING"]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "bench.sf_worker", "--dsn", self.dsn, "--queue", spec]
        return [*cmd, "--burst"] if burst else cmd

    def _query(self, sql_pg: str, sql_lite: str) -> list[tuple[Any, ...]]:
        if self.pg is not None:
            with psycopg.connect(self.pg.admin_dsn, autocommit=True) as conn:
                return list(conn.execute(sql_pg, (QUEUE,)).fetchall())
        path = self.dsn.removeprefix("sqlite:///")
        lite = sqlite3.connect(path, timeout=30)
        try:
            return list(lite.execute(sql_lite, (QUEUE,)).fetchall())
        finally:
            lite.close()

    def span(self) -> Span:
        done = "state IN ('succeeded', 'failed', 'cancelled')"
        [row] = self._query(
            f"SELECT count(*), count(*) FILTER (WHERE {done}),"
            " extract(epoch FROM min(started_at)), extract(epoch FROM max(completed_at))"
            " FROM slotfleet_jobs WHERE queue = %s",
            f"SELECT count(*), sum({done}), min(started_at), max(completed_at)"
            " FROM slotfleet_jobs WHERE queue = ?",
        )
        return Span(
            int(row[0]),
            int(row[1] or 0),
            None if row[2] is None else float(row[2]),
            None if row[3] is None else float(row[3]),
        )

    def started(self) -> int:
        [row] = self._query(
            "SELECT count(*) FROM slotfleet_jobs WHERE queue = %s AND started_at IS NOT NULL",
            "SELECT count(*) FROM slotfleet_jobs WHERE queue = ? AND started_at IS NOT NULL",
        )
        return int(row[0])

    def pickups_ms(self) -> list[float]:
        rows = self._query(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM slotfleet_jobs"
            " WHERE queue = %s AND started_at IS NOT NULL ORDER BY id",
            "SELECT (started_at - created_at) * 1000 FROM slotfleet_jobs"
            " WHERE queue = ? AND started_at IS NOT NULL ORDER BY id",
        )
        return [float(r[0]) for r in rows]

    def close(self) -> None:
        self._close_app()
        self._loop.close()
        for old in self._tmp.glob("*"):
            old.unlink()
        self._tmp.rmdir()


# -- Chancy ------------------------------------------------------------------------------

_CHANCY_EXECUTORS = {
    "async": "chancy.executors.asyncex.AsyncExecutor",
    "threads": "chancy.executors.thread.ThreadedExecutor",
    "processes": "chancy.executors.process.ProcessExecutor",
}


class ChancyDriver:
    """Chancy configured fairly: notifications on, eager polling on, a 1 s polling
    interval (slotfleet's default), the ``default`` queue declared with no tags so no
    worker starts its process pool, default plugins kept, logger at WARNING."""

    name = "chancy"
    burst_exits = False

    def __init__(self, pg: pgmod.Postgres) -> None:
        self.pg = pg
        self.dsn = pg.dsn
        self._loop = asyncio.new_event_loop()
        self._app: Any = None

    def _close_app(self) -> None:
        if self._app is not None:
            self._loop.run_until_complete(self._app.__aexit__(None, None, None))
            self._app = None

    def fresh(self) -> None:
        from chancy import Queue  # type: ignore[import-not-found]

        from bench.chancy_worker import make_app

        self._close_app()
        pgmod.reset_database(self.pg)
        self._app = make_app(self.dsn)

        async def go() -> None:
            await self._app.__aenter__()
            await self._app.migrate()
            # Declared before any worker starts: Worker.start() declares "default"
            # without upsert, so this stays and no worker serves it.
            await self._app.declare(Queue("default", tags=set()), upsert=True)

        self._loop.run_until_complete(go())

    def configure(self, kind: str, concurrency: int) -> None:
        from chancy import Queue

        queue = Queue(
            QUEUE,
            concurrency=concurrency,
            executor=_CHANCY_EXECUTORS[kind],
            polling_interval=1,
            eager_polling=True,
        )
        self._loop.run_until_complete(self._app.declare(queue, upsert=True))

    def _jobs(self, n: int, kind: str) -> list[Any]:
        from chancy import Job

        return [Job(func=job_function(kind), queue=QUEUE) for _ in range(n)]

    def enqueue(self, n: int, batch: int, kind: str) -> None:
        async def go() -> None:
            left = n
            while left > 0:
                size = min(batch, left)
                async for _ in self._app.push_many(self._jobs(size, kind), batch_size=batch):
                    pass
                left -= size

        self._loop.run_until_complete(go())

    def build(self, n: int, kind: str) -> list[Any]:
        return self._jobs(n, kind)

    def enqueue_built(self, jobs: list[Any], batch: int) -> None:
        async def go() -> None:
            for start in range(0, len(jobs), batch):
                async for _ in self._app.push_many(jobs[start : start + batch], batch_size=batch):
                    pass

        self._loop.run_until_complete(go())

    def enqueue_one(self, kind: str) -> None:
        [job] = self._jobs(1, kind)
        self._loop.run_until_complete(self._app.push(job))

    def worker_command(self, kind: str, concurrency: int, burst: bool) -> list[str]:
        return [sys.executable, "-m", "bench.chancy_worker", "--dsn", self.dsn]

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.pg.admin_dsn, autocommit=True) as conn:
            return list(conn.execute(sql, (QUEUE,)).fetchall())

    def span(self) -> Span:
        [row] = self._query(
            "SELECT count(*), count(*) FILTER (WHERE state IN ('succeeded', 'failed')),"
            " extract(epoch FROM min(started_at)), extract(epoch FROM max(completed_at))"
            " FROM chancy_jobs WHERE queue = %s"
        )
        return Span(
            int(row[0]),
            int(row[1] or 0),
            None if row[2] is None else float(row[2]),
            None if row[3] is None else float(row[3]),
        )

    def started(self) -> int:
        [row] = self._query(
            "SELECT count(*) FROM chancy_jobs WHERE queue = %s AND started_at IS NOT NULL"
        )
        return int(row[0])

    def pickups_ms(self) -> list[float]:
        rows = self._query(
            "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM chancy_jobs"
            " WHERE queue = %s AND started_at IS NOT NULL ORDER BY created_at"
        )
        return [float(r[0]) for r in rows]

    def close(self) -> None:
        self._close_app()
        self._loop.close()
