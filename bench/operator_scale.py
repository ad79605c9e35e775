"""How the operator scales with the number of Queues (issue 13's table): 10 -> 1,000 idle
Queues on the real control plane, one ``slotfleet operator`` with the chart's defaults.

Each size runs in a fresh cluster (``bench/operator_scale_env.py``: one PostgreSQL, the
Go-built etcd + kube-apiserver + kube-controller-manager, no node; the operator as the
chart's ServiceAccount with the chart's RBAC and default flags). N Queues share one
Secret (one DSN), ``autoscaling.mode: operator``, ``minReplicas: 0`` and no
``replicas`` (as a user writes them); nothing is queued, so no pod exists while idle.
The figures:

- **all Ready**: from the first create request to every Queue showing ``Ready=True``,
  ``StoreReachable=True`` and ``status.observedGeneration == metadata.generation``
  (``operator/status.py``: the Ready condition comes only from an observation — store
  read, Deployment read — and observedGeneration says the children of that generation
  were applied; either alone could be stale). The Queues are listed every
  ``--poll`` seconds, the figure's resolution. "created in" is how long the N create
  requests took (8 at a time).
- **operator RSS / CPU**: ``VmRSS`` at the end of the idle window and CPU (user +
  system, ``/proc/PID/stat``) over it, in % of one core.
- **API requests/s (idle)**: requests the API server dispatched for the operator's
  ServiceAccount over the idle window, from its own
  ``apiserver_flowcontrol_dispatched_requests_total`` under a FlowSchema matching only
  that ServiceAccount (priority level ``workload-low``, where a real cluster's built-in
  ``service-accounts`` schema puts it). Requests APF rejected are reported beside.
- **DB statements/s (idle)**: ``pg_stat_statements`` calls of the role the Queues' DSN
  logs in as (the operator is its only client while idle), reset at the window's start;
  BEGIN/COMMIT count as statements.
- **burst -> scale-up**: after the window, ``--burst-jobs`` jobs enqueued on one Queue
  (the store API); from the enqueue's commit to the Queue's ``spec.replicas`` above 0
  (a GET every 50 ms). ``--repeats`` Queues, median (min-max).
- **cancel -> in status**: one job enqueued and claimed (``Store.fetch`` as a worker
  would; no kubelet runs pods here), then ``request_cancel``; from the request to the
  job in ``status.cancellations``. ``--repeats`` other Queues, median (min-max).
- **restart -> observed**: the operator stopped (SIGTERM), every Queue paused in the job
  store while it is down, a new operator spawned; from the spawn to every Queue showing
  ``status.paused: true`` (the operator writes status only when it changed, so a change
  made while it was down is what proves a fresh observation of each Queue). "live in" is
  spawn -> kopf's liveness endpoint answering.

Each size has a wall-time budget (``--size-timeout``); a wait that runs out is reported
as ``>`` its bound. This is a benchmark, not a test: it asserts nothing; it writes JSON
to bench/results/ and the section "Operator at scale (issue 13): LABEL" of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client, config

from bench import pg as pgmod
from bench.common import (
    Deadline,
    loadavg,
    machine_facts,
    proc_status_kib,
    write_doc_section,
    write_json,
)
from bench.operator_scale_env import QUEUE_NAMESPACE, BenchCluster, OperatorRun
from bench.operator_scale_report import render, row_text
from slotfleet.models import Job
from slotfleet.store import open_store
from tests.kube.fixtures import KubeAdmin
from tests.kube.operator_helpers import GROUP, PLURAL, VERSION

Json = dict[str, Any]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--queues",
        default="10,100",
        help="comma-separated sizes (default 10,100; 1,000 takes ~20 min)",
    )
    p.add_argument("--idle-seconds", type=float, default=30.0, help="idle window (default 30)")
    p.add_argument(
        "--settle-seconds",
        type=float,
        default=10.0,
        help="wait after all Ready before the idle window (default 10)",
    )
    p.add_argument("--repeats", type=int, default=3, help="bursts and cancels per size")
    p.add_argument("--burst-jobs", type=int, default=8, help="jobs in a burst (default 8)")
    p.add_argument(
        "--poll", type=float, default=None, help="list period (default 0.25-2 s by size)"
    )
    p.add_argument(
        "--size-timeout",
        type=float,
        default=1800.0,
        help="wall-time budget per size (default 1800 s); each burst and cancel waits 60 s at"
        " most, the restart what is left",
    )
    p.add_argument("--label", default="before", help="section title suffix (default before)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = p.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.queues.split(",") if s.strip()]
    except ValueError:
        p.error(f"--queues: expected comma-separated integers, not {args.queues!r}")
    if not args.sizes or min(args.sizes) < args.repeats * 2:
        p.error(f"--queues: every size must be at least 2 x --repeats ({args.repeats * 2})")
    return args


def queue_name(index: int) -> str:
    return f"q{index:05d}"


def queue_body(name: str) -> Json:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Queue",
        "metadata": {"name": name},
        "spec": {
            "imports": ["examples.tasks"],
            "store": {"secretRef": {"name": "db", "key": "dsn"}},
            "executor": {"kind": "async", "concurrency": 4},
            "autoscaling": {"mode": "operator", "minReplicas": 0, "maxReplicas": 4},
        },
    }


def ready_condition(queue: Json) -> bool:
    """``Ready=True`` and ``StoreReachable=True``, of whatever generation."""
    status = queue.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return conditions.get("Ready") == "True" and conditions.get("StoreReachable") == "True"


def generation_observed(queue: Json) -> bool:
    status = queue.get("status") or {}
    return bool(status.get("observedGeneration") == queue["metadata"].get("generation"))


def is_ready(queue: Json) -> bool:
    """The bench's "Ready": the condition, and the children of this generation applied."""
    return ready_condition(queue) and generation_observed(queue)


