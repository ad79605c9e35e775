"""Namespace users see Queues: the chart's ClusterRoles are aggregated into the cluster's
built-in ``view`` and ``edit`` roles (by the clusterrole-aggregation controller), so a
user bound to ``view`` in a namespace can list its Queues, and one bound to ``edit`` can
create and scale them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from .fixtures import KubeAdmin
from .helm import Helm, find, kubectl
from .operator_helpers import wait_for

pytestmark = pytest.mark.kube


@pytest.fixture(scope="module")
def helm(kube_bin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm.from_bin_dir(kube_bin_dir, tmp_path_factory.mktemp("helm"))


def allowed(admin: KubeAdmin, namespace: str, verb: str, subresource: str = "") -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="alice",
            groups=["system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace,
                group="slotfleet.dev",
                resource="queues",
                subresource=subresource,
                verb=verb,
            ),
        )
    )
    result = client.AuthorizationV1Api(admin.api_client).create_subject_access_review(review)
    assert result.status is not None
    return bool(result.status.allowed)


def bind(admin: KubeAdmin, namespace: str, role: str) -> None:
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"alice-{role}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }
    kubectl(admin.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(binding))


def test_view_and_edit_users_see_and_change_queues(
    helm: Helm, kube_admin: KubeAdmin, namespace: str
) -> None:
    release = f"roles-{uuid.uuid4().hex[:5]}"
    roles = [
        doc
        for doc in find(helm.template({}, release=release), "ClusterRole")
        if doc["metadata"]["name"].startswith(f"{release}-slotfleet-queues-")
    ]
    assert len(roles) == 2
    text = yaml.safe_dump_all(roles)
    kubectl(kube_admin.kubeconfig, "apply", "-f", "-", stdin=text)
    try:
        assert not allowed(kube_admin, namespace, "list")
        bind(kube_admin, namespace, "view")
        wait_for("view to list Queues", lambda: allowed(kube_admin, namespace, "list"), 30)
        assert allowed(kube_admin, namespace, "get", "status")
        assert not allowed(kube_admin, namespace, "create")
        assert not allowed(kube_admin, namespace, "patch", "scale")
        bind(kube_admin, namespace, "edit")
        wait_for("edit to create Queues", lambda: allowed(kube_admin, namespace, "create"), 30)
        assert allowed(kube_admin, namespace, "patch", "scale")
        assert allowed(kube_admin, namespace, "delete")
        assert not allowed(kube_admin, "default", "list")  # bound in one namespace only
    finally:
        kubectl(kube_admin.kubeconfig, "delete", "-f", "-", "--ignore-not-found", stdin=text)
