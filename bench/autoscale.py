"""How fast the operator's autoscaler follows a burst, and whether scale-down kills jobs.

On a real control plane (etcd, kube-apiserver, kube-controller-manager from
``tests/kube/controlplane.py``), the process-backed test node (``tests/kube/testnode.py``:
worker pods are real ``slotfleet worker`` processes), a throwaway PostgreSQL
(``bench/pg.py``) and ``slotfleet operator`` as a subprocess at its default ``--interval``
(what the Helm chart runs), each run:

1. applies a Queue (``mode: operator``, 2 slots a pod, target 1.0, min 0, max 4,
   stabilization 3 s, idle 5 s) and waits until the operator reports it;
2. enqueues a burst (short jobs and a few long ones) and samples the Queue's
   ``spec.replicas``, the Deployment's ready replicas and the pods every 50 ms;
3. waits until every job is done and the fleet is back at zero with no pod left.

Figures: burst -> more pods requested (``spec.replicas`` raised through ``/scale``) and
-> all of them Ready; end of the short jobs -> first scale-down; end of all work ->
``spec.replicas`` 0 and -> no pod left; jobs killed (state not ``succeeded`` or
``attempts`` > 1). Times are wall-clock, from the database's ``completed_at`` and the
harness's clock (same machine).

``--node real`` runs the same on a real node instead (``tests/node/cluster.py``: kubelet,
containerd and runc, kube-scheduler, kube-proxy): the operator installed by ``helm
install`` as a pod from the image built from the Dockerfile, workers as containers from
the examples image, PostgreSQL on the node's bridge. "Ready" then includes scheduling,
the sandbox, the container's start-up and the kubelet's first readiness probe. It needs
root (see docs/testing.md) and writes its own section of docs/benchmarks.md.

This is a benchmark, not a test: it asserts nothing; it writes JSON to bench/results/ and
the "Autoscaling" sections of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from kubernetes import client

from bench import pg as pgmod
from bench.common import (
    command_line,
    fmt,
    loadavg,
    machine_facts,
    median_range,
    write_doc_section,
    write_json,
)
from slotfleet.models import Job
from slotfleet.store import open_store
from tests.kube.controlplane import ControlPlane, ensure_binaries
from tests.kube.fixtures import KubeAdmin, api_client_for
from tests.kube.operator_helpers import (
    CRD_FILE,
    OperatorProcess,
    apply_queue,
    condition,
    create_secret,
    get_queue,
    kubectl,
    queue_manifest,
    wait_for,
)
from tests.kube.testnode import TestNode
from tests.node.cluster import NodeCluster, install_operator, start_cluster, stop_cluster
from tests.node.helpers import node_queue


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="repetitions (median, range)")
    p.add_argument("--short", type=int, default=14, help="short jobs in the burst")
    p.add_argument("--short-seconds", type=float, default=3.0, help="length of a short job")
    p.add_argument("--long", type=int, default=2, help="long jobs in the burst")
    p.add_argument("--long-seconds", type=float, default=15.0, help="length of a long job")
    p.add_argument("--max-replicas", type=int, default=4, help="autoscaling.maxReplicas")
    p.add_argument(
        "--operator-interval",
        type=float,
        default=None,
        help="operator --interval (default: the operator's own default, 2 s)",
    )
    p.add_argument(
        "--node",
        choices=("testnode", "real"),
        default="testnode",
        help="testnode: pods as local processes (default); real: a real kubelet and containerd",
    )
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    return p.parse_args(argv)


@dataclass
class Sample:
    at: float
    replicas: int
    ready: int
    pods: int


@dataclass
class Run:
    burst_at: float
    samples: list[Sample] = field(default_factory=list)
    jobs: list[tuple[str, str, int, float | None]] = field(default_factory=list)
    """(to, state, attempts, completed_at epoch seconds)."""


class Harness:
    """The control plane, the test node, PostgreSQL and the operator, started by PID and
    stopped in reverse order."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="slotfleet-bench-autoscale-"))
        self.namespace = "bench-autoscale"
        self.pg: pgmod.Postgres | None = None
        self.cp: ControlPlane | None = None
        self.node: TestNode | None = None
        self.operator: OperatorProcess | None = None
        self.admin: KubeAdmin | None = None

    def start(self) -> KubeAdmin:
        self.pg = pgmod.start()
        self.cp = ControlPlane(bin_dir=ensure_binaries(), work_dir=self.work / "kube")
        self.cp.start()
        admin = self.admin = KubeAdmin(
            kubeconfig=self.cp.admin_kubeconfig,
            api_client=api_client_for(self.cp.admin_kubeconfig),
            server=self.cp.server,
            ca_file=self.cp.ca_file,
        )
        self.node = TestNode(
            api_client_for(self.cp.admin_kubeconfig),
            server=self.cp.server,
            ca_file=self.cp.ca_file,
            work_dir=self.work / "node",
        )
        self.node.start()
        kubectl(admin, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
        kubectl(
            admin,
            "wait",
            "--for=condition=Established",
            "--timeout=30s",
            "crd/queues.slotfleet.dev",
        )
        client.CoreV1Api(admin.api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )
        create_secret(admin, self.namespace, self.pg.dsn)
        self.operator = OperatorProcess(
            admin, self.namespace, self.work / "operator.log", interval=self.args.operator_interval
        )
        self.operator.start()
        return admin

    @property
    def dsn(self) -> str:
        assert self.pg is not None
        return self.pg.dsn

    @property
    def monitor_dsn(self) -> str:
        assert self.pg is not None
        return self.pg.admin_dsn

    @property
    def pg_version(self) -> str:
        assert self.pg is not None
        return self.pg.version

    def manifest(self, name: str, **spec: Any) -> dict[str, Any]:
        return queue_manifest(name, **spec)

    def stop(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.node is not None:
            self.node.stop()
        if self.cp is not None:
            self.cp.stop()
        if self.pg is not None:
            pgmod.stop(self.pg)
        shutil.rmtree(self.work, ignore_errors=True)


class RealNodeHarness:
    """The real node's cluster (``tests/node/cluster.py``) with the operator installed by
    helm as a pod from the built image; torn down by PID, the host reverted."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="slotfleet-bench-autoscale-node-"))
        self.namespace = "bench-autoscale"
        self.cluster: NodeCluster | None = None
        self._dsn = ""

    def start(self) -> KubeAdmin:
        self.cluster = start_cluster(self.work)
        install_operator(self.cluster)
        admin = self.cluster.admin
        client.CoreV1Api(admin.api_client).create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace))
        )
        self._dsn = self.cluster.database.create()
        create_secret(admin, self.namespace, self._dsn)
        return admin

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def monitor_dsn(self) -> str:
        return self._dsn

    @property
    def pg_version(self) -> str:
        with psycopg.connect(self._dsn) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def manifest(self, name: str, **spec: Any) -> dict[str, Any]:
        assert self.cluster is not None
        return node_queue(name, self.cluster.images.examples, **spec)

    def stop(self) -> None:
        if self.cluster is not None:
            for problem in stop_cluster(self.cluster):
                print(f"real node teardown: {problem}", flush=True)


def _enqueue(dsn: str, jobs: list[Job]) -> None:
    async def go() -> None:
        store = open_store(dsn)
        await store.open()
        try:
            await store.enqueue(jobs)
        finally:
            await store.close()

    asyncio.run(go())


def _epoch(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def run_once(h: Harness | RealNodeHarness, admin: KubeAdmin, index: int) -> dict[str, Any]:
    args, ns = h.args, h.namespace
    name = f"burst{index}"
    apply_queue(
        admin,
        ns,
        h.manifest(
            name,
            replicas=0,
            executor={"kind": "async", "concurrency": 2},
            autoscaling={
                "mode": "operator",
                "minReplicas": 0,
                "maxReplicas": args.max_replicas,
                "targetUtilization": 1.0,
                "scaleDownStabilizationSeconds": 3,
                "idleSeconds": 5,
            },
            drainTimeoutSeconds=30,
        ),
    )
    wait_for(
        "the operator to report the Queue",
        lambda: (
            (c := condition(get_queue(admin, ns, name), "StoreReachable")) is not None
            and c["status"] == "True"
        ),
        timeout=60,
    )
    apps = client.AppsV1Api(admin.api_client)
    core = client.CoreV1Api(admin.api_client)
    selector = f"slotfleet.dev/queue={name}"
    jobs = [
        Job(
            func="examples.tasks:send_email",
            queue=name,
            kwargs={"to": f"short{i}", "seconds": args.short_seconds},
        )
        for i in range(args.short)
    ] + [
        Job(
            func="examples.tasks:send_email",
            queue=name,
            kwargs={"to": f"long{i}", "seconds": args.long_seconds},
        )
        for i in range(args.long)
    ]
    _enqueue(h.dsn, jobs)
    run = Run(burst_at=time.time())
    next_db = 0.0
    deadline = time.monotonic() + 300
    with psycopg.connect(h.monitor_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            replicas = int(get_queue(admin, ns, name)["spec"].get("replicas") or 0)
            dep = apps.read_namespaced_deployment(f"{name}-worker", ns)
            ready = int((dep.status and dep.status.ready_replicas) or 0)
            pods = len(core.list_namespaced_pod(ns, label_selector=selector).items)
            run.samples.append(Sample(time.time(), replicas, ready, pods))
            if time.monotonic() >= next_db:
                next_db = time.monotonic() + 0.5
                rows = conn.execute(
                    "SELECT kwargs->>'to', state, attempts, completed_at"
                    " FROM slotfleet_jobs WHERE queue = %s",
                    (name,),
                ).fetchall()
                run.jobs = [(r[0], r[1], r[2], _epoch(r[3])) for r in rows]
                done = all(r[1] in ("succeeded", "failed", "cancelled") for r in run.jobs)
                if done and replicas == 0 and pods == 0:
                    break
            time.sleep(0.05)
    kubectl(admin, "delete", "queue", name, "-n", ns, "--wait=true")
    return summarize(run, len(jobs))


def _first(samples: list[Sample], after: float, test: Any) -> float | None:
    for s in samples:
        if s.at >= after and test(s):
            return s.at
    return None


def _since(at: float | None, origin: float | None) -> float:
    return float("nan") if at is None or origin is None else at - origin


def summarize(run: Run, expected: int) -> dict[str, Any]:
    samples, t0 = run.samples, run.burst_at
    peak = max((s.replicas for s in samples), default=0)
    requested = _first(samples, t0, lambda s: s.replicas > 0)
    ready = _first(samples, t0, lambda s: peak > 0 and s.ready >= peak)
    shorts = [j[3] for j in run.jobs if j[0].startswith("short") and j[3] is not None]
    everything = [j[3] for j in run.jobs if j[3] is not None]
    shorts_done = max(shorts) if shorts else None
    all_done = max(everything) if len(everything) == len(run.jobs) and everything else None
    peak_at = _first(samples, t0, lambda s: s.replicas == peak)
    down = _first(samples, peak_at or t0, lambda s: 0 < s.replicas < peak or s.replicas == 0)
    zero = _first(samples, all_done or t0, lambda s: s.replicas == 0)
    gone = _first(samples, all_done or t0, lambda s: s.pods == 0)
    killed = sum(1 for j in run.jobs if j[1] != "succeeded" or j[2] > 1)
    return {
        "jobs": len(run.jobs),
        "expected_jobs": expected,
        "peak_replicas": peak,
        "burst_to_requested_s": _since(requested, t0),
        "burst_to_ready_s": _since(ready, t0),
        "shorts_done_to_scale_down_s": _since(down, shorts_done),
        "all_done_to_zero_s": _since(zero, all_done),
        "all_done_to_no_pods_s": _since(gone, all_done),
        "killed": killed + (expected - len(run.jobs)),
        "replicas_timeline": _timeline(samples, t0),
    }


def _timeline(samples: list[Sample], t0: float) -> list[tuple[float, int, int, int]]:
    out: list[tuple[float, int, int, int]] = []
    for s in samples:
        row = (round(s.at - t0, 2), s.replicas, s.ready, s.pods)
        if not out or out[-1][1:] != row[1:]:
            out.append(row)
    return out


FIGURES = [
    ("burst_to_requested_s", "burst -> more pods requested (Queue `spec.replicas` raised)"),
    ("burst_to_ready_s", "burst -> all requested pods Ready"),
    ("shorts_done_to_scale_down_s", "last short job done -> first scale-down"),
    ("all_done_to_zero_s", "last job done -> `spec.replicas` 0"),
    ("all_done_to_no_pods_s", "last job done -> no pod left"),
]

DEFAULTS = {
    "burst_to_requested_s": "KEDA: polls every 30 s (`pollingInterval`); HPA: every 15 s "
    "(`--horizontal-pod-autoscaler-sync-period`), plus the metrics pipeline's scrape",
    "burst_to_ready_s": "same, plus pod start-up",
    "shorts_done_to_scale_down_s": "HPA: 300 s scale-down stabilization window",
    "all_done_to_zero_s": "KEDA: 300 s `cooldownPeriod` (HPA cannot scale to zero)",
    "all_done_to_no_pods_s": "KEDA: 300 s, plus the drain",
}


def render(results: list[dict[str, Any]], facts: dict[str, Any], args: argparse.Namespace) -> str:
    interval = (
        "default (2 s)" if args.operator_interval is None else f"{args.operator_interval:g} s"
    )
    if args.node == "real":
        title = "## Autoscaling (operator mode) on a real node"
        where = (
            "A real kubelet, containerd + runc, kube-scheduler and kube-proxy "
            "(`tests/node/cluster.py`) beside kube-apiserver, etcd and "
            "kube-controller-manager; `slotfleet operator` installed by `helm install` as a "
            "pod from the image built from the Dockerfile (chart defaults: `--interval` 2 s), "
            "workers as containers from `examples/Dockerfile`'s image, PostgreSQL on the "
            "node's bridge. Ready includes scheduling, the pod sandbox, the container's "
            "start-up and the kubelet's first readiness probe."
        )
    else:
        title = "## Autoscaling (operator mode)"
        where = (
            "A real kube-apiserver, etcd and kube-controller-manager on loopback, worker pods "
            "run as local processes by the test node, a throwaway PostgreSQL, `slotfleet "
            f"operator` with `--interval` {interval}."
        )
    lines = [
        title,
        "",
        f"Command (from the repository root): `{command_line()}`",
        "",
        f"Date: {facts['date']} · git {facts['git']} · {facts['nproc']} CPUs · Python "
        f"{facts['python']} · PostgreSQL {facts['postgres']} · load average at start "
        f"{facts['loadavg_start']}, at end {loadavg()}",
        "",
        f"{len(results)} run(s); each cell is the median with the range in brackets. {where} "
        "Queue: `mode: operator`, 2 slots a pod, targetUtilization "
        f"1.0, minReplicas 0, maxReplicas {args.max_replicas}, scaleDownStabilizationSeconds "
        "3, idleSeconds 5, starting at zero. Burst: "
        f"{args.short} jobs of {args.short_seconds:g} s and {args.long} of "
        f"{args.long_seconds:g} s (`examples.tasks:send_email`), enqueued at once; the fleet "
        "scales down while the long jobs still run.",
        "",
        "| figure | slotfleet (seconds) | defaults elsewhere |",
        "|---|---:|---|",
    ]
    for key, label in FIGURES:
        median, low, high = median_range([r[key] for r in results])
        cell = f"{fmt(median, 1)} ({fmt(low, 1)}-{fmt(high, 1)})"
        lines.append(f"| {label} | {cell} | {DEFAULTS[key]} |")
    killed = sum(r["killed"] for r in results)
    total = sum(r["expected_jobs"] for r in results)
    peaks = sorted({r["peak_replicas"] for r in results})
    lines += [
        f"| jobs killed or lost by scale-down (state not succeeded, or attempts > 1) | "
        f"{killed} of {total} | |",
        "",
        f"Peak replicas: {', '.join(map(str, peaks))}. Aim: more pods requested within 3 s "
        "of a burst. The scale-down and zero figures are the configured windows (3 s, 5 s) "
        "plus one or two operator ticks (a scale-down waits one tick after marking busy pods "
        "with their deletion cost); with the defaults users get (60 s, 300 s) they are that "
        "much longer by design. KEDA and HPA figures are their documented defaults, "
        "not measured here.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness: Harness | RealNodeHarness = (
        RealNodeHarness(args) if args.node == "real" else Harness(args)
    )
    results: list[dict[str, Any]] = []
    try:
        admin = harness.start()
        facts = machine_facts(harness.pg_version)
        for index in range(args.runs):
            result = run_once(harness, admin, index)
            results.append(result)
            print(
                f"run {index + 1}/{args.runs}: "
                + ", ".join(f"{k}={fmt(result[k], 2)}" for k, _ in FIGURES)
                + f", killed={result['killed']}, peak={result['peak_replicas']}",
                flush=True,
            )
    finally:
        harness.stop()
    path = write_json("autoscale", {"facts": facts, "args": vars(args), "runs": results})
    text = render(results, facts, args)
    print(text)
    print(f"results: {path}")
    if not args.no_doc:
        write_doc_section("autoscale-real-node" if args.node == "real" else "autoscale", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
