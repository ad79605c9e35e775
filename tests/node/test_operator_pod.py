# The kubernetes client marks every model field Optional; these tests read fields the API
# server and the kubelet always set for a running pod.
# mypy: disable-error-code="union-attr, arg-type"
"""The chart and the operator on a real node: ``helm install`` runs the operator as a pod
from the image built from the Dockerfile, and its Queue's workers run as containers from
the examples image, scheduled by kube-scheduler and started by the kubelet."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from kubernetes import client

from tests.kube.operator_helpers import email, store_enqueue, store_list, wait_for

from .cluster import NodeCluster, OperatorRelease
from .configs import NODE_NAME
from .helpers import (
    apply_queue,
    container_pid,
    container_status,
    get_queue,
    node_queue,
    ready_workers,
)

pytestmark = pytest.mark.node


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def test_helm_install_runs_the_operator_from_the_built_image_and_it_runs_a_queue(
    node_cluster: NodeCluster, node_operator: OperatorRelease, node_namespace: str, node_dsn: str
) -> None:
    admin, core = node_cluster.admin, client.CoreV1Api(node_cluster.admin.api_client)
    pod = core.read_namespaced_pod(node_operator.pod, node_operator.namespace)
    operator = container_status(pod, "operator")
    assert operator.ready, "the operator is not Ready"
    assert operator.restart_count == 0
    assert operator.image == node_operator.image
    assert str(operator.container_id).startswith("containerd://")
    assert pod.spec.node_name == NODE_NAME
    # the second replica waits for the Lease, answering its liveness probe meanwhile
    standby = core.read_namespaced_pod(node_operator.standby, node_operator.namespace)
    assert container_status(standby, "operator").restart_count == 0
    # the chart's restricted security context, as the kernel sees the operator process
    seen = proc_status(container_pid(node_cluster, pod, "operator"))
    assert seen["Uid"].split()[:2] == ["10001", "10001"]
    assert seen["CapEff"] == "0000000000000000"

    apply_queue(
        node_cluster,
        node_namespace,
        node_dsn,
        node_queue("emails", node_cluster.images.examples, replicas=2),
    )
    pods = ready_workers(admin, node_namespace, "emails", count=2)
    names = {p.metadata.name for p in pods}
    for worker in pods:
        status = container_status(worker)
        assert status.image == node_cluster.images.examples
        assert str(status.container_id).startswith("containerd://")
        assert worker.spec.node_name == NODE_NAME
        assert worker.status.pod_ip.startswith("10.244.0.")
    scheduled = [
        e
        for e in core.list_namespaced_event(node_namespace).items
        if e.reason == "Scheduled" and e.involved_object.name in names
    ]
    assert {e.involved_object.name for e in scheduled} == names, "kube-scheduler placed them"

    jobs = [email("emails", f"user{i}@example.com", seconds=3.0) for i in range(8)]
    asyncio.run(store_enqueue(node_dsn, jobs))

    def owners_while_running() -> set[str] | None:
        rows = asyncio.run(store_list(node_dsn, "emails"))
        running = [j for j in rows if j.state == "running"]
        return {str(j.lease_owner) for j in running} if len(running) == len(jobs) else None

    assert wait_for("all 8 jobs running", owners_while_running, timeout=60) == names

    def all_succeeded() -> bool:
        rows = asyncio.run(store_list(node_dsn, "emails"))
        return len(rows) == len(jobs) and all(j.state == "succeeded" for j in rows)

    wait_for("every job to succeed", all_succeeded, timeout=60)

    def settled() -> dict[str, object] | None:
        """Ready, and the heartbeats (every few seconds) show every slot free again."""
        status = get_queue(admin, node_namespace, "emails").get("status") or {}
        ready = [c for c in status.get("conditions") or [] if c["type"] == "Ready"]
        idle = status.get("slots") == {"total": 8, "busy": 0, "free": 8}
        return status if ready and ready[0]["status"] == "True" and idle else None

    reported = wait_for("the Queue to report Ready with 8 free slots", settled, timeout=60)
    assert reported["readyReplicas"] == 2
