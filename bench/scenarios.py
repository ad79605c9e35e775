"""The measured scenarios, each run against one :class:`~bench.drivers.Driver` on a
fresh store and bounded by a timeout: enqueue throughput (building the jobs included, or
with the jobs built beforehand), drain of a backlog by one or more worker processes
(with spawn -> first start and the workers' CPU time), an idle worker's start-up cost
and memory, and pickup latency on an idle worker.

CPU time is the harness's ``RUSAGE_CHILDREN`` over the run: every worker process, and the
pool children they reap, from spawn to exit. A counted quantity, steadier than a rate on
a shared machine; ``idle`` measures what a worker spends without jobs (start-up,
heartbeats, stop), so a drain's CPU minus that is what its jobs cost.

Every scenario returns a plain dict (JSON-ready). A scenario that runs out of time says
so (``timed_out``) and reports what it saw rather than hanging the run.
"""

from __future__ import annotations

import random
import resource
import subprocess
import time
from typing import Any

from bench import pg as pgmod
from bench.common import REPO, Deadline, PeakRss, percentile, proc_status_kib, stop_process
from bench.drivers import Driver, worker_env


def _statements(pg: pgmod.Postgres | None) -> int | None:
    return None if pg is None else pgmod.count_statements(pg)


def enqueue(driver: Driver, pg: pgmod.Postgres | None, *, n: int, batch: int) -> dict[str, Any]:
    """Time ``n`` no-op jobs enqueued in batches of ``batch`` (building the job objects
    included: that is what a caller pays)."""
    driver.fresh()
    driver.configure("async", 100)
    if pg is not None:
        pgmod.reset_statements(pg)
    t0 = time.perf_counter()
    driver.enqueue(n, batch, "async")
    seconds = time.perf_counter() - t0
    statements = _statements(pg)
    return {
        "scenario": "enqueue",
        "jobs": n,
        "batch": batch,
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "statements_per_job": None if statements is None else statements / n,
    }


