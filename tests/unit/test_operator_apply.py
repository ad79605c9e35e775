"""The order of a Queue's apply and what a restarted operator trusts of it (no cluster).

The kube-tier test ``test_operator_killed_mid_reconcile_converges_without_duplicates``
kills a real operator at a random point of its first apply; this one puts the kill at the
one point that lost a child for good.
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from slotfleet.control import QueueView
from slotfleet.models import QueueStats
from slotfleet.operator.handlers import KOPF_CONNECTIONS, bounded_session
from slotfleet.operator.kube import KubeApiError
from slotfleet.operator.reconciler import CHILDREN_DIGEST, QueueReconciler
from slotfleet.operator.secrets import SecretRead
from slotfleet.operator.stores import StoreCache

Json = dict[str, Any]


def queue_body(**spec: Any) -> Json:
    return {
        "apiVersion": "slotfleet.dev/v1alpha1",
        "kind": "Queue",
        "metadata": {"name": "sturdy", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": {"image": "img", "store": {"secretRef": {"name": "db"}}, "replicas": 0, **spec},
    }


class Cluster:
    """What the API server holds, written by server-side apply; ``dies_after`` ends the
    operator (an error nothing catches) right after that kind is written."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], Json] = {}
        self.dies_after: str | None = None
        self.applied: list[str] = []

    async def apply(self, child: Json) -> Json:
        self.objects[(child["kind"], child["metadata"]["name"])] = child
        self.applied.append(child["kind"])
        if child["kind"] == self.dies_after:
            raise SystemExit("SIGKILL")
        return child

    async def has_api(self, api_version: str, plural: str) -> bool:
        return False

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Json | None:
        return self.objects.get((kind, name))

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.objects.pop((kind, name), None)


class Cache:
    """The operator's watch cache: the Deployment as the API server holds it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.synced = True

    def deployment(self, namespace: str, name: str) -> Json | None:
        return self.cluster.objects.get(("Deployment", name))

    def pods(self, namespace: str, queue: str) -> list[Json]:
        return []


class Events:
    def __init__(self) -> None:
        self.posted: list[str] = []

    def info(self, body: Any, reason: str, message: str) -> None:
        self.posted.append(reason)

    def warn(self, body: Any, reason: str, message: str) -> None:
        self.posted.append(reason)


def operator(cluster: Cluster, events: Events | None = None) -> QueueReconciler:
    reconciler = QueueReconciler(cluster, StoreCache(), events or Events())  # type: ignore[arg-type]
    reconciler.cache = Cache(cluster)  # type: ignore[assignment]
    return reconciler


async def test_an_operator_killed_right_after_the_deployment_leaves_no_child_unapplied() -> None:
    """Regression: the Deployment, which carries the digest of every child, was applied
    before the metrics Service; an operator killed between the two left a Deployment
    that said "all applied", and the restarted operator trusted it and never created the
    Service (the kube test timed out waiting for the children)."""
    cluster = Cluster()
    cluster.dies_after = "Deployment"
    with pytest.raises(SystemExit):
        await operator(cluster).apply_children(queue_body())
    cluster.dies_after = None
    await operator(cluster).apply_children(queue_body())  # the restarted operator
    kinds = {kind for kind, _ in cluster.objects}
    assert kinds == {"ServiceAccount", "Role", "RoleBinding", "Service", "Deployment"}
    assert cluster.applied[-1] == "Deployment"  # the digest is written last

    # and once it is all in place, a restart writes nothing
    applies = len(cluster.applied)
    await operator(cluster).apply_children(queue_body())
    assert len(cluster.applied) == applies


async def test_a_child_removed_by_a_spec_change_is_gone_before_the_digest_says_so() -> None:
    """The same for removal: the metrics Service turned off must be deleted before the
    Deployment's digest claims the new spec is in place, or an operator killed in between
    leaves the Service for good."""
    cluster = Cluster()
    await operator(cluster).apply_children(queue_body())
    assert ("Service", "sturdy-metrics") in cluster.objects
    for obj in cluster.objects.values():
        obj["metadata"]["ownerReferences"] = [{"uid": "u-1"}]
    changed = queue_body(metricsService=False)
    changed["metadata"]["generation"] = 2
    cluster.dies_after = "Deployment"
    with pytest.raises(SystemExit):
        await operator(cluster).apply_children(changed)
    assert ("Service", "sturdy-metrics") not in cluster.objects
    deployment = cluster.objects[("Deployment", "sturdy-worker")]
    assert deployment["metadata"]["annotations"][CHILDREN_DIGEST]


async def test_a_failed_apply_of_an_early_child_writes_no_digest() -> None:
    """An API error on an early child ends the apply before the Deployment: nothing
    claims the apply is done, and kopf's retry applies it whole."""

    class Refusing(Cluster):
        async def apply(self, child: Json) -> Json:
            if child["kind"] == "Service":
                raise KubeApiError("boom", status=500)
            return await super().apply(child)

    cluster = Refusing()
    with pytest.raises(KubeApiError):
        await operator(cluster).apply_children(queue_body())
    assert ("Deployment", "sturdy-worker") not in cluster.objects


