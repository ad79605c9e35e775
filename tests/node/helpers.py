# The kubernetes client marks every model field Optional; these tests read fields the API
# server and the kubelet always set for a running pod.
# mypy: disable-error-code="union-attr, arg-type"
"""Small helpers of the node tier's tests: Queue manifests for the built images, pods and
their containers as the kubelet reports them, a container's PID on the host, ``kubectl
exec`` into a worker, and the job store.

What this module is not: fixtures (``tests/node/conftest.py``) or assertions.
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from tests.kube.fixtures import KubeAdmin
from tests.kube.helm import kubectl
from tests.kube.operator_helpers import (
    GROUP,
    PLURAL,
    VERSION,
    create_secret,
    queue_manifest,
    wait_for,
)

from .cluster import NodeCluster

Json = dict[str, Any]


def node_queue(name: str, image: str, **spec: Any) -> Json:
    """A Queue whose workers run ``examples.tasks`` from ``image`` (the examples image):
    the stand-in tier's manifest without its local-process environment."""
    return queue_manifest(name, **{"image": image, "env": [], "drainTimeoutSeconds": 20, **spec})


def start_queue(
    cluster: NodeCluster, namespace: str, dsn: str, name: str, **spec: Any
) -> client.V1Pod:
    """Apply a one-worker Queue on the examples image and wait for its worker to be Ready."""
    apply_queue(cluster, namespace, dsn, node_queue(name, cluster.images.examples, **spec))
    [pod] = ready_workers(cluster.admin, namespace, name)
    return pod


def apply_queue(cluster: NodeCluster, namespace: str, dsn: str, manifest: Json) -> None:
    create_secret(cluster.admin, namespace, dsn)
    kubectl(
        cluster.admin.kubeconfig, "apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest)
    )


def get_queue(admin: KubeAdmin, namespace: str, name: str) -> Json:
    found = client.CustomObjectsApi(admin.api_client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    assert isinstance(found, dict)
    return found


def worker_pods(admin: KubeAdmin, namespace: str, queue: str) -> list[client.V1Pod]:
    pods = client.CoreV1Api(admin.api_client).list_namespaced_pod(
        namespace, label_selector=f"slotfleet.dev/queue={queue}"
    )
    return [p for p in pods.items if p.metadata.deletion_timestamp is None]


def ready_workers(
    admin: KubeAdmin, namespace: str, queue: str, count: int = 1
) -> list[client.V1Pod]:
    """Wait until ``count`` worker pods are Ready (the kubelet's readiness probe passed)."""

    def ready() -> list[client.V1Pod] | None:
        pods = [
            p
            for p in worker_pods(admin, namespace, queue)
            if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return pods if len(pods) >= count else None

    found: list[client.V1Pod] = wait_for(f"{count} ready worker pod(s) of {queue}", ready, 180)
    return found


def container_status(pod: client.V1Pod, name: str = "worker") -> client.V1ContainerStatus:
    for status in pod.status.container_statuses or []:
        if status.name == name:
            return status
    raise AssertionError(f"pod {pod.metadata.name} has no status for container {name}")


def container_pid(cluster: NodeCluster, pod: client.V1Pod, name: str = "worker") -> int:
    """The host PID of a container's first process, from containerd's task list."""
    container_id = str(container_status(pod, name).container_id).removeprefix("containerd://")
    for line in cluster.node.ctr("tasks", "list").splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == container_id:
            return int(fields[1])
    raise AssertionError(f"containerd has no task {container_id} for pod {pod.metadata.name}")


def exec_python(cluster: NodeCluster, namespace: str, pod: str, code: str) -> str:
    """Run ``python -c code`` inside the worker container (``kubectl exec``, through the
    API server and the kubelet); its stdout."""
    proc = kubectl(
        cluster.admin.kubeconfig, "exec", "-n", namespace, pod, "-c", "worker", "--",
        "python", "-c", code,
    )  # fmt: skip
    return proc.stdout
