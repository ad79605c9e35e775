"""How fast the dashboard answers on a store of a million jobs (issue 15: list and job
pages within 100 ms), on a throwaway PostgreSQL and on SQLite.

    .venv/bin/python -m bench.dashboard                   # 1,000,000 jobs, both stores
    .venv/bin/python -m bench.dashboard --jobs 100000 --backends sqlite

For each store: bulk-load ``--jobs`` jobs in SQL (8 queues, 20 functions; 96 % succeeded,
2 % failed with a traceback, 1 % cancelled, the rest pending, retrying or running; 20,000
finished in the last ten minutes so the chart has work to draw), let the database analyze
it (as autovacuum would), start ``slotfleet dashboard`` as a separate process and time
HTTP requests to it over one keep-alive connection, as a browser would make them. Job
pages ask for a different job each time. The overview is timed uncached (requests spaced
beyond its cache). Writes bench/results/dashboard-*.json and the "dashboard" section of
docs/benchmarks.md (``--no-doc`` to skip). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench import pg as pgmod
from bench.common import (
    REPO,
    command_line,
    fmt,
    machine_facts,
    percentile,
    stop_process,
    write_doc_section,
    write_json,
)

TARGET_MS = 100.0
QUEUES = 8
FUNCS = 20

#: The state of job g (1-based): mostly succeeded, some failed, few in flight.
STATE_SQL = """CASE
    WHEN g % 50 = 7 THEN 'failed'
    WHEN g % 100 = 13 THEN 'cancelled'
    WHEN g % 200 = 17 THEN 'retrying'
    WHEN g % 500 = 19 THEN 'running'
    WHEN g > {jobs} - 2000 AND g % 3 = 0 THEN 'pending'
    ELSE 'succeeded' END"""

TRACEBACK = (
    "Traceback (most recent call last):\\n"
    '  File \\"/app/myapp/billing.py\\", line 88, in charge_card\\n'
    "    response = gateway.charge(order, amount)\\n"
    '  File \\"/app/myapp/gateway.py\\", line 41, in charge\\n'
    "    raise CardDeclined(code)\\n"
    "myapp.gateway.CardDeclined: card declined (insufficient funds)"
)

POSTGRES_LOAD = f"""
INSERT INTO slotfleet_jobs (queue, func, kwargs, priority, scheduled_at, max_attempts, state,
    attempts, result, errors, created_at, started_at, completed_at, claimed_by, lease_owner,
    lease_expires_at)
SELECT 'queue-' || (g % {QUEUES}), 'myapp.tasks:task_' || (g % {FUNCS}),
    json_build_object('order', g, 'customer', 'c-' || (g % 9973), 'note', repeat('x', 120)),
    0, t, 3, s,
    CASE WHEN s IN ('pending') THEN 0 ELSE 1 END,
    CASE WHEN s = 'succeeded' THEN json_build_object('ok', true, 'order', g) END,
    CASE WHEN s IN ('failed', 'retrying') THEN jsonb_build_array(jsonb_build_object(
        'attempt', 1, 'error', 'CardDeclined: card declined (insufficient funds)',
        'traceback', '{TRACEBACK}', 'at', t, 'worker', 'worker-' || (g % 7)))
        ELSE '[]'::jsonb END,
    t, CASE WHEN s <> 'pending' THEN t END,
    CASE WHEN s IN ('succeeded', 'failed', 'cancelled') THEN t END,
    CASE WHEN s <> 'pending' THEN 'worker-' || (g % 7) END,
    CASE WHEN s = 'running' THEN 'worker-' || (g % 7) END,
    CASE WHEN s = 'running' THEN now() + interval '1 hour' END
FROM (
    SELECT g, ({STATE_SQL}) AS s,
        CASE WHEN g > {{jobs}} - 20000 THEN now() - make_interval(secs => ({{jobs}} - g) * 0.03)
             ELSE now() - interval '10 minutes' - make_interval(secs => ({{jobs}} - g) * 0.6)
        END AS t
    FROM generate_series(1, {{jobs}}) AS g
) AS rows
"""

SQLITE_LOAD = f"""
WITH RECURSIVE gen(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM gen WHERE g < :jobs),
rows AS (
    SELECT g, ({STATE_SQL}) AS s,
        CASE WHEN g > :jobs - 20000 THEN :now - (:jobs - g) * 0.03
             ELSE :now - 600 - (:jobs - g) * 0.6 END AS t
    FROM gen
)
INSERT INTO slotfleet_jobs (queue, func, kwargs, priority, scheduled_at, max_attempts, state,
    attempts, result, errors, created_at, started_at, completed_at, claimed_by, lease_owner,
    lease_expires_at)