async def test_a_generation_that_changes_no_child_posts_no_applied_event() -> None:
    """The first size, written through ``/scale`` when the spec leaves ``replicas`` out,
    makes a second generation that builds the same children: it is no news (one Event
    request per new Queue less). A generation that changes a child is."""
    cluster, events = Cluster(), Events()
    reconciler = operator(cluster, events)
    body = queue_body()
    await reconciler.apply_children(body)
    assert events.posted == ["Applied"]
    body["metadata"]["generation"] = 2  # spec.replicas written, as the default already was
    await reconciler.apply_children(body)
    assert events.posted == ["Applied"]
    changed = queue_body(replicas=3)
    changed["metadata"]["generation"] = 3
    await reconciler.apply_children(changed)
    assert events.posted == ["Applied", "Applied"]


async def test_kopf_gets_a_session_with_bounded_connections_and_the_same_credentials() -> None:
    """Regression (issue 13, operator memory): kopf's own session has no connection
    limit, and 1,000 new Queues opened about 200 TLS connections at once for its
    annotation patches, 256 KiB of read buffer each."""
    info = kopf.ConnectionInfo(
        server="https://127.0.0.1:6443", token="t0ken", insecure=True, default_namespace="ns"
    )
    context = bounded_session(info)
    try:
        assert context.server == info.server
        assert context.default_namespace == "ns"
        connector = context.aiohttp_session.connector
        assert connector is not None
        assert connector.limit == KOPF_CONNECTIONS
        assert context.aiohttp_session.headers["Authorization"] == "Bearer t0ken"
    finally:
        await context.aiohttp_session.close()


class Writing(Cluster):
    """The cluster, also taking the operator's status writes."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[Json] = []

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Json, **_: Any
    ) -> Json:
        self.statuses.append(patch["status"])
        return {}


@pytest.mark.parametrize(
    ("synced", "deployed", "ready"),
    [
        (True, False, ("False", "Configuring")),  # listed, and no Deployment: not applied
        (False, False, ("True", "ScaledToZero")),  # still listing: absence says nothing
        (True, True, ("True", "ScaledToZero")),
    ],
)
async def test_ready_waits_for_the_deployment_only_once_the_cache_has_listed(
    synced: bool, deployed: bool, ready: tuple[str, str]
) -> None:
    """A Queue with no worker Deployment is not Ready (it was ``ScaledToZero`` before its
    first apply); but while the operator's cache is still listing at a slow start, a
    missing Deployment says nothing, and Ready must not flap to ``Configuring``."""
    cluster = Writing()
    reconciler = operator(cluster)
    cache = reconciler.cache
    assert isinstance(cache, Cache)
    cache.synced = synced
    body = queue_body(autoscaling={"mode": "off"})
    if deployed:
        cluster.objects[("Deployment", "sturdy-worker")] = {"metadata": {}, "status": {}}
    view = QueueView("sturdy", QueueStats(queue="sturdy"), [], [], {})
    await reconciler.observe(body, reconciler.parse_spec(body), SecretRead(None, None, "1"), view)
    (status,) = cluster.statuses
    found = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert found["Ready"] == ready