def enqueue_built(
    driver: Driver, pg: pgmod.Postgres | None, *, n: int, batch: int
) -> dict[str, Any]:
    """Time ``n`` no-op jobs enqueued in batches of ``batch``, the job objects built
    beforehand (what the store path costs, without the caller's model building)."""
    driver.fresh()
    driver.configure("async", 100)
    jobs = driver.build(n, "async")
    if pg is not None:
        pgmod.reset_statements(pg)
    t0 = time.perf_counter()
    driver.enqueue_built(jobs, batch)
    seconds = time.perf_counter() - t0
    statements = _statements(pg)
    return {
        "scenario": "enqueue_built",
        "jobs": n,
        "batch": batch,
        "seconds": seconds,
        "jobs_per_s": n / seconds,
        "statements_per_job": None if statements is None else statements / n,
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def vm_rss_mib(pid: int) -> float | None:
    """Current resident set size (VmRSS) of ``pid`` in MiB."""
    kib = proc_status_kib(pid, "VmRSS")
    return None if kib is None else kib / 1024


def idle(
    driver: Driver, pg: pgmod.Postgres | None, *, settle: float = 5.0, kind: str = "async"
) -> dict[str, Any]:
    """One worker on an empty queue: its resident memory after ``settle`` seconds idle,
    and the CPU of its whole life (start-up, ``settle`` seconds of idle heartbeats and
    polling, stop). Not burst mode: an idle fleet member waits for work."""
    driver.fresh()
    driver.configure(kind, 100)
    cpu0 = _children_cpu()
    procs = _start_workers(driver, kind, 100, 1, burst=False)
    proc, _ = procs[0]
    time.sleep(settle)
    idle_rss = vm_rss_mib(proc.pid)
    alive = proc.poll() is None
    peaks, errors = _stop_workers(procs)
    return {
        "scenario": "idle",
        "kind": kind,
        "settle_s": settle,
        "idle_rss_mib": idle_rss,
        "peak_rss_mib": peaks[0] if peaks else None,
        "cpu_s": _children_cpu() - cpu0,
        "timed_out": not alive,
        "errors": errors[-3000:],
    }


def _start_workers(
    driver: Driver, kind: str, concurrency: int, workers: int, burst: bool
) -> list[tuple[subprocess.Popen[bytes], PeakRss]]:
    procs = []
    for _ in range(workers):
        proc = subprocess.Popen(
            driver.worker_command(kind, concurrency, burst),
            cwd=REPO,
            env=worker_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append((proc, PeakRss(proc.pid)))
    return procs


def _stop_workers(procs: list[tuple[subprocess.Popen[bytes], PeakRss]]) -> tuple[list[float], str]:
    peaks, errors = [], ""
    for proc, rss in procs:
        rss.sample()
        code = stop_process(proc)
        peaks.append(rss.stop())
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if code not in (0, -15) and err:
            errors += err[-1500:]
    return peaks, errors


def drain(
    driver: Driver,
    pg: pgmod.Postgres | None,
    *,
    backlog: int,
    kind: str,
    concurrency: int,
    workers: int = 1,
    timeout: float = 300.0,
) -> dict[str, Any]:
    """Queue ``backlog`` no-op jobs, then start ``workers`` worker processes and time
    how fast they finish them. Throughput is backlog / (last completed_at - first
    started_at) from the database."""
    driver.fresh()
    driver.configure(kind, concurrency)
    t_seed = time.perf_counter()
    driver.enqueue(backlog, 1000, kind)
    seed_seconds = time.perf_counter() - t_seed
    if pg is not None:
        pgmod.reset_statements(pg)
    deadline = Deadline(timeout)
    cpu0 = _children_cpu()
    spawned = time.time()
    t0 = time.perf_counter()
    procs = _start_workers(driver, kind, concurrency, workers, burst=driver.burst_exits)
    while not deadline.expired():
        if driver.burst_exits:
            # Burst workers exit once the queue is drained: watch the processes, not the
            # table (a count over a 1M-row table every 0.25 s is a parallel scan that
            # competes with the drain it measures, more the larger the backlog).
            if all(p.poll() is not None for p, _ in procs):
                break
            time.sleep(0.02)
            continue
        if driver.span().done >= backlog:
            break
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    peaks, errors = _stop_workers(procs)
    cpu = _children_cpu() - cpu0
    span = driver.span()
    statements = _statements(pg)
    seconds = span.seconds
    first = None if span.first_started is None else span.first_started - spawned
    return {
        "scenario": "drain",
        "kind": kind,
        "concurrency": concurrency,
        "workers": workers,
        "backlog": backlog,
        "done": span.done,
        "timed_out": span.done < backlog,
        "seconds": seconds,
        "jobs_per_s": (span.done / seconds) if seconds else None,
        "wall_seconds": wall,
        "seed_seconds": seed_seconds,
        "peak_rss_mib": max(peaks) if peaks else None,
        "peak_rss_each_mib": peaks,
        "spawn_to_first_start_s": first,
        "cpu_s": cpu,
        "statements_per_job": None if statements is None else statements / backlog,
        "errors": errors[-3000:],
    }


def pickup(
    driver: Driver,
    pg: pgmod.Postgres | None,
    *,
    samples: int,
    gap: float = 0.05,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """On an idle worker (async, concurrency 100), enqueue one job at a time, ``gap``
    seconds apart (plus up to 20 % jitter so the gap does not phase-lock with a
    polling interval), and read ``started_at - created_at`` from the database."""
    driver.fresh()
    driver.configure("async", 100)
    deadline = Deadline(timeout)
    [(proc, rss)] = _start_workers(driver, "async", 100, 1, burst=False)
    try:
        driver.enqueue_one("async")  # warm-up: the worker is ready once this starts
        while driver.started() < 1 and not deadline.expired() and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(1.0)
        rng = random.Random(7)
        for i in range(samples):
            if deadline.expired():
                break
            driver.enqueue_one("async")
            time.sleep(gap * (1 + 0.2 * rng.random()))
            if i % 50 == 49:  # keep the worker idle: let stragglers start
                while driver.started() < i + 2 and not deadline.expired():
                    time.sleep(0.01)
        while driver.started() < samples + 1 and not deadline.expired():
            time.sleep(0.05)
    finally:
        peaks, errors = _stop_workers([(proc, rss)])
    values = driver.pickups_ms()[1:]
    return {
        "scenario": "pickup",
        "samples": len(values),
        "gap_s": gap,
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values) if values else None,
        "timed_out": len(values) < samples,
        "peak_rss_mib": peaks[0],
        "errors": errors[-3000:],
    }