SELECT 'queue-' || (g % {QUEUES}), 'myapp.tasks:task_' || (g % {FUNCS}),
    json_object('order', g, 'customer', 'c-' || (g % 9973), 'note', printf('%.120c', 'x')),
    0, t, 3, s,
    CASE WHEN s = 'pending' THEN 0 ELSE 1 END,
    CASE WHEN s = 'succeeded' THEN json_object('ok', json('true'), 'order', g) END,
    CASE WHEN s IN ('failed', 'retrying') THEN json_array(json_object(
        'attempt', 1, 'error', 'CardDeclined: card declined (insufficient funds)',
        'traceback', json('"{TRACEBACK}"'), 'at', datetime(t, 'unixepoch'),
        'worker', 'worker-' || (g % 7)))
        ELSE '[]' END,
    t, CASE WHEN s <> 'pending' THEN t END,
    CASE WHEN s IN ('succeeded', 'failed', 'cancelled') THEN t END,
    CASE WHEN s <> 'pending' THEN 'worker-' || (g % 7) END,
    CASE WHEN s = 'running' THEN 'worker-' || (g % 7) END,
    CASE WHEN s = 'running' THEN :now + 3600 END
FROM rows
"""


def load_postgres(pg: pgmod.Postgres, jobs: int) -> float:
    """Migrate as the app role, bulk-load, VACUUM ANALYZE; seconds the load took."""
    subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", "queues", "--dsn", pg.dsn],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    started = time.monotonic()
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(POSTGRES_LOAD.replace("{jobs}", str(jobs)).encode())
        conn.execute("VACUUM ANALYZE slotfleet_jobs")
    return time.monotonic() - started


def load_sqlite(path: Path, jobs: int) -> float:
    subprocess.run(
        [sys.executable, "-m", "slotfleet.cli.main", "queues", "--dsn", f"sqlite:///{path}"],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    started = time.monotonic()
    conn = sqlite3.connect(path)
    try:
        sql = SQLITE_LOAD.replace("{jobs}", ":jobs")
        conn.execute(sql, {"jobs": jobs, "now": time.time()})
        conn.commit()
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()
    return time.monotonic() - started


def start_dashboard(dsn: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    log = workdir / "dashboard.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slotfleet.cli.main", "dashboard", "--dsn", dsn,
             "--port", "0", "--refresh", "0.5"],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"slotfleet dashboard: (http://\S+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited: {log.read_text()}")
        time.sleep(0.1)
    raise RuntimeError("the dashboard did not start")


def timed(conn: http.client.HTTPConnection, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    conn.request("GET", path, headers={"Accept": "text/html"})
    response = conn.getresponse()
    body = response.read()
    elapsed = (time.perf_counter() - started) * 1000
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
    return elapsed, len(body)


def measure(url: str, jobs: int, requests: int, seed: int) -> list[dict[str, Any]]:
    import json

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    rng = random.Random(seed)
    deep = jobs // 2
    failed = [j["id"] for j in json.loads(
        _get(conn, "/api/jobs?state=failed&limit=200"))["jobs"]]  # fmt: skip
    cases: list[tuple[str, str, Any]] = [
        ("list", "/jobs (newest 50)", lambda: "/jobs"),
        ("list", "/jobs?state=failed", lambda: "/jobs?state=failed"),
        ("list", "/jobs?queue=queue-3", lambda: "/jobs?queue=queue-3"),
        ("list", "/jobs?queue=queue-3&state=failed", lambda: "/jobs?queue=queue-3&state=failed"),
        ("list", "/jobs?func=myapp.tasks:task_7", lambda: "/jobs?func=myapp.tasks:task_7"),
        ("list", "/jobs?state=running (0.2 %)", lambda: "/jobs?state=running"),
        ("list", f"/jobs?state=failed&after={deep} (page halfway down)",
         lambda: f"/jobs?state=failed&after={deep}"),
        ("list", "/jobs?after=random id (deep pages)",
         lambda: f"/jobs?after={rng.randint(1000, jobs)}"),
        ("list", "/api/jobs?queue=queue-5&state=cancelled",
         lambda: "/api/jobs?queue=queue-5&state=cancelled"),
        ("job", "/jobs/ID (random job)", lambda: f"/jobs/{rng.randint(1, jobs)}"),
        ("job", "/jobs/ID (failed, with traceback)", lambda: f"/jobs/{rng.choice(failed)}"),
        ("job", "/api/jobs/ID (random job)", lambda: f"/api/jobs/{rng.randint(1, jobs)}"),
        ("overview", "/ (overview page, as served: shared cache)", lambda: "/"),
    ]  # fmt: skip
    rows = []
    for kind, name, path in cases:
        for _ in range(3):  # warm the connection pool and the page cache
            timed(conn, path())
        samples = []
        size = 0
        for _ in range(requests):
            elapsed, size = timed(conn, path())
            samples.append(elapsed)
        rows.append(
            {
                "kind": kind,
                "name": name,
                "p50_ms": percentile(samples, 50),
                "p95_ms": percentile(samples, 95),
                "max_ms": max(samples),
                "bytes": size,
            }
        )
    conn.close()
    return rows


def overview_cost(dsn: str, requests: int) -> dict[str, Any]:
    """The overview computed as the dashboard computes it (four App reads), uncached."""
    from slotfleet.app import App
    from slotfleet.dashboard.settings import ViewSettings
    from slotfleet.dashboard.views import overview

    async def main() -> list[float]:
        samples = []
        async with App(dsn) as app:
            for i in range(requests + 2):
                started = time.perf_counter()
                await overview(app, ViewSettings())
                if i >= 2:
                    samples.append((time.perf_counter() - started) * 1000)
        return samples

    samples = asyncio.run(main())
    return {
        "kind": "overview",
        "name": "overview computed, uncached (queue counts, workers, chart)",
        "p50_ms": percentile(samples, 50),
        "p95_ms": percentile(samples, 95),
        "max_ms": max(samples),
        "bytes": 0,
    }


def _get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.read()


def run_backend(backend: str, jobs: int, requests: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"slotfleet-bench-dash-{backend}-"))
    version = None
    if backend == "postgres":
        with pgmod.running() as pg:
            version = pg.version
            load = load_postgres(pg, jobs)
            proc, url = start_dashboard(pg.dsn, workdir)
            try:
                rows = measure(url, jobs, requests, seed=1)
            finally:
                stop_process(proc)
            rows.append(overview_cost(pg.dsn, max(3, requests // 3)))
    else:
        path = workdir / "jobs.db"
        load = load_sqlite(path, jobs)
        proc, url = start_dashboard(f"sqlite:///{path}", workdir)
        try:
            rows = measure(url, jobs, requests, seed=1)
        finally:
            stop_process(proc)
        rows.append(overview_cost(f"sqlite:///{path}", max(3, requests // 3)))
    return {"backend": backend, "load_seconds": load, "rows": rows, "pg_version": version}


def render(result: dict[str, Any]) -> str:
    facts = result["machine"]
    by_backend = {r["backend"]: r for r in result["backends"]}
    names = [row["name"] for row in result["backends"][0]["rows"]]
    kinds = {row["name"]: row["kind"] for row in result["backends"][0]["rows"]}
    head = ["page", *(f"{b} p50 / p95 / max (ms)" for b in by_backend), "within 100 ms (p95)"]
    lines = [
        "## The dashboard on a million jobs",
        "",
        f"Command (from the repository root): `{result['command']}`",
        "",
        f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs · "
        f"Python {facts['python']} · PostgreSQL {result.get('pg_version') or '-'}",
        "",
        f"{result['jobs']:,} jobs in {QUEUES} queues and {FUNCS} functions (96 % succeeded, "
        "2 % failed with a traceback, 1 % cancelled, the rest pending, retrying or running; "
        "20,000 finished in the last ten minutes), bulk-loaded and analyzed. "
        f"`slotfleet dashboard` runs as its own process; {result['requests']} sequential "
        "requests per row over one keep-alive connection (after 3 warm-up requests), "
        "timed from request to last byte. Job pages ask for a different job each time. "
        "The overview page is served from a cache every viewer shares (recomputed after "
        "half the refresh interval, or four times its last cost when longer); the last "
        "row times its computation itself, in process. The target (issue 15) is for "
        "list and job pages.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(by_backend) + ["---"]) + "|",
    ]
    for name in names:
        cells = []
        within = []
        for b in by_backend.values():
            row = next(r for r in b["rows"] if r["name"] == name)
            cells.append(f"{fmt(row['p50_ms'], 1)} / {fmt(row['p95_ms'], 1)} / "
                         f"{fmt(row['max_ms'], 1)}")  # fmt: skip
            within.append(row["p95_ms"] <= TARGET_MS)
        verdict = "" if kinds[name] == "overview" else ("yes" if all(within) else "no")
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {verdict} |")
    loads = ", ".join(f"{b} {fmt(r['load_seconds'], 0)} s" for b, r in by_backend.items())
    lines += ["", f"Bulk load and analyze took {loads}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--requests", type=int, default=30, help="timed requests per page")
    p.add_argument("--backends", default="postgres,sqlite", help="comma-separated")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)
    backends = [run_backend(b, args.jobs, args.requests) for b in args.backends.split(",")]
    version = next((b["pg_version"] for b in backends if b["pg_version"]), None)
    result = {
        "command": command_line(),
        "machine": machine_facts(version),
        "jobs": args.jobs,
        "requests": args.requests,
        "pg_version": version,
        "backends": backends,
    }
    path = write_json("dashboard", result)
    text = render(result)
    print(text)
    print(f"\nresults: {path}")
    if not args.no_doc:
        write_doc_section("dashboard", text)


if __name__ == "__main__":
    main()
