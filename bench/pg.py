"""A throwaway PostgreSQL for benchmarks, started by the test fixture's code.

The server itself (initdb into a temp directory, loopback port, fsync off,
``pg_stat_statements`` preloaded, run as an unprivileged user when we are root) is
``tests.fixtures.postgres.PostgresServer``: imported, not written twice. This module adds
what benchmarks need on top: an unprivileged ``app`` role for the measured code (so
statement counts can be filtered to what the queue sent, not what the harness polled),
a fresh database per run, statement statistics, and teardown by PID.

It is not a test fixture and not part of slotfleet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.fixtures.postgres import PostgresServer, _server_user, find_bindir

#: Role the measured code connects as.
APP_ROLE = "app"
#: Database the measured code uses; dropped and recreated between runs.
DBNAME = "bench"


@dataclass
class Postgres:
    """A running throwaway server."""

    server: PostgresServer
    version: str

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def dsn(self) -> str:
        """DSN of the measured role (what queues and workers use)."""
        return f"postgresql://{APP_ROLE}@127.0.0.1:{self.port}/{DBNAME}"

    @property
    def admin_dsn(self) -> str:
        """DSN of the superuser (monitoring, resets, statistics)."""
        return self.server.dsn(DBNAME)


def start() -> Postgres:
    """initdb + start; create the ``app`` role and a fresh ``bench`` database."""
    root = Path(tempfile.mkdtemp(prefix="slotfleet-bench-pg-"))
    server = PostgresServer(find_bindir(), root, _server_user())
    try:
        server.init()
        server.start()
        if not server.stat_statements:
            raise RuntimeError("pg_stat_statements is not installed (postgresql-contrib)")
        with psycopg.connect(server.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {APP_ROLE} LOGIN")
            row = conn.execute("SHOW server_version").fetchone()
        pg = Postgres(server=server, version=str(row[0]) if row else "?")
        reset_database(pg)
        return pg
    except BaseException:
        _stop_server(server)
        raise


def _stop_server(server: PostgresServer) -> None:
    """Fast shutdown by the postmaster's PID (SIGINT), wait, remove the directory."""
    pid = server.pid
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(server.root, ignore_errors=True)


def stop(pg: Postgres) -> None:
    _stop_server(pg.server)


@contextlib.contextmanager
def running() -> Iterator[Postgres]:
    """``with running() as pg: ...`` — a server for the block's duration."""
    pg = start()
    try:
        yield pg
    finally:
        stop(pg)


def reset_database(pg: Postgres) -> None:
    """Drop and recreate the ``bench`` database (a clean slate for each run)."""
    with psycopg.connect(pg.server.dsn(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DBNAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DBNAME} OWNER {APP_ROLE} TEMPLATE template0")
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def reset_statements(pg: Postgres) -> None:
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")


def count_statements(pg: Postgres) -> int:
    """Statements the ``app`` role ran since the last reset (top level, all kinds)."""
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
            " JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s",
            (APP_ROLE,),
        ).fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    with running() as pg:
        print(pg.dsn, pg.version, pg.server.pid)
