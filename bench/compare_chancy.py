"""slotfleet against Chancy (issue 6, item 1; issue 14's rows): the same no-op work
through both, on one throwaway PostgreSQL, interleaved (slotfleet, Chancy, slotfleet,
Chancy, ...), each figure the median of ``--runs`` runs with its range, beside the target
where the issues set one (``bench.common.TARGETS``). Besides throughput, pickup, memory
and statements per job it reports what issue 14 added to ``bench.core``: enqueue with the
jobs built beforehand, spawn -> first job started, worker CPU per 10k jobs (a drain's CPU
less an idle worker's whole life) and an idle worker's RSS and CPU.

    python3 -m bench.compare_chancy            # default run (about 10-15 minutes)
    python3 -m bench.compare_chancy --quick    # smoke run (a couple of minutes)

Chancy is never a dependency of slotfleet: this script creates its own virtualenv
(``bench/.venv-chancy``, ignored by git), installs ``chancy``, ``matplotlib`` and this
repository (``pip install -e .``) there, and re-runs itself inside it. It writes
bench/results/compare_chancy-*.json, docs/img/compare_chancy.png and the "chancy"
section of docs/benchmarks.md (table, configuration, commands). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("SLOTFLEET_BENCH_VENV", REPO / "bench" / ".venv-chancy"))
VENV_PY = VENV / "bin" / "python"
#: What the benchmark virtualenv gets (pytest: the PostgreSQL fixture module imports it).
VENV_PACKAGES = ["chancy", "matplotlib", "pytest"]


def ensure_venv() -> None:
    """Create the benchmark virtualenv if needed and re-exec this script inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not VENV_PY.exists():
        print(f"creating {VENV} (chancy, matplotlib, slotfleet editable)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV_PY), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, *VENV_PACKAGES], check=True)
        subprocess.run([*pip, "-e", str(REPO)], check=True)
    os.chdir(REPO)
    os.execv(str(VENV_PY), [str(VENV_PY), "-m", "bench.compare_chancy", *sys.argv[1:]])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke test")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median, range)")
    p.add_argument("--jobs", type=int, default=10_000, help="enqueue size and drain backlog")
    p.add_argument("--big", type=int, default=200_000, help="large async backlog; 0 skips it")
    p.add_argument("--big-runs", type=int, default=1, help="runs of the large backlog")
    p.add_argument("--pickups", type=int, default=200, help="pickup samples per run")
    p.add_argument("--idle-settle", type=float, default=5.0, help="seconds an idle worker idles")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per scenario")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs or the chart")
    p.add_argument("--from-json", metavar="FILE", help="re-render docs and chart from a result")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.jobs, args.big, args.big_runs, args.pickups = 1, 2_000, 0, 1, 40
        args.idle_settle = 2.0
    return args


#: (label, scenario kwargs) in table order; drains are (kind, concurrency, workers).
DRAINS = [
    ("async", 100, 1),
    ("threads", 16, 1),
    ("processes", 2, 1),
    ("async", 100, 2),
    ("threads", 16, 2),
]


def key_of(result: dict[str, Any]) -> str:
    if result["scenario"] == "drain":
        w = result["workers"]
        return (
            f"drain {result['backlog']:,}, {result['kind']} x{result['concurrency']},"
            f" {w} worker{'s' * (w > 1)}"
        )
    return str(result["scenario"])


