"""A DSN's password stays secret: planted in the store Secret, it appears in no Queue
status, no Event, no operator or worker log and no process's command line, whether the
DSN works or is malformed (libpq echoes a malformed DSN whole into its error)."""

# The kubernetes client's stubs mark every model field Optional.
# mypy: disable-error-code="union-attr, no-untyped-call"

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.fixtures.secrets import command_lines, with_password

from .fixtures import KubeAdmin
from .operator_helpers import (
    OperatorProcess,
    apply_queue,
    condition,
    create_secret,
    get_queue,
    queue_manifest,
    running_pods,
    wait_for,
)
from .testnode import TestNode

pytestmark = pytest.mark.kube

PASSWORD = "Planted-Pw-7f3c91"


def leaks(admin: KubeAdmin, namespace: str, operator: OperatorProcess, node: TestNode) -> list[str]:
    """Where the planted password shows: status, Events, logs, command lines."""
    found = []
    queue = get_queue(admin, namespace, "secretive")
    if PASSWORD in json.dumps(queue):
        found.append("the Queue")
    core = client.CoreV1Api(admin.api_client)
    for event in core.list_namespaced_event(namespace).items:
        if PASSWORD in json.dumps(client.ApiClient().sanitize_for_serialization(event)):
            found.append(f"Event {event.reason}")
    if PASSWORD in operator.log.read_text(errors="replace"):
        found.append("the operator's log")
    for pod in core.list_namespaced_pod(namespace).items:
        log = node.log_path(namespace, str(pod.metadata.name), "worker")
        if log.exists() and PASSWORD in log.read_text(errors="replace"):
            found.append(f"the log of pod {pod.metadata.name}")
    found += [f"argv: {line[:200]}" for line in command_lines() if PASSWORD in line]
    return found


def test_a_planted_password_shows_nowhere(
    kube_admin: KubeAdmin,
    namespace: str,
    operator: OperatorProcess,
    test_node: TestNode,
    postgres_dsn: str,
) -> None:
    # a working DSN: the operator reads the store, a worker runs
    create_secret(kube_admin, namespace, with_password(postgres_dsn, PASSWORD))
    apply_queue(kube_admin, namespace, queue_manifest("secretive", replicas=1))
    wait_for("a worker pod running", lambda: running_pods(kube_admin, namespace, "secretive"), 60)
    wait_for(
        "StoreReachable=True",
        lambda: (
            (c := condition(get_queue(kube_admin, namespace, "secretive"), "StoreReachable"))
            and c["status"] == "True"
        ),
    )
    assert leaks(kube_admin, namespace, operator, test_node) == []

    # a malformed one: libpq's parse error quotes it whole (an unclosed IPv6 bracket)
    create_secret(kube_admin, namespace, f"postgresql://app:{PASSWORD}@[::1/jobs")

    def unreachable() -> dict[str, str] | None:
        cond = condition(get_queue(kube_admin, namespace, "secretive"), "StoreReachable")
        return cond if cond and cond["status"] == "False" else None

    cond = wait_for("StoreReachable=False", unreachable)
    # the error is there, quoting the DSN, with the password masked
    assert "postgresql://app:***@[::1/jobs" in cond["message"], cond["message"]
    # a worker started now reads the malformed DSN and fails the same way
    core = client.CoreV1Api(kube_admin.api_client)
    [pod] = running_pods(kube_admin, namespace, "secretive")
    core.delete_namespaced_pod(pod.metadata.name, namespace)

    def failed_worker_log() -> str | None:
        for p in core.list_namespaced_pod(namespace).items:
            log = test_node.log_path(namespace, str(p.metadata.name), "worker")
            text = log.read_text(errors="replace") if log.exists() else ""
            if "invalid PostgreSQL DSN" in text:
                return text
        return None

    text = wait_for("a worker failing on the malformed DSN", failed_worker_log, 60)
    assert "postgresql://app:***@[::1/jobs" in text
    assert leaks(kube_admin, namespace, operator, test_node) == []
