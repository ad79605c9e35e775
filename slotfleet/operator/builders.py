"""Pure builders of a Queue's children: plain manifests as dicts, no I/O.

The kopf handlers (``slotfleet.operator.handlers``) read a Queue, call these functions and
apply the results with server-side apply; everything a reviewer wants to check about what
the operator creates (labels, RBAC, the worker command, probes, security context) is here
and unit-tested without a cluster. Status and conditions live in
``slotfleet.operator.status``.

Per Queue ``NAME`` in namespace ``NS``:

* ServiceAccount ``NAME-worker``, a Role ``NAME-worker`` that can only get/list/watch this
  one Queue (``resourceNames``; list/watch work through ``fieldSelector=metadata.name``),
  and a RoleBinding between them: a worker can see its Queue's cancellations and
  ``paused`` flag, and nothing else (no Secrets, no other Queues, no writes);
* Deployment ``NAME-worker`` running ``slotfleet worker``, its replicas = ``spec.replicas``
  (its pod template: ``slotfleet.operator.workerpod``);
* optionally a PodDisruptionBudget ``NAME-worker`` (``spec.podDisruptionBudget``);
* optionally a headless Service ``NAME-metrics``, a PodMonitor ``NAME`` and, in
  ``autoscaling.mode: hpa``, a HorizontalPodAutoscaler ``NAME`` on the Queue's ``/scale``.

Every child carries an owner reference (``controller: true``, ``blockOwnerDeletion``) to
the Queue, so the garbage collector removes it with the Queue; no finalizer is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slotfleet.models.pod import DELETION_COST_ANNOTATION
from slotfleet.models.resource import GROUP, KIND, PLURAL, VERSION, AutoscalingMode, QueueSpec
from slotfleet.operator.hpa import hpa_behavior, hpa_metrics
from slotfleet.operator.workerpod import METRICS_PORT_NAME, worker_pod_template

Json = dict[str, Any]

API_VERSION = f"{GROUP}/{VERSION}"
WORKER_APP = "slotfleet-worker"
QUEUE_LABEL = f"{GROUP}/queue"
MANAGED_BY = "slotfleet-operator"


@dataclass(frozen=True, slots=True)
class QueueRef:
    """The Queue that owns the children: what the builders need of its metadata."""

    name: str
    namespace: str
    uid: str

    def owner_reference(self) -> Json:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    @property
    def worker_name(self) -> str:
        """Name of the worker Deployment, ServiceAccount, Role and RoleBinding."""
        return f"{self.name}-worker"

    @property
    def metrics_service_name(self) -> str:
        return f"{self.name}-metrics"

    @property
    def resource(self) -> str:
        """``NS/NAME``, as the worker's ``--queue-resource`` takes it."""
        return f"{self.namespace}/{self.name}"


def selector_labels(queue: QueueRef) -> dict[str, str]:
    """Labels that select the worker pods of ``queue`` (immutable in the Deployment)."""
    return {"app.kubernetes.io/name": WORKER_APP, QUEUE_LABEL: queue.name}


def selector_string(queue: QueueRef) -> str:
    """The selector as ``status.selector`` (and ``kubectl get pods -l``) take it."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(queue).items())


def child_labels(queue: QueueRef) -> dict[str, str]:
    return {
        **selector_labels(queue),
        "app.kubernetes.io/instance": queue.name,
        "app.kubernetes.io/part-of": "slotfleet",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def _metadata(queue: QueueRef, name: str) -> Json:
    return {
        "name": name,
        "namespace": queue.namespace,
        "labels": child_labels(queue),
        "ownerReferences": [queue.owner_reference()],
    }


def build_service_account(queue: QueueRef, spec: QueueSpec) -> Json:
    """The workers' identity; ``spec.serviceAccount.annotations`` bind it to a cloud
    identity (workload identity)."""
    metadata = _metadata(queue, queue.worker_name)
    annotations = spec.service_account.annotations if spec.service_account else None
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata}


def build_role(queue: QueueRef) -> Json:
    """Read-only access to this one Queue; workers never write it."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(queue, queue.worker_name),
        "rules": [
            {
                "apiGroups": [GROUP],
                "resources": [PLURAL],
                "resourceNames": [queue.name],
                "verbs": ["get", "list", "watch"],
            }
        ],
    }


