"""What a Queue says about its pods reaches them; what the API server refuses is reported
once and not retried forever; the operator's sizing is not silently overridden.

The operator runs as a subprocess (``--interval 1``) against the real control plane.
"""

# The kubernetes client's stubs mark every model field Optional.
# mypy: disable-error-code="union-attr, index"

from __future__ import annotations

import copy
import re
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slotfleet.operator.handlers import RETRY_DELAY
from tests.unit.test_worker_pod import FULL

from .fixtures import KubeAdmin
from .operator_helpers import (
    OperatorProcess,
    QueueVersions,
    apply_queue,
    condition,
    create_secret,
    get_queue,
    kubectl,
    queue_manifest,
    wait_for,
)

pytestmark = pytest.mark.kube


def warnings(admin: KubeAdmin, namespace: str, name: str, reason: str) -> list[Any]:
    core = client.CoreV1Api(admin.api_client)
    found = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [e for e in found.items if e.reason == reason]


def read_or_none(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def test_the_pod_template_reaches_the_deployment_and_the_budget_follows_the_spec(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = queue_manifest("full")
    spec = copy.deepcopy(FULL)
    spec.update(replicas=0, env=manifest["spec"]["env"] + spec["env"])
    manifest["spec"] = {**manifest["spec"], **spec}
    apply_queue(kube_admin, namespace, manifest)
    apps = client.AppsV1Api(kube_admin.api_client)
    policy = client.PolicyV1Api(kube_admin.api_client)
    core = client.CoreV1Api(kube_admin.api_client)
    # accepted by the API server's own Deployment validation, as merged by the operator
    deployment = wait_for(
        "the worker Deployment",
        lambda: read_or_none(apps.read_namespaced_deployment, "full-worker", namespace),
    )
    pod = deployment.spec.template.spec
    given = FULL["template"]["spec"]
    assert pod.node_selector == given["nodeSelector"]
    assert [s.name for s in pod.image_pull_secrets] == ["regcred"]
    assert pod.tolerations[0].key == "dedicated"
    assert pod.affinity.pod_anti_affinity is not None
    assert pod.topology_spread_constraints[0].topology_key == "topology.kubernetes.io/zone"
    assert pod.priority_class_name == "batch-low"
    assert [v.name for v in pod.volumes] == ["tmp", "certs"]
    assert (pod.security_context.run_as_user, pod.security_context.run_as_non_root) == (2000, True)
    assert deployment.spec.template.metadata.labels["team"] == "mail"
    assert deployment.spec.template.metadata.annotations == {"mesh/inject": "false"}
    (container,) = pod.containers
    names = [e.name for e in container.env]
    assert names[:4] == ["SLOTFLEET_DSN", "POD_NAME", "POD_NAMESPACE", "POD_IP"]
    assert "API_TOKEN" in names
    assert container.env_from[0].config_map_ref.name == "settings"
    assert container.resources.limits == {"memory": "1Gi"}
    assert container.security_context.read_only_root_filesystem is True
    account = core.read_namespaced_service_account("full-worker", namespace)
    assert account.metadata.annotations["iam.gke.io/gcp-service-account"] == "q@p.iam"
    budget = wait_for(
        "the PodDisruptionBudget",
        lambda: read_or_none(
            policy.read_namespaced_pod_disruption_budget, "full-worker", namespace
        ),
    )
    assert budget.spec.max_unavailable == 1
    assert budget.metadata.owner_references[0].kind == "Queue"

    del manifest["spec"]["podDisruptionBudget"]
    apply_queue(kube_admin, namespace, manifest)
    wait_for(
        "the PodDisruptionBudget removed",
        lambda: (
            read_or_none(policy.read_namespaced_pod_disruption_budget, "full-worker", namespace)
            is None
        ),
    )


def test_a_child_the_api_server_refuses_is_reported_once_not_retried_every_few_seconds(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    """Regression: a 422 for a child was retried every 5 s forever, with a Warning Event
    each time (16 Events in 76 s). Now: Degraded with the server's message, one Event,
    and a new attempt only when the Queue or its Secret changes."""
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = queue_manifest("refused", replicas=0)
    # valid for the Queue's schema (affinity is the API server's to check), invalid for a pod
    manifest["spec"]["template"] = {
        "spec": {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}
                }
            }
        }
    }
    apply_queue(kube_admin, namespace, manifest)

    def degraded() -> dict[str, Any] | None:
        cond = condition(get_queue(kube_admin, namespace, "refused"), "Degraded")
        return cond if cond and cond["status"] == "True" else None

    cond = wait_for("Degraded", degraded)
    assert cond["reason"] == "ChildRejected"
    assert cond["message"].startswith("the API server refused Deployment refused-worker: ")
    assert "nodeSelectorTerms" in cond["message"]  # the server's own words
    ready = condition(get_queue(kube_admin, namespace, "refused"), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ChildRejected")
    # the old retry delay, more than twice over: it would have posted three Events by now
    time.sleep(2.5 * RETRY_DELAY)
    assert len(warnings(kube_admin, namespace, "refused", "ChildRejected")) == 1
    log = operator.log.read_text(errors="replace")
    assert len(re.findall(r"Handler 'children[^']*' failed permanently", log)) == 1, log[-3000:]
    assert "failed temporarily" not in log

    # the Secret changes: one more attempt (it fails the same way: still one Event)
    create_secret(kube_admin, namespace, postgres_dsn + "?application_name=changed")
    wait_for(
        "an attempt after the Secret changed",
        lambda: (
            "or its Secret changed: applying its children again"
            in operator.log.read_text(errors="replace")
        ),
    )
    assert len(warnings(kube_admin, namespace, "refused", "ChildRejected")) == 1

    # the Queue is fixed: the Deployment appears and Degraded clears
    del manifest["spec"]["template"]
    apply_queue(kube_admin, namespace, manifest)
    apps = client.AppsV1Api(kube_admin.api_client)
    wait_for(
        "the Deployment",
        lambda: read_or_none(apps.read_namespaced_deployment, "refused-worker", namespace),
    )
    wait_for(
        "Degraded=False",
        lambda: (
            condition(get_queue(kube_admin, namespace, "refused"), "Degraded")["status"] == "False"
        ),
    )


def test_kubectl_scale_in_operator_mode_is_put_back_with_the_reason(
    kube_admin: KubeAdmin, namespace: str, operator: OperatorProcess, postgres_dsn: str
) -> None:
    create_secret(kube_admin, namespace, postgres_dsn)
    manifest = queue_manifest(
        "sized", autoscaling={"mode": "operator", "minReplicas": 0, "maxReplicas": 4}
    )
    del manifest["spec"]["replicas"]  # a new Queue says nothing: it starts at minReplicas
    apply_queue(kube_admin, namespace, manifest)
    wait_for(
        "spec.replicas filled in as 0",
        lambda: get_queue(kube_admin, namespace, "sized")["spec"].get("replicas") == 0,
    )
    wait_for(
        "the operator's first sizing",
        lambda: condition(get_queue(kube_admin, namespace, "sized"), "Scaling"),
    )
    with QueueVersions(kube_admin, namespace, "sized") as versions:
        kubectl(kube_admin, "scale", "queue", "sized", "-n", namespace, "--replicas=3")
        wait_for(
            "spec.replicas back to 0",
            lambda: get_queue(kube_admin, namespace, "sized")["spec"]["replicas"] == 0,
        )
        [event] = wait_for(
            "a ScaleReverted Event",
            lambda: warnings(kube_admin, namespace, "sized", "ScaleReverted"),
        )
        assert event.type == "Warning"
        assert event.message.startswith("replicas 3 -> 0: reverted spec.replicas 3")
        assert 'set autoscaling.mode: "off" to size it by hand' in event.message
        # the status said why when it reverted (a later look may already say "idle")
        wait_for(
            "the Scaling condition of the reverting observation",
            lambda: any(
                "reverted spec.replicas 3" in (condition(v, "Scaling") or {}).get("message", "")
                for v in list(versions.versions)
            ),
        )
