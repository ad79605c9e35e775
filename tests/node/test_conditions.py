"""What the kubelet refuses reaches the Queue: an image it cannot use becomes
``Degraded=True`` with reason ``ImageUnusable`` and the kubelet's own words, ``Ready``
follows, and both recover once the image is fixed. No registry is contacted: the image is
absent with ``imagePullPolicy: Never``. (A name that is not a valid reference never
reaches the kubelet: the Queue's schema refuses it, ``tests/kube/test_queue_validation.py``.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kube.operator_helpers import condition, wait_for

from .cluster import NodeCluster, OperatorRelease
from .helpers import apply_queue, get_queue, node_queue, ready_workers

pytestmark = pytest.mark.node

CASES = {
    "absent": ("localhost/slotfleet-absent:0", "Never", "ErrImageNeverPull"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_unusable_image_is_a_readable_condition_until_it_is_fixed(
    node_cluster: NodeCluster,
    node_operator: OperatorRelease,
    node_namespace: str,
    node_dsn: str,
    case: str,
) -> None:
    image, policy, kubelet_reason = CASES[case]
    admin = node_cluster.admin
    name = f"img-{case}"
    apply_queue(
        node_cluster, node_namespace, node_dsn,
        node_queue(name, image, imagePullPolicy=policy),
    )  # fmt: skip

    def degraded() -> dict[str, Any] | None:
        found = condition(get_queue(admin, node_namespace, name), "Degraded")
        return found if found and found["status"] == "True" else None

    found = wait_for("the Queue to be Degraded", degraded, timeout=90)
    assert found["reason"] == "ImageUnusable"
    assert f"image {image!r} cannot be used ({kubelet_reason})" in found["message"]
    assert found["message"].startswith(f"worker pod {name}-worker-")
    ready = condition(get_queue(admin, node_namespace, name), "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "ImageUnusable")

    apply_queue(
        node_cluster, node_namespace, node_dsn, node_queue(name, node_cluster.images.examples)
    )
    ready_workers(admin, node_namespace, name)

    def recovered() -> bool:
        queue = get_queue(admin, node_namespace, name)
        bad, ok = condition(queue, "Degraded"), condition(queue, "Ready")
        return bool(bad and bad["status"] == "False" and ok and ok["status"] == "True")

    wait_for("Degraded to clear and Ready to return", recovered, timeout=90)
