"""How fast the fleet follows a burst, in operator mode and in HPA mode, and whether a
scale-down kills jobs.

On a real control plane (etcd, kube-apiserver, kube-controller-manager from
``tests/kube/controlplane.py``, the HPA controller at its default 15 s sync period unless
``--hpa-sync-period``), the process-backed test node (``tests/kube/testnode.py``: worker
pods are real ``slotfleet worker`` processes), a throwaway PostgreSQL (``bench/pg.py``)
and ``slotfleet operator`` as a subprocess at its default ``--interval`` (what the Helm
chart runs). HPA mode adds the kube tier's metrics pipeline
(``tests/kube/metrics_pipeline.py``: Debian's Prometheus scraping every
``--scrape-interval`` seconds, 30 by default like the chart's PodMonitor, and
prometheus-adapter with the chart's rules behind the aggregated metrics APIs). Runs
alternate between the modes; each run:

1. applies a Queue (2 slots a pod, target 1.0, min 0, max 4, stabilization 3 s; operator
   mode: idle 5 s) and waits until it is at zero: operator mode starts there; an HPA can
   scale from zero only what it scaled to zero itself, so HPA mode starts at one replica
   and waits for the HPA to take the idle fleet to zero;
2. waits a random 0 to ``--burst-jitter`` seconds (so the burst lands at a random phase
   of the operator's tick, the scrape and the HPA's sync period), enqueues a burst (short
   jobs and a few long ones) and samples the Queue's ``spec.replicas``, the Deployment's
   ready replicas and the pods every 50 ms;
3. waits until every job is done and the fleet is back at zero with no pod left.

Figures: burst -> more pods requested (``spec.replicas`` raised through ``/scale``), the
rescales it took to reach the peak, -> all of them Ready; end of the short jobs -> first
scale-down; end of all work -> ``spec.replicas`` 0 and -> no pod left; jobs killed (state
not ``succeeded`` or ``attempts`` > 1). Times are wall-clock, from the database's
``completed_at`` and the harness's clock (same machine).

``--node real`` runs operator mode on a real node instead (``tests/node/cluster.py``:
kubelet, containerd and runc, kube-scheduler, kube-proxy): the operator installed by
``helm install`` as a pod from the image built from the Dockerfile, workers as containers
from the examples image, PostgreSQL on the node's bridge. "Ready" then includes
scheduling, the sandbox, the container's start-up and the kubelet's first readiness
probe. It needs root (see docs/testing.md) and writes its own section of
docs/benchmarks.md. (HPA mode there would need the metrics pipeline to scrape pods on the
node's bridge and the operator's pod; not done.)

This is a benchmark, not a test: it asserts nothing; it writes JSON to bench/results/ and
the "Autoscaling" sections of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import datetime
from typing import Any

import psycopg
from kubernetes import client

from bench.autoscale_harness import Harness, RealNodeHarness, modes
from bench.autoscale_report import FIGURES, Run, Sample, render, summarize
from bench.common import fmt, machine_facts, write_doc_section, write_json
from slotfleet.models import Job
from slotfleet.store import open_store
from tests.kube.fixtures import KubeAdmin
from tests.kube.operator_helpers import (
    apply_queue,
    condition,
    get_queue,
    kubectl,
    wait_for,
)


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
    p.add_argument(
        "--modes",
        default=None,
        help="comma-separated autoscaling modes to run, alternating (default operator,hpa; "
        "operator with --node real)",
    )
    p.add_argument(
        "--scrape-interval",
        type=float,
        default=30.0,
        help="HPA mode: Prometheus scrape interval in seconds (default 30, the chart's)",
    )
    p.add_argument(
        "--hpa-sync-period",
        type=float,
        default=None,
        help="kube-controller-manager --horizontal-pod-autoscaler-sync-period "
        "(default: its own, 15 s)",
    )
    p.add_argument(
        "--burst-jitter",
        type=float,
        default=30.0,
        help="wait a random 0..N seconds at zero before each burst (default 30, a scrape)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed of that random wait")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    return p.parse_args(argv)


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


def _hpa_scaled_to_zero(admin: KubeAdmin, ns: str, name: str) -> bool:
    hpa = client.AutoscalingV2Api(admin.api_client).read_namespaced_horizontal_pod_autoscaler(
        name, ns
    )
    conditions = (hpa.status and hpa.status.conditions) or []
    return any(c.type == "ScaledToZero" and c.status == "True" for c in conditions)


def run_once(
    h: Harness | RealNodeHarness, admin: KubeAdmin, index: int, mode: str
) -> dict[str, Any]:
    args, ns = h.args, h.namespace
    name = f"{mode}{index}"
    autoscaling: dict[str, Any] = {
        "mode": mode,
        "minReplicas": 0,
        "maxReplicas": args.max_replicas,
        "targetUtilization": 1.0,
        "scaleDownStabilizationSeconds": 3,
    }
    if mode == "operator":
        autoscaling["idleSeconds"] = 5
    apply_queue(
        admin,
        ns,
        h.manifest(
            name,
            # an HPA scales from zero only a zero it set: start at one, let it go to zero
            replicas=1 if mode == "hpa" else 0,
            executor={"kind": "async", "concurrency": 2},
            autoscaling=autoscaling,
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
    if mode == "hpa":
        wait_for(
            "the HPA to scale the idle Queue to zero",
            lambda: _hpa_scaled_to_zero(admin, ns, name),
            timeout=300,
        )
        wait_for(
            "no worker pod",
            lambda: (
                not client.CoreV1Api(admin.api_client)
                .list_namespaced_pod(ns, label_selector=f"slotfleet.dev/queue={name}")
                .items
            ),
            timeout=120,
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
    # a random phase against the operator's tick, the scrape and the HPA's sync period:
    # HPA mode gets here right after the pass that scaled the Queue to zero
    time.sleep(h.rng.uniform(0, args.burst_jitter))
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
    return {"mode": mode, **summarize(run, len(jobs))}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes(args)  # refuse a bad --modes before starting anything
    harness: Harness | RealNodeHarness = (
        RealNodeHarness(args) if args.node == "real" else Harness(args)
    )
    results: list[dict[str, Any]] = []
    try:
        admin = harness.start()
        facts = machine_facts(harness.pg_version)
        for index in range(args.runs):
            for mode in modes(args):
                result = run_once(harness, admin, index, mode)
                results.append(result)
                print(
                    f"run {index + 1}/{args.runs} {mode}: "
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
