"""Where a worker's start-up time and memory go before it runs a job (issue 14: 150 ms
start, 40 MiB): the wall time and resident memory of a fresh interpreter after each
layer of what ``slotfleet worker`` imports, added one at a time.

    .venv/bin/python -m bench.worker_imports            # 7 runs per step (~10 s)
    .venv/bin/python -m bench.worker_imports --no-doc

Each step is a new ``python -c`` process that imports the step's modules (and the
steps' before it), then prints its VmRSS; the time is the process's whole life as the
harness sees it (spawn to exit), the median of ``--runs``. Writes
bench/results/worker_imports-*.json and the "worker-imports" section of
docs/benchmarks.md. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import REPO, command_line, machine_facts, warm_up, write_doc_section, write_json

#: (what the step adds, the Python it runs), cumulative.
STEPS = [
    ("Python itself", "pass"),
    ("asyncio", "import asyncio"),
    ("psycopg and psycopg_pool (libpq, the type adapters)", "import psycopg, psycopg_pool"),
    ("prometheus_client", "import prometheus_client"),
    ("the whole worker command (`slotfleet worker`'s modules, parsed arguments)",
     "from slotfleet.cli.main import build_parser\n"
     "build_parser(['worker']).parse_args(['worker', '--queue', 'q:async:5'])\n"
     "import slotfleet.worker.worker, slotfleet.store.postgres\n"
     "import slotfleet.worker.executors.async_"),
    ("not in a worker: the pydantic models of jobs (what a client that enqueues loads)",
     "import slotfleet.models.jobs"),
]  # fmt: skip

_PRINT_RSS = (
    "\nfor _l in open('/proc/self/status'):\n"
    "    if _l.startswith('VmRSS:'): print(int(_l.split()[1]))\n"
)


def measure(code: str, runs: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    times, rss = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", code + _PRINT_RSS],
            env=env, cwd=REPO, capture_output=True, text=True, check=True,
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
        rss.append(int(out.stdout.split()[-1]) / 1024)
    return {"seconds": statistics.median(times), "rss_mib": statistics.median(rss)}


def render(rows: list[dict[str, Any]], facts: dict[str, Any], command: str, runs: int) -> str:
    lines = [
        "| step (each adds to the ones above) | process life (ms) | + ms | VmRSS (MiB) | + MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    before: dict[str, Any] | None = None
    for row in rows:
        dt = row["seconds"] - before["seconds"] if before else row["seconds"]
        dm = row["rss_mib"] - before["rss_mib"] if before else row["rss_mib"]
        lines.append(
            f"| {row['step']} | {row['seconds'] * 1000:.0f} | {dt * 1000:+.0f} |"
            f" {row['rss_mib']:.1f} | {dm:+.1f} |"
        )
        before = row
    return "\n".join(
        [
            "## What a worker imports before its first job",
            "",
            f"Command (from the repository root): `{command}`",
            "",
            f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs"
            f" · Python {facts['python']} · load average at start {facts['loadavg_start']}",
            "",
            f"A fresh `python -c` per step importing that step's modules and those above it;"
            f" the process's life from spawn to exit as the harness sees it, and its VmRSS at"
            f" the end; median of {runs} runs. The row of the whole worker command is what"
            " `slotfleet worker` loads before it connects (the `.pyc` files compiled"
            " beforehand); the row after it adds what a worker no longer loads.",
            "",
            *lines,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=7, help="processes per step (median)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = p.parse_args(argv)
    warm_up()
    facts = machine_facts(None)
    rows: list[dict[str, Any]] = []
    code = ""
    for step, add in STEPS:
        code = f"{code}\n{add}" if code else add
        rows.append({"step": step, **measure(code, args.runs)})
        print(rows[-1], flush=True)
    command = command_line()
    path = write_json("worker_imports", {"facts": facts, "rows": rows, "command": command})
    text = render(rows, facts, command, args.runs)
    print(text)
    print(f"\nresults: {path}")
    if not args.no_doc:
        write_doc_section("worker-imports", text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