def run_all(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from bench import pg as pgmod
    from bench import scenarios
    from bench.common import loadavg, machine_facts, warm_up
    from bench.drivers import ChancyDriver, Driver, SlotfleetDriver

    results: list[dict[str, Any]] = []
    warm_up()
    with pgmod.running() as pg:
        facts = machine_facts(pg.version)
        drivers: list[Driver] = [SlotfleetDriver(pg), ChancyDriver(pg)]

        def each(name: str, run: int, fn: Any) -> None:
            for driver in drivers:  # interleaved: A B for every scenario of every run
                res = fn(driver)
                res.update(lib=driver.name, run=run, key=name if name else key_of(res),
                           loadavg=loadavg())  # fmt: skip
                results.append(res)
                figure = res.get("jobs_per_s") or res.get("p50_ms") or res.get("idle_rss_mib")
                print(f"  run {run} {driver.name:9} {res['key']} -> {figure}", flush=True)

        try:
            for run in range(args.runs):
                each("enqueue", run, lambda d: scenarios.enqueue(d, pg, n=args.jobs, batch=1000))
                each(
                    "enqueue_built",
                    run,
                    lambda d: scenarios.enqueue_built(d, pg, n=args.jobs, batch=1000),
                )
                each("idle", run, lambda d: scenarios.idle(d, pg, settle=args.idle_settle))
                for kind, conc, workers in DRAINS:
                    each("", run, lambda d, k=kind, c=conc, w=workers: scenarios.drain(
                        d, pg, backlog=args.jobs, kind=k, concurrency=c, workers=w,
                        timeout=args.timeout))  # fmt: skip
                each("pickup", run, lambda d: scenarios.pickup(d, pg, samples=args.pickups))
            for run in range(args.big_runs if args.big else 0):
                each("", run, lambda d: scenarios.drain(
                    d, pg, backlog=args.big, kind="async", concurrency=100, workers=1,
                    timeout=max(args.timeout, 900)))  # fmt: skip
        finally:
            for driver in drivers:
                driver.close()
    facts["loadavg_end"] = loadavg()
    facts["chancy"] = metadata.version("chancy")
    return results, facts


def _target(key: str, higher: bool) -> str:
    """A row's target as text (``bench.common.TARGETS``), "" for none."""
    from bench.common import TARGETS

    value = TARGETS.get(key)
    if value is None:
        return ""
    return f"{'≥' if higher else '≤'} {f'{value:,.0f}' if value >= 100 else f'{value:g}'}"


#: (row label, result key, field, digits, higher is better, target)
Row = tuple[str, str, str, int, bool, str]


def rows_for(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = [
        (f"enqueue {args.jobs:,} no-op jobs, batches of 1,000 (jobs/s)", "enqueue",
         "jobs_per_s", 0, True, _target("enqueue", True)),
        (f"enqueue {args.jobs:,}, batches of 1,000, jobs built beforehand (jobs/s)",
         "enqueue_built", "jobs_per_s", 0, True, _target("enqueue_built", True)),
    ]  # fmt: skip
    for kind, conc, workers in DRAINS:
        label = key_of({"scenario": "drain", "backlog": args.jobs, "kind": kind,
                        "concurrency": conc, "workers": workers})  # fmt: skip
        target = _target(kind if workers == 1 else f"{kind}{workers}", True)
        rows.append((label + " (jobs/s)", label, "jobs_per_s", 0, True, target))
    if args.big:
        label = key_of({"scenario": "drain", "backlog": args.big, "kind": "async",
                        "concurrency": 100, "workers": 1})  # fmt: skip
        rows.append((label + " (jobs/s)", label, "jobs_per_s", 0, True, _target("async", True)))
    for workers in (1, 2):
        label = key_of({"scenario": "drain", "backlog": args.jobs, "kind": "async",
                        "concurrency": 100, "workers": workers})  # fmt: skip
        rows.append((label + ", wall clock (jobs/s)", label, "wall_jobs_per_s", 0, True, ""))
    if args.big:
        label = key_of({"scenario": "drain", "backlog": args.big, "kind": "async",
                        "concurrency": 100, "workers": 1})  # fmt: skip
        rows.append((label + ", wall clock (jobs/s)", label, "wall_jobs_per_s", 0, True, ""))
    for q in ("p50", "p95", "p99"):
        rows.append((f"pickup latency {q}, idle worker (ms)", "pickup", f"{q}_ms", 2, False,
                     _target(q, False)))  # fmt: skip
    async1 = key_of({"scenario": "drain", "backlog": args.jobs, "kind": "async",
                     "concurrency": 100, "workers": 1})  # fmt: skip
    idle = f"{args.idle_settle:g} s"
    rows += [
        ("spawn -> first job started, async worker (s)", async1, "spawn_to_first_start_s", 3,
         False, _target("start", False)),
        (f"worker CPU per 10k no-op jobs, async (s; a {args.jobs:,} drain's CPU less an idle"
         " worker's)", async1, "cpu_per_10k_s", 2, False, _target("cpu", False)),
        (f"worker CPU, idle worker's whole life ({idle} idle) (s)", "idle", "cpu_s", 2, False,
         ""),
        (f"worker RSS, idle ({idle} after start; MiB, VmRSS)", "idle", "idle_rss_mib", 1,
         False, ""),
        ("worker peak RSS, async drain (MiB, VmHWM)", async1, "peak_rss_mib", 1, False,
         _target("rss", False)),
        ("worker peak RSS, threads drain (MiB)", async1.replace("async x100", "threads x16"),
         "peak_rss_mib", 1, False, ""),
        ("worker peak RSS, processes drain (MiB, main process)",
         async1.replace("async x100", "processes x2"), "peak_rss_mib", 1, False, ""),
        ("DB statements per job, enqueue", "enqueue", "statements_per_job", 3, False, ""),
        ("DB statements per job, async drain", async1, "statements_per_job", 3, False, ""),
        ("DB statements per job, threads drain", async1.replace("async x100", "threads x16"),
         "statements_per_job", 3, False, ""),
    ]  # fmt: skip
    return rows


def summarize(results: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    from bench.common import cpu_per_10k, median_range

    idle_cpu = {
        lib: [float(r["cpu_s"]) for r in results
              if r["lib"] == lib and r["key"] == "idle" and r.get("cpu_s") is not None]
        for lib in ("slotfleet", "chancy")
    }  # fmt: skip
    for r in results:  # derived: including start-up and the completions' write delay
        if r.get("wall_seconds"):
            r["wall_jobs_per_s"] = r["done"] / r["wall_seconds"]
        if r["scenario"] == "drain" and r.get("cpu_s") is not None:
            r["cpu_per_10k_s"] = cpu_per_10k(r["cpu_s"], idle_cpu[r["lib"]], r["done"])
    table = []
    for label, key, field, digits, higher, target in rows_for(args):
        entry: dict[str, Any] = {"label": label, "digits": digits, "higher": higher,
                                 "target": target}  # fmt: skip
        for lib in ("slotfleet", "chancy"):
            vals = [float(r[field]) for r in results
                    if r["lib"] == lib and r["key"] == key
                    and r.get(field) is not None]  # fmt: skip
            entry[lib] = median_range(vals)
            entry[lib + "_n"] = len(vals)
            entry[lib + "_timeouts"] = sum(
                1 for r in results if r["lib"] == lib and r["key"] == key and r.get("timed_out")
            )
        table.append(entry)
    return table


def render(table: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace,
           command: str) -> str:  # fmt: skip
    from bench.common import fmt

    def cell(entry: dict[str, Any], lib: str) -> str:
        med, lo, hi = entry[lib]
        d = entry["digits"]
        text = fmt(med, d) if entry[lib + "_n"] <= 1 or lo == hi else (
            f"{fmt(med, d)} ({fmt(lo, d)}-{fmt(hi, d)})")  # fmt: skip
        if entry[lib + "_timeouts"]:
            text += f" ⚠ {entry[lib + '_timeouts']} timed out"
        return text

    lines = [
        "| figure | slotfleet | Chancy | slotfleet ÷ Chancy | better | target |",
        "|---|---:|---:|---:|---|---|",
    ]
    for e in table:
        a, b = e["slotfleet"][0], e["chancy"][0]
        ratio = a / b if a == a and b == b and b else float("nan")
        better = "-"
        if ratio == ratio and abs(ratio - 1) < 0.05:
            better = "even"
        elif ratio == ratio:
            better = "slotfleet" if (ratio > 1) == e["higher"] else "Chancy"
        lines.append(f"| {e['label']} | {cell(e, 'slotfleet')} | {cell(e, 'chancy')} |"
                     f" {fmt(ratio, 2)}x | {better} | {e.get('target', '')} |")  # fmt: skip
    big = f"{args.big:,} (async, {args.big_runs} run(s))" if args.big else "skipped"
    return "\n".join(
        [
            "## slotfleet vs Chancy",
            "",
            f"Command (from the repository root): `{command}`",
            "",
            "It creates `bench/.venv-chancy` on first use (`python3 -m venv bench/.venv-chancy &&"
            f" bench/.venv-chancy/bin/pip install {' '.join(VENV_PACKAGES)} && "
            "bench/.venv-chancy/bin/pip install -e .`) and re-runs itself there; Chancy is not a"
            " dependency of slotfleet.",
            "",
            f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs ({facts['cpu']})"
            f" · Python {facts['python']} · PostgreSQL {facts['postgres']} (loopback, fsync off)"
            f" · Chancy {facts['chancy']} · load average at start {facts['loadavg_start']}, at end"
            f" {facts['loadavg_end']} (the benchmark itself keeps about two processes busy:"
            " worker and PostgreSQL; more than that means other work shared the machine, and"
            " the per-run load averages are in the JSON)",
            "",
            f"Each cell is the median of {args.runs} run(s) (range in brackets); the two libraries"
            " ran interleaved (slotfleet, Chancy, slotfleet, Chancy, ...) on one PostgreSQL, each"
            f" run on a freshly created database. Backlog {args.jobs:,}; large backlog {big};"
            f" {args.pickups} pickup samples per run. Targets (for slotfleet) are issue 2's and"
            " issue 14's.",
            "",
            *lines,
            "",
            "![slotfleet vs Chancy](img/compare_chancy.png)",
            "",
            "How each side was run:",
            "",
            "- Jobs are no-ops (`bench/tasks.py`: an `async def` for the async executor, a plain"
            " function otherwise; slotfleet's are their `@job` twins, since its workers run only"
            " registered functions by default), enqueued with each library's batch API in"
            " batches of 1,000 (slotfleet `App.enqueue_many`, Chancy"
            " `Chancy.push_many(batch_size=1000)`), building"
            ' the job objects included in the enqueue time; "jobs built beforehand" times the'
            " same calls on job objects (slotfleet `Job`, Chancy `Job`) made before the clock"
            " starts.",
            "- Workers are separate processes: `slotfleet worker --queue bench:KIND:N --burst"
            " --log-level WARNING`, and `python -m bench.chancy_worker` (`chancy.Worker(chancy)`"
            " in a `Chancy(dsn, notifications=True)` app, default plugins kept, Chancy's logger"
            " at WARNING because at INFO it logs a line per job). Chancy has no burst mode: its"
            " worker is stopped with SIGTERM once the database shows every job finished.",
            "- Chancy's queue is declared before its worker starts as `Queue('bench',"
            " concurrency=N, executor=<AsyncExecutor|ThreadedExecutor|ProcessExecutor>,"
            " polling_interval=1, eager_polling=True)` (1 s is slotfleet's default polling"
            " interval), and its `default` queue is declared first with `tags=set()` so that no"
            " worker serves it: `Worker.start()` declares `default` without upsert, which would"
            " otherwise start an extra process pool in every worker.",
            "- Executors use each library's defaults otherwise. Chancy's `ProcessExecutor` runs a"
            " `spawn` pool that replaces each child after 100 jobs (`maximum_jobs_per_worker=100`)"
            " and tracks every job through a `multiprocessing.Manager` dict; with no-op jobs that"
            " is what its processes figure measures. slotfleet's process pool keeps its children.",
            "- Drain throughput = jobs / (last `completed_at` - first `started_at`) from the"
            " database, so process start-up is not counted. Chancy writes completions in"
            " batches about once a second; its `completed_at` is the time the job finished, not"
            ' the time the row was written, which favours Chancy in short runs. The "wall'
            ' clock" rows divide by the time from starting the worker processes to every job'
            " visibly finished: for slotfleet, its burst workers' exit (after their last"
            " completions are written); for Chancy, which has no burst mode, the database"
            " showing every job finished (polled every 0.25 s). Start-up and write delays are"
            " included for both.",
            "- Pickup latency = `started_at - created_at` (both the database server's clock) of"
            " jobs enqueued one at a time, about 50 ms apart, on an idle async worker.",
            "- Peak RSS is the worker process's VmHWM from /proc (sampled every 0.1 s; pool"
            " children not included). Statements per job = `sum(calls)` from"
            " `pg_stat_statements` for the measured role (the harness polls as another role),"
            " reset before the run, divided by the jobs; it includes BEGIN/COMMIT, heartbeats"
            " and polling during the run.",
            "- Spawn -> first job started = the first `started_at` (database clock) less the"
            " time the harness spawned the worker process, on the 10k async drain: interpreter"
            " start, imports, connecting, the first fetch.",
            "- CPU is user + system time of the worker processes (and the pool children they"
            " reap) from spawn to exit, read with `getrusage(RUSAGE_CHILDREN)` around the run."
            f" An idle worker runs {args.idle_settle:g} s on an empty queue and is stopped with"
            " SIGTERM (its whole life's CPU and its VmRSS at the end of the idle time are the"
            ' "idle" rows); CPU per 10k jobs is the 10k async drain\'s CPU less the median idle'
            " life's, per 10,000 jobs. Chancy's drains include the up to 0.25 s between its"
            " last completion and the harness noticing it (its worker idles meanwhile).",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ensure_venv()
    from bench.common import command_line, write_doc_section, write_json

    args = parse_args(argv)
    command = command_line().replace(
        str(VENV_PY.relative_to(REPO)) if VENV_PY.is_relative_to(REPO) else str(VENV_PY),
        "python3",
    )
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        facts, results, path = saved["facts"], saved["results"], Path(args.from_json)
        args = argparse.Namespace(**{"idle_settle": 5.0, **saved["args"], "no_doc": args.no_doc})
        command = facts.get("command", "python3 -m bench.compare_chancy")
        table = summarize(results, args)
    else:
        started = time.monotonic()
        results, facts = run_all(args)
        facts["seconds"] = round(time.monotonic() - started, 1)
        facts["command"] = command
        table = summarize(results, args)
        path = write_json("compare_chancy", {"facts": facts, "args": vars(args),
                                             "table": table, "results": results})  # fmt: skip
    text = render(table, facts, args, command)
    print(text)
    print(f"\nresults: {path} ({facts.get('seconds')} s)")
    if not args.no_doc:
        from bench.compare_chancy_chart import chart

        chart(table, facts)
        write_doc_section("chancy", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
