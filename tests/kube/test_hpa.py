"""``autoscaling.mode: hpa`` on a real metrics pipeline: the real HPA controller scales a
Queue through its ``/scale`` on what Prometheus scraped, as prometheus-adapter serves it.

The pipeline (``tests/kube/metrics_pipeline.py``, one per module): Debian's Prometheus
scraping the worker pods and the operator, prometheus-adapter v0.12.0 with the chart's
rules verbatim, registered as the ``custom.metrics.k8s.io`` and
``external.metrics.k8s.io`` APIServices. kube-controller-manager's HPA controller looks
at each HPA every ``HPA_SYNC_PERIOD_SECONDS`` (5 s here). The operator runs as a
subprocess (``--interval 1``) and serves its Queue gauges, which Prometheus scrapes.

Without the pipeline none of this passes: the HPA then reports ``ScalingActive=False``
and never changes the Queue's replicas.

What "no running job killed" means here is what it means in operator mode
(``tests/kube/test_autoscaling.py``): every job ``succeeded`` with ``attempts == 1`` (a
drain hands an unfinished job back, so it would run again), the test node sent no
SIGKILL, and no pod got SIGTERM while it held a running job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slotfleet.models import Job, JobState, QueuedJob

from .controlplane import free_port
from .fixtures import KubeAdmin
from .helm import kubectl
from .metrics_pipeline import MetricsPipeline, get_raw
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
from .operator_helpers import store_enqueue as enqueue
from .operator_helpers import store_list as all_jobs
from .testnode import TestNode

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]

SLOTS = 2


@pytest.fixture
def hpa_operator(
    kube_admin: KubeAdmin,
    namespace: str,
    queue_crd: str,
    metrics_pipeline: MetricsPipeline,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    """``slotfleet operator`` serving its Queue gauges, scraped by the pipeline."""
    port = free_port()
    op = OperatorProcess(kube_admin, namespace, tmp_path / "operator.log", metrics_port=port)
    op.start()
    address = f"127.0.0.1:{port}"
    metrics_pipeline.scrape_operator(address)
    try:
        yield op
    finally:
        metrics_pipeline.forget_operator(address)
        op.stop()


def hpa_queue(name: str, **autoscaling: Any) -> dict[str, Any]:
    return queue_manifest(
        name,
        replicas=1,
        imports=["examples.tasks", "tests.tasks"],
        executor={"kind": "async", "concurrency": SLOTS},
        autoscaling={"mode": "hpa", "targetUtilization": 1.0, **autoscaling},
        # short, as in test_autoscaling: a pod told to stop while it runs a long job hands
        # it back after 5 s, and the job then shows attempts == 2
        drainTimeoutSeconds=5,
    )


def read_hpa(admin: KubeAdmin, namespace: str, name: str) -> Any:
    return client.AutoscalingV2Api(admin.api_client).read_namespaced_horizontal_pod_autoscaler(
        name, namespace
    )


def hpa_condition(admin: KubeAdmin, namespace: str, name: str, kind: str) -> Any:
    hpa = read_hpa(admin, namespace, name)
    for cond in (hpa.status and hpa.status.conditions) or []:
        if cond.type == kind:
            return cond
    return None


def scaling_active(admin: KubeAdmin, namespace: str, name: str) -> Any:
    cond = hpa_condition(admin, namespace, name, "ScalingActive")
    return cond if cond is not None and cond.status == "True" else None


def current_metrics(admin: KubeAdmin, namespace: str, name: str) -> dict[str, float]:
    """What the HPA read on its last pass, by metric name (quantities as numbers)."""
    return metrics_of(read_hpa(admin, namespace, name))


def metrics_of(hpa: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in (hpa.status and hpa.status.current_metrics) or []:
        if metric.type == "External":
            out[metric.external.metric.name] = quantity(metric.external.current.average_value)
        elif metric.type == "Pods":
            out[metric.pods.metric.name] = quantity(metric.pods.current.average_value)
    return out


def quantity(text: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(m?)", text)
    assert match, text
    return float(match.group(1)) / (1000 if match.group(2) else 1)


def hpa_status(admin: KubeAdmin, namespace: str, name: str) -> tuple[int, int, dict[str, float]]:
    """``(desiredReplicas, currentReplicas, current averages by metric)`` from one read of
    the HPA's status: what one pass of the HPA controller computed."""
    hpa = read_hpa(admin, namespace, name)
    status = hpa.status
    return (
        int(status.desired_replicas or 0),
        int(status.current_replicas or 0),
        metrics_of(hpa),
    )


