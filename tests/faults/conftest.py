"""Fixtures of the fault suite: ``make_run`` sets up one run (a store on SQLite or a fresh
PostgreSQL database, a ledger, a fault log, a fleet) and tears everything down after
the test, orphaned processes included. The session's figures (runs, jobs, faults,
executions, excused overlaps and why) are printed in pytest's closing summary.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psycopg
import pytest

from slotfleet.store import open_store
from tests.faults.driver import REPORTS, Run
from tests.faults.faultlog import FaultLog
from tests.faults.fleet import Fleet
from tests.faults.plans import Settings, plan
from tests.fixtures.postgres import PostgresServer

BACKENDS = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]

Route = Callable[[str, str], str]
"""(store DSN, worker id) -> the DSN that worker connects with."""
RunFactory = Callable[..., Awaitable[Run]]


@pytest.fixture
async def make_run(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunFactory]:
    made: list[Run] = []
    databases: list[tuple[PostgresServer, str]] = []

    async def make(
        backend: str,
        settings: Settings,
        extra: tuple[str, ...] = (),
        route: Route | None = None,
    ) -> Run:
        sqlite_path: Path | None = None
        if backend == "sqlite":
            sqlite_path = tmp_path / "jobs.db"
            dsn = f"sqlite:///{sqlite_path}"
        else:
            server: PostgresServer = request.getfixturevalue("postgres_server")
            name = f"faults_{uuid.uuid4().hex[:10]}"
            dsn = server.create_database(name)
            databases.append((server, name))
        store = open_store(dsn)
        await store.open()
        ledger = tmp_path / "ledger.jsonl"
        ledger.touch()
        faults = FaultLog()
        fleet = Fleet(
            lambda worker_id: route(dsn, worker_id) if route else dsn,
            tmp_path,
            settings.worker_args(),
            ledger,
            faults,
        )
        run = Run(
            name=f"{request.node.name}",
            settings=settings,
            store=store,
            fleet=fleet,
            faults=faults,
            ledger=ledger,
            planned=plan(settings, extra),
            sqlite_path=sqlite_path,
        )
        made.append(run)
        await run.enqueue()
        return run

    yield make
    for run in made:
        run.fleet.cleanup()
        await run.store.close()
    for server, name in databases:
        with contextlib.suppress(psycopg.Error):
            if server.pid is None:
                server.start()
            server.drop_database(name)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORTS:
        return
    faults: Counter[str] = Counter()
    excused: Counter[str] = Counter()
    for report in REPORTS:
        faults.update(report.faults)
        excused.update(e.reason for e in report.excused)
    write = terminalreporter.write_line
    terminalreporter.section("fault suite figures")
    write(
        f"runs {len(REPORTS)}, jobs {sum(r.jobs for r in REPORTS)}, executions "
        f"{sum(r.executions for r in REPORTS)}, jobs with more than one execution "
        f"{sum(r.reruns for r in REPORTS)}"
    )
    write(
        "faults injected: " + (", ".join(f"{k} {v}" for k, v in sorted(faults.items())) or "none")
    )
    write(
        f"overlapping executions excused: {sum(excused.values())}"
        + "".join(f", {reason} {n}" for reason, n in sorted(excused.items()))
    )
    for report in REPORTS:
        write(
            f"  {report.name}: {report.jobs} jobs, {report.executions} executions, "
            f"{len(report.excused)} excused, {len(report.problems)} problems"
        )
