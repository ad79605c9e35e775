"""The operator's pure builders: children manifests, status and conditions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from slotfleet.models import JobId, QueuedJob, QueueStats, WorkerHeartbeat
from slotfleet.models.container import OPERATOR_ENV
from slotfleet.models.pod import DELETION_COST_ANNOTATION
from slotfleet.models.resource import MAX_CANCELLATIONS, QueueSpec
from slotfleet.operator import builders as b
from slotfleet.operator import status as st
from slotfleet.operator.sizing import deletion_costs
from slotfleet.scaling import busy_by_worker

REF = b.QueueRef(name="emails", namespace="team-a", uid="1234-uid")


def spec(**overrides: Any) -> QueueSpec:
    data: dict[str, Any] = {"store": {"secretRef": {"name": "db"}}, **overrides}
    return QueueSpec.model_validate(data)


def test_every_child_is_owned_by_the_queue_as_controller() -> None:
    children = b.build_children(
        REF,
        spec(autoscaling={"mode": "hpa", "minReplicas": 1}, podMonitor=True),
        pod_monitor_available=True,
    )
    kinds = [c["kind"] for c in children]
    assert kinds == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodMonitor",
        "HorizontalPodAutoscaler",
    ]
    for child in children:
        assert child["metadata"]["namespace"] == "team-a"
        assert child["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "slotfleet.dev/v1alpha1",
                "kind": "Queue",
                "name": "emails",
                "uid": "1234-uid",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert child["metadata"]["labels"]["slotfleet.dev/queue"] == "emails"


def test_optional_children_follow_the_spec() -> None:
    kinds = [
        c["kind"]
        for c in b.build_children(
            REF,
            spec(metricsService=False, podMonitor=True, autoscaling={"mode": "off"}),
            pod_monitor_available=False,
        )
    ]
    assert kinds == ["ServiceAccount", "Role", "RoleBinding", "Deployment"]


def test_role_reads_only_its_own_queue() -> None:
    assert b.build_role(REF)["rules"] == [
        {
            "apiGroups": ["slotfleet.dev"],
            "resources": ["queues"],
            "resourceNames": ["emails"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = b.build_role_binding(REF)
    assert binding["roleRef"]["name"] == "emails-worker"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "emails-worker", "namespace": "team-a"}
    ]


def test_deployment_runs_the_worker_for_this_queue() -> None:
    dep = b.build_deployment(
        REF,
        spec(
            queueName="mail",
            executor={"kind": "threads", "concurrency": 8},
            imports=["myapp.tasks"],
            replicas=3,
            drainTimeoutSeconds=30,
            leaseSeconds=6,
            env=[{"name": "LOG_LEVEL", "value": "debug"}],
            resources={"limits": {"memory": "1Gi"}},
        ),
    )
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "slotfleet-worker",
        "slotfleet.dev/queue": "emails",
    }
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "emails-worker"
    assert pod["terminationGracePeriodSeconds"] == 40
    (container,) = pod["containers"]
    cmd = container["command"]
    assert cmd[:4] == ["slotfleet", "worker", "--queue", "mail:threads:8"]
    assert cmd[cmd.index("--queue-resource") + 1] == "team-a/emails"
    assert cmd[cmd.index("--metrics-host") + 1] == "$(POD_IP)"
    assert cmd[cmd.index("--worker-id") + 1] == "$(POD_NAME)"
    assert cmd[cmd.index("--drain-timeout") + 1] == "30"
    assert cmd[cmd.index("--lease-seconds") + 1] == "6"
    assert cmd[cmd.index("--import") + 1] == "myapp.tasks"
    env = {e["name"]: e for e in container["env"]}
    assert env["SLOTFLEET_DSN"]["valueFrom"] == {"secretKeyRef": {"name": "db", "key": "dsn"}}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["LOG_LEVEL"] == {"name": "LOG_LEVEL", "value": "debug"}
    assert [e["name"] for e in container["env"]][:4] == list(OPERATOR_ENV)
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["resources"] == {"limits": {"memory": "1Gi"}}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"]
    assert sc["readOnlyRootFilesystem"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


def test_paused_queue_keeps_its_replicas() -> None:
    assert b.build_deployment(REF, spec(paused=True, replicas=2))["spec"]["replicas"] == 2


def test_hpa_targets_the_queue_scale_on_demand_busy_pods_and_busy_ratio() -> None:
    hpa = b.build_hpa(
        REF,
        spec(
            queueName="mail",
            executor={"concurrency": 4},
            autoscaling={
                "mode": "hpa",
                "minReplicas": 2,
                "maxReplicas": 7,
                "targetUtilization": 0.75,
                "scaleDownStabilizationSeconds": 120,
            },
        ),
    )["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "slotfleet.dev/v1alpha1",
        "kind": "Queue",
        "name": "emails",
    }
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 7)
    by_queue = {"matchLabels": {"queue": "mail"}}
    demand, busy_pods, ratio = hpa["metrics"]
    # ceil((busy + ready) / (4 slots * 0.75)): the built-in autoscaler's formula
    assert demand == {
        "type": "External",
        "external": {
            "metric": {"name": "slotfleet_queue_demand", "selector": by_queue},
            "target": {"type": "AverageValue", "averageValue": "3"},
        },
    }
    assert busy_pods["external"] == {
        "metric": {"name": "slotfleet_queue_busy_pods", "selector": by_queue},
        "target": {"type": "AverageValue", "averageValue": "1"},
    }
    assert ratio["pods"] == {
        "metric": {"name": "slotfleet_slots_busy_ratio"},
        "target": {"type": "AverageValue", "averageValue": "750m"},
    }
    assert hpa["behavior"] == {
        # up at once: one pass may add as many pods as maxReplicas
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 7, "periodSeconds": 15}],
        },
        "scaleDown": {"stabilizationWindowSeconds": 120},
    }


def test_hpa_may_scale_to_zero_and_keeps_the_steps() -> None:
    hpa = b.build_hpa(
        REF,
        spec(
            executor={"concurrency": 3},
            autoscaling={
                "mode": "hpa",
                "minReplicas": 0,
                "targetUtilization": 0.7,
                "maxScaleUpStep": 2,
                "maxScaleDownStep": 1,
            },
        ),
    )["spec"]
    assert hpa["minReplicas"] == 0
    # 3 slots * 0.7 is exactly 2.1 slots a pod, not 2.0999...
    assert hpa["metrics"][0]["external"]["target"]["averageValue"] == "2100m"
    assert hpa["metrics"][0]["external"]["metric"]["selector"] == {
        "matchLabels": {"queue": "emails"}
    }
    assert hpa["behavior"]["scaleUp"]["policies"] == [
        {"type": "Pods", "value": 2, "periodSeconds": 15}
    ]
    assert hpa["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 60,
        "selectPolicy": "Max",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}],
    }


@pytest.mark.parametrize(
    ("value", "text"),
    [("2", "2"), ("1.6", "1600m"), ("0.8", "800m"), ("2.1", "2100m"), ("0.0004", "1m")],
)
def test_hpa_quantities(value: str, text: str) -> None:
    from fractions import Fraction

    from slotfleet.operator.hpa import quantity

    assert quantity(Fraction(value)) == text


def test_metrics_service_is_headless_over_the_metrics_port() -> None:
    svc = b.build_metrics_service(REF, spec(metricsPort=9000))
    assert svc["metadata"]["name"] == "emails-metrics"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"][0]["port"] == 9000


def test_selector_string_matches_the_labels() -> None:
    assert (
        b.selector_string(REF)
        == "app.kubernetes.io/name=slotfleet-worker,slotfleet.dev/queue=emails"
    )


# ---------------------------------------------------------------- status


def job(job_id: int, minute: int) -> QueuedJob:
    return QueuedJob(
        id=JobId(job_id),
        func="m:f",
        queue="emails",
        state="running",
        created_at=datetime(2024, 1, 1, tzinfo=UTC),
        cancel_requested_at=datetime(2024, 1, 1, 0, minute, tzinfo=UTC),
    )


def test_set_condition_keeps_transition_time_while_status_is_unchanged() -> None:
    up = st.ConditionUpdate("StoreReachable", True, "Connected")
    first = st.set_condition([], up, generation=1, now="T1")
    second = st.set_condition(first, up, generation=2, now="T2")
    assert second[0]["lastTransitionTime"] == "T1"
    assert second[0]["observedGeneration"] == 2
    down = st.ConditionUpdate("StoreReachable", False, "StoreError", "connection refused")
    third = st.set_condition(second, down, generation=2, now="T3")
    assert third[0] == {
        "type": "StoreReachable",
        "status": "False",
        "reason": "StoreError",
        "message": "connection refused",
        "lastTransitionTime": "T3",
        "observedGeneration": 2,
    }


def test_cancellations_are_bounded_and_newest_first() -> None:
    """Regression (issue 9, finding 11): oldest first, 100 jobs that ignore their cancel
    held every entry and starved each newer request on Kubernetes."""
    stuck = [job(i, minute=0) for i in range(1, MAX_CANCELLATIONS + 1)]
    newer = job(1000, minute=30)
    entries = st.cancellation_entries([*stuck, newer])
    assert len(entries) == MAX_CANCELLATIONS
    assert entries[0] == {"job": 1000, "requestedAt": "2024-01-01T00:30:00Z"}
    assert int(entries[-1]["job"]) == 2  # the oldest stuck one left


def test_build_status_from_observation() -> None:
    seen = st.Observed(
        generation=3,
        applied_generation=3,
        spec_replicas=2,
        deployment={"status": {"replicas": 2, "readyReplicas": 1}},
        selector="a=b",
        stats=QueueStats(queue="emails", ready=7, running=3, slots_total=20, slots_busy=3),
        cancellations=[job(5, 1)],
        conditions=[st.ConditionUpdate("Ready", False, "WorkersStarting", "1 of 2")],
    )
    status = st.build_status({}, seen, now="T")
    assert status["observedGeneration"] == 3
    assert (status["replicas"], status["readyReplicas"]) == (2, 1)
    assert status["slots"] == {"total": 20, "busy": 3, "free": 17}
    assert status["pending"] == 7
    assert status["cancellations"] == [{"job": 5, "requestedAt": "2024-01-01T00:01:00Z"}]
    assert not st.status_changed(status, st.build_status(status, seen, now="T2"))


def test_unreadable_store_keeps_previous_figures() -> None:
    previous = {
        "slots": {"total": 1, "busy": 1, "free": 0},
        "pending": 4,
        "cancellations": [{"job": 9, "requestedAt": ""}],
    }
    seen = st.Observed(
        generation=1,
        applied_generation=None,
        spec_replicas=1,
        deployment=None,
        selector="",
        stats=None,
        cancellations=None,
        conditions=[],
    )
    status = st.build_status(previous, seen, now="T")
    assert status["pending"] == 4
    assert status["cancellations"] == [{"job": 9, "requestedAt": ""}]


@pytest.mark.parametrize(
    ("ready", "wanted", "expected"),
    [
        (0, 0, ("True", "ScaledToZero")),
        (1, 2, ("False", "WorkersStarting")),
        (2, 2, ("True", "WorkersReady")),
    ],
)
def test_ready_condition(ready: int, wanted: int, expected: tuple[str, str]) -> None:
    cond = st.ready_condition(degraded=None, store_ok=True, ready=ready, wanted=wanted)
    assert (cond.status_text, cond.reason) == expected


def test_a_queue_without_its_worker_deployment_is_not_ready() -> None:
    """Regression: a Queue observed before its first apply wrote the Deployment was
    Ready=True/ScaledToZero (no worker wanted, none ready), so ``kubectl wait
    --for=condition=Ready`` and the 1,000-Queue bench passed with no fleet in place."""
    cond = st.ready_condition(degraded=None, store_ok=True, ready=0, wanted=0, deployed=False)
    assert (cond.status, cond.reason) == (False, "Configuring")


def test_degraded_makes_not_ready() -> None:
    deg = st.ConditionUpdate("Degraded", True, "SecretNotFound", "Secret x/db not found")
    cond = st.ready_condition(degraded=deg, store_ok=None, ready=1, wanted=1)
    assert (cond.status, cond.reason) == (False, "SecretNotFound")


def test_deletion_costs_follow_busy_slots_by_pod_name() -> None:
    pods: list[dict[str, Any]] = [
        {"metadata": {"name": "p1", "annotations": {DELETION_COST_ANNOTATION: "2"}}},
        {"metadata": {"name": "p2"}},
        {"metadata": {"name": "p3", "annotations": {DELETION_COST_ANNOTATION: "5"}}},
        {"metadata": {"name": "p4", "deletionTimestamp": "x"}},
    ]
    workers = [
        WorkerHeartbeat(worker_id="p1", queues={"emails": (4, 2)}),
        WorkerHeartbeat(worker_id="p2", queues={"emails": (4, 3), "other": (1, 1)}),
    ]
    busy = busy_by_worker({}, workers, "emails")
    # costs are buckets of busy slots (0; 1; 2-3; 4-7 ...): p1 (2 busy) stays at 2
    assert deletion_costs(pods, busy) == {"p2": 2, "p3": 0}
    assert b.deletion_cost_patch(3) == {
        "metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "3"}}
    }


def test_deletion_cost_counts_jobs_claimed_since_the_last_heartbeat() -> None:
    """Regression: costs came from heartbeats alone, which lag a claim by up to a third
    of a lease, so a pod that had just taken a job still cost 0 and a scale-down could
    pick it. A running job's lease owner marks its pod busy at once."""

    leased = {"p1": 2, "p2": 1}  # Store.running_by_worker("emails"): by lease owner
    beats = [
        WorkerHeartbeat(worker_id="p1", queues={"emails": (4, 0)}),  # stale: before its claims
        WorkerHeartbeat(worker_id="p4", queues={"emails": (4, 3)}),  # stale the other way
    ]
    assert busy_by_worker(leased, beats, "emails") == {"p1": 2, "p2": 1, "p4": 3}
    pods = [{"metadata": {"name": n}} for n in ("p1", "p2", "p3", "p4")]
    assert deletion_costs(pods, busy_by_worker(leased, beats, "emails")) == {
        "p1": 2,
        "p2": 1,
        "p3": 0,
        "p4": 2,
    }


@pytest.mark.parametrize(
    ("busy", "bucket"), [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (7, 3), (8, 4), (100, 7)]
)
def test_deletion_costs_move_in_coarse_buckets(busy: int, bucket: int) -> None:
    """A pod is patched when its busy slots cross a power of two, not on every slot."""

    def pod(cost: str) -> list[dict[str, Any]]:
        return [{"metadata": {"name": "p", "annotations": {DELETION_COST_ANNOTATION: cost}}}]

    assert deletion_costs(pod("-1"), {"p": busy}) == {"p": bucket}
    assert deletion_costs(pod(str(bucket)), {"p": busy}) == {}


def command(queue_spec: QueueSpec) -> list[str]:
    pod = b.build_deployment(REF, queue_spec)["spec"]["template"]["spec"]
    return list(pod["containers"][0]["command"])


def test_rate_limit_is_passed_to_the_workers() -> None:
    cmd = command(spec(rateLimit={"count": 10, "period": 2}))
    assert cmd[cmd.index("--rate-limit") + 1] == "10/2"
    assert "--rate-limit" not in command(spec())