class Kube:
    """The bench's own API client (admin; 16 connections for the parallel creates)."""

    def __init__(self, admin: KubeAdmin) -> None:
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(admin.kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = 16
        self.custom = client.CustomObjectsApi(client.ApiClient(configuration))

    def create(self, name: str) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, QUEUE_NAMESPACE, PLURAL, queue_body(name)
        )

    def queues(self) -> list[Json]:
        found = self.custom.list_namespaced_custom_object(GROUP, VERSION, QUEUE_NAMESPACE, PLURAL)
        assert isinstance(found, dict)
        return list(found["items"])

    def queue(self, name: str) -> Json:
        found = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, QUEUE_NAMESPACE, PLURAL, name
        )
        assert isinstance(found, dict)
        return found


def wait_all(
    kube: Kube,
    n: int,
    check: Callable[[Json], bool],
    period: float,
    bound: float,
    parts: Mapping[str, Callable[[Json], bool]] | None = None,
) -> tuple[float | None, int, dict[str, float]]:
    """Seconds until ``check`` holds for ``n`` Queues (from now), or ``None`` after
    ``bound`` seconds; how many it held for last; and when each of ``parts`` first held
    for all ``n`` (to see which part of ``check`` came last)."""
    start = time.monotonic()
    count = 0
    reached: dict[str, float] = {}
    while time.monotonic() - start < bound:
        queues = kube.queues()
        now = time.monotonic() - start
        for key, part in (parts or {}).items():
            if key not in reached and sum(1 for q in queues if part(q)) >= n:
                reached[key] = now
        count = sum(1 for q in queues if check(q))
        if count >= n:
            return now, count, reached
        time.sleep(period)
    return None, count, reached


