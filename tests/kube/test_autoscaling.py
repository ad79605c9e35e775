"""Autoscaling on a real control plane: the fleet follows demand and never kills a job.

The operator runs as a subprocess (``--interval 1``) in ``autoscaling.mode: operator``;
worker pods are real ``slotfleet worker`` processes started by the test node; the job
store is a real PostgreSQL database. Windows are short (two slots per pod, target 1.0,
stabilization 3 s, idle 5 s), so a test takes tens of seconds, not minutes.

What "never kills a running job" means here, checked on every job at the end: each one
``succeeded`` with ``attempts == 1`` (a job cut short by a drain would be handed back and
run again, so its attempts would be 2), the test node sent no SIGKILL, and no pod got
SIGTERM while it held a running job (a running job's ``lease_owner`` is its worker id,
which is the pod's name).

HPA mode, on a real metrics pipeline, is in ``tests/kube/test_hpa.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from slotfleet.models import JobState, QueuedJob

from .fixtures import KubeAdmin
from .operator_helpers import (
    OperatorProcess,
    apply_queue,
    assert_every_job_ran_once,
    create_secret,
    email,
    queue_manifest,
    run,
    running_pods,
    spec_replicas,
    spread_long_jobs,
    wait_for,
)
from .operator_helpers import (
    store_enqueue as enqueue,
)
from .operator_helpers import (
    store_list as all_jobs,
)
from .testnode import TestNode

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]

SHORT_WINDOWS: dict[str, Any] = {
    "mode": "operator",
    "targetUtilization": 1.0,
    "scaleDownStabilizationSeconds": 3,
    "idleSeconds": 5,
}


def autoscaled_queue(name: str, *, min_replicas: int, max_replicas: int) -> dict[str, Any]:
    return queue_manifest(
        name,
        replicas=min_replicas,
        executor={"kind": "async", "concurrency": 2},
        autoscaling={**SHORT_WINDOWS, "minReplicas": min_replicas, "maxReplicas": max_replicas},
        # a pod told to stop while it runs a 25 s job would hand it back after 5 s:
        # the job would run again and show attempts == 2
        drainTimeoutSeconds=5,
    )


def pod_costs(admin: KubeAdmin, namespace: str, queue: str) -> dict[str, str | None]:
    return {
        p.metadata.name: (p.metadata.annotations or {}).get(
            "controller.kubernetes.io/pod-deletion-cost"
        )
        for p in running_pods(admin, namespace, queue)
    }


# ------------------------------------------------------------------ burst and scale-down


def test_burst_scales_up_and_scale_down_keeps_pods_running_long_jobs(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
) -> None:
    name = "burst"
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = autoscaled_queue(name, min_replicas=1, max_replicas=4)
    # longer than in the other tests: the burst's tail and the placing of the long jobs
    # below happen inside this window, so all four pods are still there when they start
    manifest["spec"]["autoscaling"]["scaleDownStabilizationSeconds"] = 10
    apply_queue(kube_admin, namespace, manifest)
    wait_for("the first worker pod", lambda: running_pods(kube_admin, namespace, name), 90)

    # The burst: 12 jobs on 2-slot pods want 6 pods, clamped to 4.
    shorts = run(enqueue(postgres_dsn, [email(name, f"s{i}", 3.0) for i in range(12)]))
    wait_for("spec.replicas raised to 4", lambda: spec_replicas(kube_admin, namespace, name) == 4)
    wait_for(
        "four worker pods running",
        lambda: len(running_pods(kube_admin, namespace, name)) == 4,
        90,
    )
    short_ids = {j.id for j in shorts}
    wait_for(
        "the burst to finish",
        lambda: all(j.is_terminal for j in run(all_jobs(postgres_dsn, name))),
        90,
    )

    # Long jobs on more pods than their slots need (two jobs on two pods: one pod's slots
    # would do): the case where a floor of ceil(busy / slots) would let the scale-down stop
    # a pod that runs a job.
    holders, fillers = spread_long_jobs(
        postgres_dsn, name, long_job=lambda to: email(name, to, 25.0), slots_per_pod=2
    )
    long_ids = set(holders)
    short_ids |= fillers

    # Until every job is done: no pod that holds a running job gets SIGTERM, busy pods
    # carry a deletion cost, and the fleet shrinks while the long jobs still run.
    busy_costs: dict[str, str | None] = {}
    replicas_while_long: list[int] = []
    floor_checks: list[tuple[int, int]] = []  # (spec.replicas, pods running a long job)
    deadline = time.monotonic() + 180
    while True:
        # replicas first: jobs seen running just after were running when it was read
        replicas = spec_replicas(kube_admin, namespace, name)
        jobs = run(all_jobs(postgres_dsn, name))
        running = [j for j in jobs if j.state is JobState.RUNNING]
        running_long = [j for j in running if j.id in long_ids]
        sigtermed = {pod for _, pod in test_node.sigtermed(namespace)}
        for job in running:
            owner = job.lease_owner or ""
            assert not any(owner == pod or owner.startswith(f"{pod}-") for pod in sigtermed), (
                f"pod of worker {owner} got SIGTERM while it ran job {job.id}; "
                f"SIGTERM sent to {sorted(sigtermed)}"
            )
        if running_long:
            replicas_while_long.append(replicas)
            pods_with_long = {j.lease_owner for j in running_long}
            floor_checks.append((replicas, len(pods_with_long)))
            costs = pod_costs(kube_admin, namespace, name)
            for job in running_long:
                if job.lease_owner in costs:
                    busy_costs[job.lease_owner] = costs[job.lease_owner]
        if all(j.is_terminal for j in jobs):
            break
        assert time.monotonic() < deadline, f"jobs still not done: {[j.state for j in jobs]}"
        time.sleep(0.3)

    assert_every_job_ran_once(jobs, len(short_ids) + len(long_ids))
    # the fleet shrank while the long jobs still ran (idle pods went first) ...
    assert replicas_while_long
    assert min(replicas_while_long) < 4, replicas_while_long
    # ... never below the pods holding them (the long jobs end a few seconds apart: once
    # one has ended, one pod is enough, and its deletion cost keeps the busy one)
    both = [replicas for replicas, pods in floor_checks if pods >= 2]
    assert both, f"the long jobs never ran on two pods at once: {holders}"
    assert min(both) >= 2, (floor_checks, holders)
    assert test_node.sigtermed(namespace), "scale-down sent no SIGTERM at all"
    assert all(cost not in (None, "0") for cost in busy_costs.values()), busy_costs
    assert not [k for k in test_node.sigkill_log if k[0] == namespace]

    # with the work done, back to minReplicas
    wait_for("back to one replica", lambda: spec_replicas(kube_admin, namespace, name) == 1, 60)
    wait_for(
        "one worker pod left",
        lambda: len(running_pods(kube_admin, namespace, name)) == 1,
        60,
    )


# ------------------------------------------------------------------ scale to zero and back


def test_scale_to_zero_after_idle_seconds_and_back_on_a_new_job(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
) -> None:
    name = "naps"
    create_secret(kube_admin, namespace, postgres_dsn)
    apply_queue(kube_admin, namespace, autoscaled_queue(name, min_replicas=0, max_replicas=3))
    # nothing to do: stays at zero, no pod
    time.sleep(3)
    assert spec_replicas(kube_admin, namespace, name) == 0
    assert not running_pods(kube_admin, namespace, name)

    run(enqueue(postgres_dsn, [email(name, "first", 0.5)]))
    wait_for("scale from zero", lambda: spec_replicas(kube_admin, namespace, name) >= 1)

    def succeeded(count: int) -> list[QueuedJob] | None:
        jobs = run(all_jobs(postgres_dsn, name))
        done = [j for j in jobs if j.state is JobState.SUCCEEDED]
        return jobs if len(done) == count else None

    wait_for("the first job to succeed", lambda: succeeded(1), 90)
    done_at = time.monotonic()

    # idleSeconds (5) after the last job, the fleet goes to zero and its pod drains away
    wait_for("scale to zero", lambda: spec_replicas(kube_admin, namespace, name) == 0, 60)
    idle_for = time.monotonic() - done_at
    assert idle_for >= 4, f"scaled to zero {idle_for:.1f} s after the job, before idleSeconds"
    wait_for("no worker pod", lambda: not running_pods(kube_admin, namespace, name), 60)

    # and back as soon as a job appears
    run(enqueue(postgres_dsn, [email(name, "second", 0.5)]))
    wait_for("back from zero", lambda: spec_replicas(kube_admin, namespace, name) >= 1)
    jobs = wait_for("the second job to succeed", lambda: succeeded(2), 90)
    assert_every_job_ran_once(jobs, 2)
    reasons = [
        e.message or ""
        for e in client.CoreV1Api(kube_admin.api_client)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
        if e.reason == "Scaled"
    ]
    assert any("scale to zero" in m for m in reasons), reasons
    assert any("scale from zero" in m for m in reasons), reasons
