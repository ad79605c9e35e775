"""Pickup latency on the embedded SQLite store, one commit against another, in one run.

    .venv/bin/python -m bench.sqlite_pickup [--runs N] [--samples N] TREE [TREE ...]

TREE is a directory holding a ``slotfleet`` package (``.`` for the working tree, or a
``git worktree`` of another commit). For each run and each TREE in turn (A B A B ...) it
runs ``bench.scenarios.pickup`` on a fresh SQLite file: one ``slotfleet worker`` process
imported from TREE (async x100, polling interval 1 s), and this process enqueuing one
no-op job at a time through its own connection, as ``slotfleet enqueue`` would. Prints
p50/p95/p99 of ``started_at - created_at`` per run and the median per tree, and writes
bench/results/sqlite-pickup-*.json and the "sqlite-pickup" section of docs/benchmarks.md
(``--no-doc`` to skip). Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
from typing import Any

from bench import scenarios
from bench.common import (
    command_line,
    fmt,
    machine_facts,
    median_range,
    write_doc_section,
    write_json,
)
from bench.drivers import SlotfleetDriver

QUANTILES = ("p50_ms", "p95_ms", "p99_ms")


def describe(tree: str) -> str:
    rev = subprocess.run(
        ["git", "-C", tree, "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()
    return rev or tree


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--samples", type=int, default=100, help="pickup samples per run")
    p.add_argument("--no-doc", action="store_true")
    p.add_argument("trees", nargs="+")
    args = p.parse_args(argv)
    trees = [os.path.abspath(t) for t in args.trees]
    labels = {t: describe(t) for t in trees}
    results: dict[str, list[dict[str, Any]]] = {t: [] for t in trees}
    for run in range(args.runs):
        for tree in trees:
            driver = SlotfleetDriver(None, tree=tree)
            try:
                res = scenarios.pickup(driver, None, samples=args.samples)
            finally:
                driver.close()
            results[tree].append(res)
            figures = " ".join(f"{q} {res[q]:.1f}" for q in QUANTILES)
            print(f"run {run + 1} {labels[tree]}: {figures} ({res['samples']} samples)")
    rows = ["| figure | " + " | ".join(f"`{labels[t]}`" for t in trees) + " |"]
    rows.append("|---" * (len(trees) + 1) + "|")
    for q in QUANTILES:
        cells = []
        for tree in trees:
            med, lo, hi = median_range([r[q] for r in results[tree]])
            cells.append(f"{fmt(med, 1)} ({fmt(lo, 1)}-{fmt(hi, 1)})")
        rows.append(f"| pickup latency {q[:3]}, idle worker (ms) | " + " | ".join(cells) + " |")
    table = "\n".join(rows)
    print(table)
    facts = machine_facts(None)
    write_json("sqlite-pickup", {"facts": facts, "trees": labels, "results": results})
    if not args.no_doc:
        body = (
            f"### SQLite pickup latency across processes ({facts['date']})\n\n"
            f"`{command_line()}`\n\n"
            f"{args.runs} run(s) of {args.samples} samples per tree, interleaved; each cell "
            "is the median with the range in brackets. One `slotfleet worker` process "
            "(async x100, polling interval 1 s) on a fresh SQLite file; jobs enqueued one at "
            "a time, about 50 ms apart, from another process's connection. A TREE other "
            "than `.` is a `git worktree add TREE REV` of the commit its column names.\n\n" + table
        )
        write_doc_section("sqlite-pickup", body)


if __name__ == "__main__":
    main()