class FleetWatch:
    """Watches a Queue's fleet while it scales: every :meth:`until` check also asserts that
    no pod got SIGTERM while it held a running job, that the Queue never had fewer pods
    than hold a long job, and records the busy pods' deletion costs."""

    def __init__(
        self,
        admin: KubeAdmin,
        namespace: str,
        name: str,
        dsn: str,
        node: TestNode,
        long_ids: set[int],
    ) -> None:
        self.admin, self.namespace, self.name, self.dsn = admin, namespace, name, dsn
        self.node = node
        self.long_ids = long_ids
        self.jobs: list[QueuedJob] = []
        self.replicas = 0
        self.replicas_seen: list[int] = []
        self.busy_costs: dict[str, str | None] = {}

    def look(self) -> None:
        # replicas first: jobs seen running just after were running when it was read
        self.replicas = spec_replicas(self.admin, self.namespace, self.name)
        self.jobs = run(all_jobs(self.dsn, self.name))
        running = [j for j in self.jobs if j.state is JobState.RUNNING]
        sigtermed = {pod for _, pod in self.node.sigtermed(self.namespace)}
        for job in running:
            assert job.lease_owner not in sigtermed, (
                f"pod {job.lease_owner} got SIGTERM while it ran job {job.id}; "
                f"SIGTERM sent to {sorted(sigtermed)}"
            )
        holding = {j.lease_owner for j in running if j.id in self.long_ids}
        if holding:
            self.replicas_seen.append(self.replicas)
            assert self.replicas >= len(holding), (self.replicas, holding)
        costs = {
            p.metadata.name: (p.metadata.annotations or {}).get(
                "controller.kubernetes.io/pod-deletion-cost"
            )
            for p in running_pods(self.admin, self.namespace, self.name)
        }
        for pod in holding:
            if pod in costs:
                self.busy_costs[str(pod)] = costs[pod]

    def until(self, what: str, done: Callable[[], bool], timeout: float = 180) -> None:
        def check() -> bool:
            self.look()
            return done()

        wait_for(what, check, timeout)


def external_metric(admin: KubeAdmin, namespace: str, metric: str, queue: str) -> float | None:
    """The external metric as the HPA controller asks for it, through the API server
    (``None`` while the adapter does not serve it)."""
    answer = get_raw(
        admin,
        f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}"
        f"?labelSelector=queue%3D{queue}",
    )
    if answer is None:
        return None
    return sum(quantity(item["value"]) for item in answer["items"])


# ------------------------------------------------------------------ burst and scale-down