def wait_one(check: Callable[[], bool], bound: float, period: float = 0.05) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if check():
            return time.monotonic() - start
        time.sleep(period)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (``/proc/PID/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float | None:
    kib = proc_status_kib(pid, "VmRSS")
    return kib / 1024 if kib is not None else None


async def _with_store(dsn: str, action: Callable[[Any], Any]) -> Any:
    store = open_store(dsn)
    await store.open()
    try:
        return await action(store)
    finally:
        await store.close()


def store_do(dsn: str, action: Callable[[Any], Any]) -> Any:
    return asyncio.run(_with_store(dsn, action))


#: The operator counts as settled after this long without an API request of its own.
QUIET_SECONDS = 5.0


def wait_quiet(cluster: BenchCluster, quiet: float, bound: float) -> float | None:
    """Seconds until the operator made no API request for ``quiet`` seconds (the end of
    its handling of the creations: kopf's own writes, the Deployments' first status), so
    the idle window measures the steady state; ``None`` if it never was within ``bound``
    (the idle window is measured anyway, and shows it)."""
    started = time.monotonic()
    while time.monotonic() - started < bound:
        before = cluster.operator_requests()["dispatched"]
        time.sleep(quiet)
        if cluster.operator_requests()["dispatched"] == before:
            return time.monotonic() - started
    return None


def idle_window(cluster: BenchCluster, op: OperatorRun, seconds: float) -> Json:
    assert cluster.pg is not None
    before = cluster.operator_requests()
    pgmod.reset_statements(cluster.pg)
    cpu0, t0 = cpu_seconds(op.pid), time.monotonic()
    time.sleep(seconds)
    statements = pgmod.count_statements(cluster.pg)
    cpu1, t1 = cpu_seconds(op.pid), time.monotonic()
    after = cluster.operator_requests()
    delta = {key: after[key] - before[key] for key in after}
    wall = t1 - t0
    return {
        "rss_mib": rss_mib(op.pid),
        "cpu_pct": (cpu1 - cpu0) / wall * 100,
        "api_rps": delta["dispatched"] / wall,
        "api_rejected": delta["rejected"],
        "apf_wait_ms": delta["wait_sum"] / delta["wait_count"] * 1000
        if delta["wait_count"]
        else None,
        "db_sps": statements / wall,
        "idle_wall_s": wall,
    }


def burst(kube: Kube, dsn: str, name: str, jobs: int, bound: float) -> float | None:
    batch = [
        Job(func="examples.tasks:send_email", queue=name, kwargs={"to": f"b{i}", "seconds": 1})
        for i in range(jobs)
    ]
    store_do(dsn, lambda s: s.enqueue(batch))
    return wait_one(lambda: int(kube.queue(name)["spec"].get("replicas") or 0) > 0, bound)


def cancel(kube: Kube, dsn: str, name: str, bound: float) -> float | None:
    async def claim_and_cancel(store: Any) -> int:
        (job,) = await store.enqueue([Job(func="examples.tasks:send_email", queue=name)])
        claimed = await store.fetch(name, "bench-holder", 1, 600.0, claim=uuid.uuid4().hex)
        assert [c.id for c in claimed] == [job.id], claimed
        await store.request_cancel(job.id)
        return int(job.id)

    job_id = store_do(dsn, claim_and_cancel)

    def listed() -> bool:
        entries = (kube.queue(name).get("status") or {}).get("cancellations") or []
        return any(int(e.get("job", -1)) == job_id for e in entries)

    return wait_one(listed, bound)


def restart(
    kube: Kube, cluster: BenchCluster, op: OperatorRun, n: int, period: float, bound: float
) -> tuple[OperatorRun, Json]:
    """Stop the operator, pause every Queue in the store, spawn a new one; time from the
    spawn to every Queue's ``status.paused``."""
    op.stop()

    async def pause_all(store: Any) -> None:
        for i in range(n):
            await store.pause_queue(queue_name(i))

    store_do(cluster.dsn, pause_all)
    new = cluster.start_operator("restarted")
    live = new.wait_live()
    observed, count, _ = wait_all(
        kube, n, lambda q: (q.get("status") or {}).get("paused") is True, period, bound
    )
    total = time.monotonic() - new.started
    return new, {
        "live_s": live,
        "restart_s": total if observed is not None else None,
        "restart_bound_s": total,
        "restart_count": count,
    }


def median_of(values: list[float | None]) -> Json:
    done = sorted(v for v in values if v is not None)
    return {
        "values": values,
        "median": statistics.median(done) if done else None,
        "min": done[0] if done else None,
        "max": done[-1] if done else None,
        "missed": sum(1 for v in values if v is None),
    }


def run_size(args: argparse.Namespace, n: int) -> Json:
    """One size in a fresh cluster; every figure of the row, or as many as the budget
    allowed (``error`` says what stopped it)."""
    deadline = Deadline(args.size_timeout)
    # a list of 1,000 Queues costs the API server and the bench: list them less often
    period = args.poll or (0.25 if n <= 100 else 0.5 if n <= 300 else 2.0)
    cluster = BenchCluster()
    row: Json = {"queues": n, "poll_s": period}
    op: OperatorRun | None = None
    try:
        admin = cluster.start()
        kube = Kube(admin)
        op = cluster.start_operator("first")
        row["first_live_s"] = op.wait_live()
        before_create = cluster.operator_requests()["dispatched"]
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(kube.create, [queue_name(i) for i in range(n)]))
        row["created_s"] = time.monotonic() - started
        parts = {"condition": ready_condition, "generation": generation_observed}
        ready, count, reached = wait_all(kube, n, is_ready, period, deadline.left() - 600, parts)
        offset = row["created_s"]  # the wait starts when the last create returned
        row["ready_s"] = None if ready is None else offset + ready
        for key, value in reached.items():
            row[f"ready_{key}_s"] = offset + value
        row["ready_count"] = count
        row["ready_bound_s"] = time.monotonic() - started
        # what the operator asked of the API server to bring them up (its writes, the
        # Events, kopf's own): what bounds "all Ready" on a given API server
        created = cluster.operator_requests()["dispatched"] - before_create
        row["create_requests_per_queue"] = created / n
        row["create_rps"] = created / row["ready_bound_s"]
        if ready is None:
            row["error"] = f"{count} of {n} Queues Ready within the budget"
        time.sleep(args.settle_seconds)
        row["quiet_s"] = wait_quiet(cluster, QUIET_SECONDS, bound=300.0)
        row.update(idle_window(cluster, op, args.idle_seconds))
        bound = 60.0
        row["burst"] = median_of(
            [
                burst(kube, cluster.dsn, queue_name(i), args.burst_jobs, bound)
                for i in range(args.repeats)
            ]
        )
        row["cancel"] = median_of(
            [cancel(kube, cluster.dsn, queue_name(n - 1 - i), bound) for i in range(args.repeats)]
        )
        row["step_bound_s"] = bound
        op, figures = restart(kube, cluster, op, n, period, max(10.0, deadline.left() - 30))
        row.update(figures)
    except Exception as exc:  # report what was measured, and why the rest was not
        row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if op is not None:
            row["operator_log_tail"] = op.tail()
    finally:
        if op is not None:
            op.stop()
        cluster.stop()
    return row


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run_size's cleanup


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # stopping the bench by its PID stops what it started (a background job ignores SIGINT)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    facts = machine_facts(None)
    rows: list[Json] = []
    for n in args.sizes:
        started = time.monotonic()
        row = run_size(args, n)
        row["wall_s"] = time.monotonic() - started
        row["loadavg_end"] = loadavg()
        rows.append(row)
        print(row_text(row), flush=True)
        if "error" in row:
            print(f"  {n} Queues: {row['error']}", flush=True)
    path = write_json("operator_scale", {"facts": facts, "args": vars(args), "rows": rows})
    text = render(rows, facts, args)
    print(text)
    print(f"results: {path}")
    if not args.no_doc:
        write_doc_section(f"operator-scale-{args.label}", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