def build_role_binding(queue: QueueRef) -> Json:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(queue, queue.worker_name),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": queue.worker_name,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": queue.worker_name, "namespace": queue.namespace}
        ],
    }


def build_deployment(queue: QueueRef, spec: QueueSpec) -> Json:
    """The worker Deployment. Replicas follow ``spec.replicas`` in every mode: the
    autoscaler and HPAs write ``spec.replicas`` through the Queue's ``/scale``. A paused
    Queue keeps its pods; the workers stop fetching when they see ``spec.paused``. The
    pod template is :func:`slotfleet.operator.workerpod.worker_pod_template`."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(queue, queue.worker_name),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(queue)},
            # a new pod must be ready before an old one drains: no capacity dip on rollout
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": worker_pod_template(
                spec.effective_queue_name(queue.name),
                queue.resource,
                spec,
                service_account=queue.worker_name,
                labels=child_labels(queue),
            ),
        },
    }


def build_pod_disruption_budget(queue: QueueRef, spec: QueueSpec) -> Json | None:
    """A PodDisruptionBudget over the worker pods, when ``spec.podDisruptionBudget`` asks."""
    budget = spec.pod_disruption_budget
    if budget is None:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(queue, queue.worker_name),
        "spec": {
            "selector": {"matchLabels": selector_labels(queue)},
            **budget.model_dump(by_alias=True, exclude_none=True),
        },
    }


def build_metrics_service(queue: QueueRef, spec: QueueSpec) -> Json:
    """A headless Service over the workers' metrics port (for scraping by Service)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(queue, queue.metrics_service_name),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(queue),
            "ports": [
                {
                    "name": METRICS_PORT_NAME,
                    "port": spec.metrics_port,
                    "targetPort": METRICS_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_pod_monitor(queue: QueueRef) -> Json:
    """A Prometheus Operator PodMonitor scraping every worker pod's ``/metrics``."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PodMonitor",
        "metadata": _metadata(queue, queue.name),
        "spec": {
            "selector": {"matchLabels": selector_labels(queue)},
            "podMetricsEndpoints": [{"port": METRICS_PORT_NAME, "path": "/metrics"}],
        },
    }


def build_hpa(queue: QueueRef, spec: QueueSpec) -> Json:
    """An autoscaling/v2 HPA that scales the Queue itself (its ``/scale``) on the queue's
    demand, the pods running jobs and the workers' busy-slot ratio
    (``slotfleet.operator.hpa`` says why each)."""
    scaling = spec.autoscaling
    queue_name = spec.effective_queue_name(queue.name)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(queue, queue.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": API_VERSION, "kind": KIND, "name": queue.name},
            # 0 needs the HPAScaleToZero feature gate (beta, on by default since 1.37)
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": hpa_metrics(queue_name, spec.executor.concurrency, scaling),
            "behavior": hpa_behavior(scaling),
        },
    }


def build_children(queue: QueueRef, spec: QueueSpec, *, pod_monitor_available: bool) -> list[Json]:
    """Every child the Queue should have now: identity and RBAC before the pods that use
    them. The reconciler applies the worker Deployment last whatever its place here (its
    digest annotation says every other child is in place)."""
    children = [
        build_service_account(queue, spec),
        build_role(queue),
        build_role_binding(queue),
        build_deployment(queue, spec),
    ]
    budget = build_pod_disruption_budget(queue, spec)
    if budget is not None:
        children.append(budget)
    if spec.metrics_service:
        children.append(build_metrics_service(queue, spec))
    if spec.pod_monitor and pod_monitor_available:
        children.append(build_pod_monitor(queue))
    if spec.autoscaling.mode is AutoscalingMode.HPA:
        children.append(build_hpa(queue, spec))
    return children


def deletion_cost_patch(busy: int) -> Json:
    """A pod patch that makes the ReplicaSet controller delete idle workers first."""
    return {"metadata": {"annotations": {DELETION_COST_ANNOTATION: str(busy)}}}