def test_hpa_scales_on_the_backlog_and_down_without_killing_a_job(
    kube_admin: KubeAdmin,
    namespace: str,
    hpa_operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
    tmp_path: Path,
) -> None:
    name = "surge"
    create_secret(kube_admin, namespace, postgres_dsn)
    # a window long enough for the long jobs to be placed before the first scale-down
    apply_queue(
        kube_admin,
        namespace,
        hpa_queue(name, minReplicas=1, maxReplicas=6, scaleDownStabilizationSeconds=15),
    )
    wait_for("the first worker pod", lambda: running_pods(kube_admin, namespace, name), 90)

    # The pipeline works end to end before any load: the HPA computes a size from it.
    cond = wait_for(
        "HPA ScalingActive=True", lambda: scaling_active(kube_admin, namespace, name), 90
    )
    assert cond.reason == "ValidMetricFound", cond
    seen = wait_for(
        "the HPA to read all three metrics",
        lambda: (m := current_metrics(kube_admin, namespace, name)) and len(m) == 3 and m,
        60,
    )
    assert seen == {
        "slotfleet_queue_demand": 0.0,
        "slotfleet_queue_busy_pods": 0.0,
        "slotfleet_slots_busy_ratio": 0.0,
    }, seen
    # docs/operations.md's check of the Pods metric: one idle pod, ratio 0
    ratios = get_raw(
        kube_admin,
        f"/apis/custom.metrics.k8s.io/v1beta2/namespaces/{namespace}/pods/*/"
        "slotfleet_slots_busy_ratio",
    )
    assert ratios is not None
    pods = {p.metadata.name for p in running_pods(kube_admin, namespace, name)}
    assert {i["describedObject"]["name"]: i["value"] for i in ratios["items"]} == dict.fromkeys(
        pods, "0"
    )

    # The burst: 12 jobs of 12 s on 2-slot pods need 6 pods. The busy ratio alone
    # saturates at 1.0 = the target, so it would never ask for a single pod more.
    burst = run(enqueue(postgres_dsn, [email(name, f"s{i}", 12.0) for i in range(12)]))
    steps: list[int] = [1]

    def reached_six() -> bool:
        replicas = spec_replicas(kube_admin, namespace, name)
        if replicas != steps[-1]:
            steps.append(replicas)
        return replicas == 6

    wait_for("the HPA to ask for 6 pods", reached_six, 90, interval=0.2)
    # within two HPA passes: 1 -> 6, or one step between (a pass that saw part of it)
    assert len(steps) <= 3, f"spec.replicas went {steps}: more than two HPA rescales"
    assert (external_metric(kube_admin, namespace, "slotfleet_queue_demand", name) or 0) >= 6
    wait_for(
        "six worker pods running", lambda: len(running_pods(kube_admin, namespace, name)) == 6, 90
    )

    # Long jobs on more pods than their slots need, while the window holds the fleet: the
    # demand then asks for fewer pods than run jobs; the busy-pods floor must keep them.
    # They run until the test has seen the HPA settle with them (release file).
    release = tmp_path / "release"

    def hold(to: str) -> Job:
        kwargs = {"release_file": str(release), "most": 240.0}
        return Job(func="tests.tasks:async_hold", queue=name, kwargs=kwargs)

    holders, fillers = spread_long_jobs(postgres_dsn, name, long_job=hold, slots_per_pod=SLOTS)
    floor = len(set(holders.values()))
    assert floor > -(-len(holders) // SLOTS), holders  # what spread_long_jobs promises
    watch = FleetWatch(kube_admin, namespace, name, postgres_dsn, test_node, set(holders))

    def settled_at_the_floor() -> bool:
        """Every other job is done, and on one pass the HPA read a demand of exactly the
        held jobs (which alone would ask for fewer pods), a busy-pods metric of the pods
        holding them, and asked for that many pods, which the Queue has."""
        if not all(j.is_terminal for j in watch.jobs if j.id not in holders):
            return False
        desired, current, averages = hpa_status(kube_admin, namespace, name)
        totals = {metric: round(avg * current) for metric, avg in averages.items()}
        return (
            totals.get("slotfleet_queue_demand") == len(holders)
            and totals.get("slotfleet_queue_busy_pods") == floor
            and desired == floor == watch.replicas
        )

    watch.until("the HPA to settle at the pods holding the long jobs", settled_at_the_floor)
    assert min(watch.replicas_seen) == floor, watch.replicas_seen  # it shrank, to the floor
    release.write_text("done")
    watch.until("every job to finish", lambda: all(j.is_terminal for j in watch.jobs))

    assert_every_job_ran_once(watch.jobs, len(burst) + len(holders) + len(fillers))
    assert test_node.sigtermed(namespace), "the scale-down sent no SIGTERM at all"
    assert all(cost not in (None, "0") for cost in watch.busy_costs.values()), watch.busy_costs
    assert not [k for k in test_node.sigkill_log if k[0] == namespace]

    # with the work done, back to minReplicas
    wait_for("back to one replica", lambda: spec_replicas(kube_admin, namespace, name) == 1, 90)
    hpa = read_hpa(kube_admin, namespace, name)
    assert hpa.status.desired_replicas == 1


# ------------------------------------------------------------------ zero


def test_hpa_scales_to_zero_and_back_but_not_from_a_zero_set_by_hand(
    kube_admin: KubeAdmin,
    namespace: str,
    hpa_operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
) -> None:
    """Kubernetes 1.37 (HPAScaleToZero, beta, on by default): an HPA with ``minReplicas: 0``
    and an External metric scales its target to zero and back from zero, but only from a
    zero it set itself: a target at zero that the HPA did not scale there (created at
    zero, or ``kubectl scale --replicas 0``) means "scaling disabled"."""
    name = "naps"
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = hpa_queue(name, minReplicas=0, maxReplicas=3, scaleDownStabilizationSeconds=3)
    manifest["spec"]["replicas"] = 0
    apply_queue(kube_admin, namespace, manifest)
    run(enqueue(postgres_dsn, [email(name, "first", 0.5)]))

    # A zero the HPA did not set: the job is visible through the pipeline, yet the HPA
    # reports scaling disabled and leaves the Queue at zero.
    wait_for(
        "the job in the demand metric",
        lambda: external_metric(kube_admin, namespace, "slotfleet_queue_demand", name) == 1,
        60,
    )
    disabled = wait_for(
        "HPA ScalingActive=False (ScalingDisabled)",
        lambda: (
            (c := hpa_condition(kube_admin, namespace, name, "ScalingActive"))
            and c.status == "False"
            and c.reason == "ScalingDisabled"
            and c
        ),
        60,
    )
    assert "replica count of the target is zero" in disabled.message
    assert spec_replicas(kube_admin, namespace, name) == 0
    assert not running_pods(kube_admin, namespace, name)

    # One replica by hand hands the Queue back to the HPA: the job runs, the fleet idles,
    # and after the 3 s window the HPA scales it to zero itself.
    kubectl(kube_admin.kubeconfig, "scale", "queue", name, "-n", namespace, "--replicas", "1")

    def succeeded(count: int) -> list[QueuedJob] | None:
        jobs: list[QueuedJob] = run(all_jobs(postgres_dsn, name))
        done = [j for j in jobs if j.state is JobState.SUCCEEDED]
        return jobs if len(done) == count else None

    wait_for("the first job to succeed", lambda: succeeded(1), 90)
    wait_for(
        "HPA ScaledToZero=True",
        lambda: (
            (c := hpa_condition(kube_admin, namespace, name, "ScaledToZero")) and c.status == "True"
        ),
        90,
    )
    assert spec_replicas(kube_admin, namespace, name) == 0
    wait_for("no worker pod", lambda: not running_pods(kube_admin, namespace, name), 60)

    # From a zero the HPA set, a new job brings a worker back.
    run(enqueue(postgres_dsn, [email(name, "second", 0.5)]))
    wait_for("back from zero", lambda: spec_replicas(kube_admin, namespace, name) >= 1, 90)
    jobs = wait_for("the second job to succeed", lambda: succeeded(2), 90)
    assert_every_job_ran_once(jobs, 2)
    rescales = [
        e.message or ""
        for e in client.CoreV1Api(kube_admin.api_client)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
        if e.reason == "SuccessfulRescale"
    ]
    assert any(m.startswith("New size: 0;") for m in rescales), rescales
    assert any(m.startswith("New size: 1;") for m in rescales), rescales
