"""slotfleet's own figures (issues 2 and 14): enqueue throughput (building the jobs
included, and with the jobs built beforehand), drain throughput per executor with one
and two worker processes, pickup latency on an idle worker, drain at a large backlog
(200k; with ``--large``, a million), spawn -> first job started, worker CPU per 10k
jobs, and worker memory (idle, and peak while draining), on a throwaway PostgreSQL and
on SQLite.

    .venv/bin/python -m bench.core            # the default run (a few minutes)
    .venv/bin/python -m bench.core --quick    # smoke run (about a minute)
    .venv/bin/python -m bench.core --large    # adds the 1M-job backlog (about 3 more min)

Writes bench/results/core-*.json and the "core" section of docs/benchmarks.md. Each
figure is the median of ``--runs`` runs, with the range. Not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import pg as pgmod
from bench import scenarios
from bench.common import (
    TARGETS,
    command_line,
    cpu_per_10k,
    fmt,
    loadavg,
    machine_facts,
    median_range,
    warm_up,
    write_doc_section,
    write_json,
)
from bench.drivers import SlotfleetDriver, slotfleet_cli_available

#: (executor kind, concurrency per worker) as in the issue.
EXECUTORS = [("async", 100), ("threads", 16), ("processes", 2)]

#: Rows of the million-job backlog (``--large``).
LARGE = 1_000_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median, range)")
    p.add_argument("--jobs", type=int, default=10_000, help="enqueue size and drain backlog")
    p.add_argument("--big", type=int, default=200_000, help="large backlog (async, postgres)")
    p.add_argument("--big-runs", type=int, default=1, help="runs of the large backlog")
    p.add_argument("--large", action="store_true", help=f"also drain a {LARGE:,}-job backlog")
    p.add_argument("--idle-settle", type=float, default=5.0, help="seconds an idle worker idles")
    p.add_argument("--pickups", type=int, default=200, help="pickup samples per run")
    p.add_argument("--backends", default="postgres,sqlite", help="comma-separated")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--from-json", metavar="FILE", help="re-render the doc from a result")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.jobs, args.big, args.big_runs, args.pickups = 1, 2_000, 20_000, 1, 40
        args.idle_settle = 2.0
    return args


def run_backend(
    backend: str, pg: pgmod.Postgres | None, args: argparse.Namespace
) -> list[dict[str, Any]]:
    driver = SlotfleetDriver(pg if backend == "postgres" else None)
    out: list[dict[str, Any]] = []

    def record(result: dict[str, Any], run: int) -> None:
        result.update(backend=backend, run=run, loadavg=loadavg())
        out.append(result)
        brief = {k: result.get(k) for k in ("scenario", "kind", "workers", "backlog")}
        figure = result.get("jobs_per_s") or result.get("p50_ms")
        print(f"  {backend:8} {brief} -> {figure}", flush=True)

    try:
        for run in range(args.runs):
            record(scenarios.enqueue(driver, pg, n=args.jobs, batch=1000), run)
            record(scenarios.enqueue_built(driver, pg, n=args.jobs, batch=1000), run)
            record(scenarios.idle(driver, pg, settle=args.idle_settle), run)
            for kind, conc in EXECUTORS:
                for workers in (1, 2):
                    res = scenarios.drain(
                        driver, pg, backlog=args.jobs, kind=kind, concurrency=conc,
                        workers=workers, timeout=args.timeout,
                    )  # fmt: skip
                    record(res, run)
            record(scenarios.pickup(driver, pg, samples=args.pickups), run)
        if backend == "postgres":
            sizes = [args.big] + ([LARGE] if args.large else [])
            for run in range(args.big_runs):
                for size in sizes:
                    res = scenarios.drain(
                        driver, pg, backlog=size, kind="async", concurrency=100,
                        workers=1, timeout=max(args.timeout, 600 if size < LARGE else 1800),
                    )  # fmt: skip
                    record(res, run)
    finally:
        driver.close()
    return out


def _cell(values: list[float], digits: int = 0) -> str:
    med, lo, hi = median_range(values)
    if len(values) <= 1 or lo == hi:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(lo, digits)}-{fmt(hi, digits)})"


def _pick(results: list[dict[str, Any]], backend: str, key: str, **match: Any) -> list[float]:
    return [
        float(r[key])
        for r in results
        if r["backend"] == backend
        and all(r.get(k) == v for k, v in match.items())
        and r.get(key) is not None
    ]


def med(values: list[float]) -> float:
    return median_range(values)[0]


def render(
    results: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace, command: str
) -> str:
    backends = [b for b in ("postgres", "sqlite") if any(r["backend"] == b for r in results)]
    rows: list[tuple[str, list[str], str, str]] = []

    def verdict(value: float, target: float, higher: bool) -> str:
        if value != value:
            return "-"
        return "met" if (value >= target if higher else value <= target) else "missed"

    enq = {b: _pick(results, b, "jobs_per_s", scenario="enqueue") for b in backends}
    rows.append((f"enqueue {args.jobs:,} no-op jobs, batches of 1,000 (jobs/s)",
                 [_cell(enq[b]) for b in backends], "≥ 40,000",
                 verdict(med(enq.get("postgres", [])), TARGETS["enqueue"], True)))  # fmt: skip
    built = {b: _pick(results, b, "jobs_per_s", scenario="enqueue_built") for b in backends}
    rows.append((f"enqueue {args.jobs:,}, batches of 1,000, jobs built beforehand (jobs/s)",
                 [_cell(built[b]) for b in backends], "≥ 100,000",
                 verdict(med(built.get("postgres", [])), TARGETS["enqueue_built"],
                         True)))  # fmt: skip
    for kind, conc in EXECUTORS:
        for workers in (1, 2):
            vals = {
                b: _pick(results, b, "jobs_per_s", scenario="drain", kind=kind,
                         workers=workers, backlog=args.jobs)
                for b in backends
            }  # fmt: skip
            target = TARGETS.get(kind if workers == 1 else f"{kind}{workers}")
            tgt = f"≥ {target:,.0f}" if target else ""
            ver = verdict(med(vals.get("postgres", [])), target, True) if tgt and target else ""
            label = f"drain {args.jobs:,}, {kind} x{conc}, {workers} worker{'s' * (workers > 1)}"
            rows.append((label + " (jobs/s)", [_cell(vals[b]) for b in backends], tgt, ver))
    small = med(_pick(results, "postgres", "jobs_per_s", scenario="drain", kind="async",
                      workers=1, backlog=args.jobs))  # fmt: skip
    for size in (args.big, LARGE):
        big = _pick(results, "postgres", "jobs_per_s", scenario="drain", backlog=size)
        if not big:
            continue
        ratio = med(big) / small if small else float("nan")
        rows.append((f"drain {size:,}, async x100, 1 worker (jobs/s)",
                     [_cell(big)] + ["not run"] * (len(backends) - 1),
                     "≥ 15,000, flat within 10 %",
                     f"{verdict(med(big), TARGETS['async'], True)};"
                     f" {ratio:.2f}x the {args.jobs:,} rate"
                     f" ({'flat' if ratio >= 0.9 else 'not flat'})"))  # fmt: skip
    starts = {b: _pick(results, b, "spawn_to_first_start_s", scenario="drain", kind="async",
                       workers=1, backlog=args.jobs) for b in backends}  # fmt: skip
    rows.append(("spawn -> first job started, async worker (s)",
                 [_cell(starts[b], 3) for b in backends], "≤ 0.15",
                 verdict(med(starts.get("postgres", [])), TARGETS["start"], False)))  # fmt: skip

    def jobs_cpu(backend: str, scenario: str) -> list[float]:
        idle_cpu = _pick(results, backend, "cpu_s", scenario="idle")
        drains = [r for r in results if r["backend"] == backend and r["scenario"] == scenario
                  and r["kind"] == "async" and r["workers"] == 1 and r["backlog"] == args.jobs
                  and r.get("cpu_s") is not None]  # fmt: skip
        per = (cpu_per_10k(r["cpu_s"], idle_cpu, r["done"]) for r in drains)
        return [c for c in per if c is not None]

    cpu = {b: jobs_cpu(b, "drain") for b in backends}
    rows.append((f"worker CPU per 10k no-op jobs, async (s; a {args.jobs:,} drain's CPU less"
                 " an idle worker's)", [_cell(cpu[b], 2) for b in backends], "≤ 0.5",
                 verdict(med(cpu.get("postgres", [])), TARGETS["cpu"], False)))  # fmt: skip
    rows.append((f"worker CPU, idle worker's whole life ({args.idle_settle:g} s idle) (s)",
                 [_cell(_pick(results, b, "cpu_s", scenario="idle"), 2) for b in backends],
                 "", ""))  # fmt: skip
    rows.append((f"worker RSS, idle ({args.idle_settle:g} s after start; MiB, VmRSS)",
                 [_cell(_pick(results, b, "idle_rss_mib", scenario="idle"), 1)
                  for b in backends], "", ""))  # fmt: skip
    for q, key in (("p50", "p50_ms"), ("p99", "p99_ms")):
        vals = {b: _pick(results, b, key, scenario="pickup") for b in backends}
        rows.append((f"pickup latency {q}, idle worker (ms)",
                     [_cell(vals[b], 2) for b in backends], f"≤ {TARGETS[q]:g}",
                     verdict(med(vals.get("postgres", [])), TARGETS[q], False)))  # fmt: skip
    rss = {b: _pick(results, b, "peak_rss_mib", scenario="drain", kind="async", workers=1,
                    backlog=args.jobs) for b in backends}  # fmt: skip
    rows.append(("worker peak RSS, async drain (MiB, VmHWM)",
                 [_cell(rss[b], 1) for b in backends], "≤ 40",
                 verdict(med(rss.get("postgres", [])), TARGETS["rss"], False)))  # fmt: skip
    for kind, _ in EXECUTORS[1:]:
        vals = {b: _pick(results, b, "peak_rss_mib", scenario="drain", kind=kind, workers=1,
                         backlog=args.jobs) for b in backends}  # fmt: skip
        rows.append((f"worker peak RSS, {kind} drain (MiB; main process only)",
                     [_cell(vals[b], 1) for b in backends], "", ""))  # fmt: skip
    stm_enq = _pick(results, "postgres", "statements_per_job", scenario="enqueue")
    stm_drain = _pick(results, "postgres", "statements_per_job", scenario="drain", kind="async",
                      workers=1, backlog=args.jobs)  # fmt: skip
    if "postgres" in backends:
        rows.append(("statements per job, enqueue / async drain (pg_stat_statements)",
                     [f"{fmt(med(stm_enq), 3)} / {fmt(med(stm_drain), 3)}"]
                     + ["-"] * (len(backends) - 1), "", ""))  # fmt: skip

    head = "| figure | " + " | ".join(backends) + " | target (postgres) | postgres vs target |"
    sep = "|---|" + "---:|" * len(backends) + "---|---|"
    table = [head, sep] + [
        f"| {label} | " + " | ".join(cells) + f" | {tgt} | {ver} |"
        for label, cells, tgt, ver in rows
    ]
    worker = "`slotfleet worker`" if slotfleet_cli_available() else "`python -m bench.sf_worker`"
    return "\n".join(
        [
            "## slotfleet core figures",
            "",
            f"Command (from the repository root): `{command}`",
            "",
            f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs ({facts['cpu']})"
            f" · Python {facts['python']} · PostgreSQL {facts['postgres']}"
            f" · load average at start {facts['loadavg_start']}, at end {facts['loadavg_end']}"
            " (the benchmark itself keeps about two processes busy: worker and PostgreSQL or"
            " SQLite; per-run load averages are in the JSON)",
            "",
            f"Each cell is the median of {args.runs} run(s) with the range in brackets. Jobs"
            " are no-ops (`bench/tasks.py`). Workers are separate processes started with"
            f" {worker} `--burst --log-level WARNING`; drain throughput is backlog / (last"
            " `completed_at` - first `started_at`) read from the database, so process start-up"
            " is not counted. Pickup is `started_at - created_at` of jobs enqueued one at a"
            f" time, about 50 ms apart, on an idle async worker ({args.pickups} per run)."
            " Spawn -> first start is the first `started_at` less the time the worker"
            " process was spawned. CPU is user + system time of the worker processes (and"
            " their pool children) from spawn to exit (`RUSAGE_CHILDREN`); an idle worker's"
            f" whole life ({args.idle_settle:g} s idle on an empty queue, then SIGTERM) is"
            " subtracted from a drain's to give what the jobs cost. Idle RSS is VmRSS after"
            ' that idle time; peak RSS is VmHWM sampled every 0.1 s. Enqueue "jobs built'
            ' beforehand" times `App.enqueue_many` alone on `Job` objects made before the'
            " clock starts."
            " PostgreSQL runs on loopback with fsync off (`bench/pg.py`, the test fixture's"
            " server); SQLite is a fresh file per run. Targets apply to PostgreSQL.",
            "",
            *table,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        facts, results, path = saved["facts"], saved["results"], Path(args.from_json)
        older = {"idle_settle": 5.0, "large": False}  # results saved before issue 14
        args = argparse.Namespace(**{**older, **saved["args"], "no_doc": args.no_doc})
        text = render(results, facts, args, facts.get("command", ".venv/bin/python -m bench.core"))
    else:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        warm_up()
        started = time.monotonic()
        results = []
        with pgmod.running() as pg:
            facts = machine_facts(pg.version)
            print(f"PostgreSQL {pg.version} on port {pg.port}; slotfleet CLI worker: "
                  f"{slotfleet_cli_available()}", flush=True)  # fmt: skip
            for backend in backends:
                results += run_backend(backend, pg, args)
        facts["loadavg_end"] = loadavg()
        facts["seconds"] = round(time.monotonic() - started, 1)
        facts["command"] = command_line()
        path = write_json("core", {"facts": facts, "args": vars(args), "results": results})
        text = render(results, facts, args, facts["command"])
    print(text)
    print(f"\nresults: {path}")
    if not args.no_doc:
        write_doc_section("core", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
