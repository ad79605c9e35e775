"""``slotfleet demo``: the whole runtime on the embedded store, in under a minute.

It starts a small local fleet of real worker processes on a fresh SQLite file, queues
a few hundred sample jobs across the three executors (some fail and are retried, one
always fails, one is cancelled while running), shows live progress, prints a summary
and exits 0 once every job has finished and the workers have drained.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from slotfleet.app import App
from slotfleet.cli import demo_tasks as tasks
from slotfleet.cli.common import guarded
from slotfleet.models import Job, JobState, QueuedJob, SlotfleetError

QUEUES = ("demo-async:async:50", "demo-threads:threads:8", "demo-processes:processes:2")


def build_jobs(count: int, marker_dir: str) -> list[Job]:
    """The sample mix: mostly quick jobs, a few flaky ones, two that always fail."""
    jobs: list[Job] = []
    for i in range(count):
        kind = i % 10
        if kind < 6:
            jobs.append(tasks.fetch_page.with_kwargs(url=f"https://example.com/{i}"))
        elif kind < 8:
            jobs.append(tasks.resize_image.with_kwargs(name=f"img{i}.png", width=320))
        elif kind < 9:
            jobs.append(tasks.crunch.with_kwargs(seed=i, rounds=5_000))
        else:
            jobs.append(tasks.flaky_upload.with_kwargs(name=f"file{i}", marker_dir=marker_dir))
    jobs.append(tasks.broken_import.with_kwargs(path="/nonexistent/a.csv"))
    jobs.append(tasks.broken_import.with_kwargs(path="/nonexistent/b.csv"))
    return jobs


def start_workers(dsn: str, workers: int, metrics_port: int, env: dict[str, str]) -> list[Any]:
    procs = []
    for n in range(workers):
        cmd = [
            sys.executable,
            "-m",
            "slotfleet.cli.main",
            "worker",
            "--dsn",
            dsn,
            "--worker-id",
            f"demo-{n + 1}",
            "--import",
            tasks.__name__,
            "--lease-seconds",
            "5",
            "--polling-interval",
            "0.2",
            "--metrics-port",
            str(metrics_port if n == 0 else 0),
            "--log-level",
            "warning",
        ]
        for queue in QUEUES:
            cmd += ["--queue", queue]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    return procs


def stop_workers(procs: list[Any], timeout: float = 30.0) -> list[int]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            codes.append(proc.wait())
    return codes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def scrape_slots(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return []
    return [line for line in text.splitlines() if line.startswith("slotfleet_slots_")]


def progress_line(counts: Counter[str], total: int, elapsed: float) -> str:
    done = sum(counts[s] for s in ("succeeded", "failed", "cancelled"))
    parts = " ".join(
        f"{s}={counts[s]}"
        for s in ("pending", "retrying", "running", "succeeded", "failed", "cancelled")
    )
    return f"[{elapsed:5.1f}s] {done}/{total} done  {parts}"


async def run_demo(args: argparse.Namespace, workdir: Path) -> int:
    dsn = args.dsn or f"sqlite:///{workdir / 'demo.db'}"
    marker_dir = workdir / "markers"
    marker_dir.mkdir(exist_ok=True)
    env = dict(os.environ)
    print(f"slotfleet demo: store {dsn}")
    async with App(dsn) as app:
        procs = start_workers(dsn, args.workers, args.metrics_port, env)
        print(
            f"started {len(procs)} worker processes (pids "
            f"{', '.join(str(p.pid) for p in procs)}) serving {', '.join(QUEUES)}"
        )
        start = time.monotonic()
        jobs = build_jobs(args.jobs, str(marker_dir))
        refs = await app.enqueue_many(jobs)
        long_ref = await app.enqueue(tasks.long_report, seconds=120)
        total = len(refs) + 1
        print(f"queued {total} jobs in one batch ({(time.monotonic() - start) * 1000:.0f} ms)")
        cancelled_sent = False
        slots_seen: list[str] = []
        last_print = 0.0
        deadline = start + args.timeout
        while True:
            rows = await app.list(limit=total + 10)
            counts = Counter(j.state.value for j in rows)
            if not cancelled_sent:
                long_job = await app.get(long_ref)
                if long_job.state is JobState.RUNNING:
                    await app.cancel(long_ref)
                    cancelled_sent = True
                    print(f"job {long_ref} (long_report) is running: cancel requested")
            if args.metrics_port and not slots_seen and counts["running"]:
                slots_seen = scrape_slots(args.metrics_port)
            now = time.monotonic()
            if now - last_print >= 0.5:
                print(progress_line(counts, total, now - start), flush=True)
                last_print = now
            if all(j.is_terminal for j in rows) and len(rows) >= total:
                break
            if dead := [p.pid for p in procs if p.poll() is not None]:
                stop_workers(procs)
                raise SlotfleetError(f"worker process(es) {dead} exited during the demo")
            if now > deadline:
                stop_workers(procs)
                raise SlotfleetError(f"the demo did not finish within {args.timeout:.0f} s")
            await asyncio.sleep(0.2)
        elapsed = time.monotonic() - start
        if args.metrics_port:
            slots_seen = slots_seen or scrape_slots(args.metrics_port)
        codes = stop_workers(procs)
        final = await app.list(limit=total + 10)
    print(progress_line(Counter(j.state.value for j in final), total, elapsed))
    print_summary(final, elapsed, args, slots_seen, codes)
    return 0 if all(code == 0 for code in codes) else 1


def print_summary(
    jobs: list[QueuedJob],
    elapsed: float,
    args: argparse.Namespace,
    slots: list[str],
    codes: list[int],
) -> None:
    outcomes = Counter(j.state.value for j in jobs)
    retried = sum(1 for j in jobs if j.attempts > 1 and j.state is JobState.SUCCEEDED)
    by_queue = Counter((j.queue, j.state.value) for j in jobs)
    print("\nsummary")
    print(f"  jobs:        {len(jobs)} in {elapsed:.1f} s ({len(jobs) / elapsed:.0f} jobs/s)")
    print("  outcomes:    " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    print(f"  retried:     {retried} succeeded after a failed attempt")
    for (queue, state), n in sorted(by_queue.items()):
        print(f"  {queue:<15} {state:<10} {n}")
    failed = [j for j in jobs if j.state is JobState.FAILED]
    if failed:
        print(f"  e.g. failed: job {failed[0].id}: {failed[0].errors[-1].error}")
    if args.metrics_port:
        print(f"  metrics:     http://127.0.0.1:{args.metrics_port}/metrics (while workers run)")
        for line in slots[:6]:
            print(f"    {line}")
    print(f"  workers:     exited with {codes} after draining")


def _demo(args: argparse.Namespace) -> int:
    if args.jobs < 1 or args.workers < 1:
        raise SlotfleetError("--jobs and --workers must be at least 1")
    if args.metrics_port is None:
        args.metrics_port = free_port()
    with tempfile.TemporaryDirectory(prefix="slotfleet-demo-") as tmp:
        return asyncio.run(run_demo(args, Path(tmp)))


def register(commands: Any) -> None:
    p = commands.add_parser(
        "demo",
        help="run a local fleet on SQLite and a few hundred sample jobs",
        description="Start worker processes on a fresh SQLite file, queue sample jobs across "
        "the three executors (some retried, one failing, one cancelled), show progress and a "
        "summary.",
    )
    p.add_argument("--dsn", help="store to use (default: a fresh SQLite file in a temp dir)")
    p.add_argument("--jobs", type=int, default=300, help="sample jobs to queue (default 300)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="metrics port of the first worker; 0 disables (default: a free port)",
    )
    p.add_argument("--timeout", type=float, default=120.0, help="give up after N s (default 120)")
    p.set_defaults(handler=guarded(_demo))
