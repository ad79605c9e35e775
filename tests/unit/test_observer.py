"""The observer loop's bookkeeping of Queue versions and store reads (no cluster needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from slotfleet.control import QueueView
from slotfleet.models import QueueStats
from slotfleet.models.resource import QueueSpec
from slotfleet.operator.cache import slim, slim_deployment
from slotfleet.operator.observer import QueueObserver
from slotfleet.operator.secrets import SecretRead
from slotfleet.operator.stores import StoreCache


def queue(version: str, generation: int = 1, replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": "q",
            "resourceVersion": version,
            "generation": generation,
        },
        "spec": {"replicas": replicas},
    }


async def test_an_older_watch_event_never_replaces_a_newer_version() -> None:
    """Regression: the response of the operator's own status write and the watch's
    events of the same Queue arrive in either order; a late, older event replaced the
    newer version, and the next tick acted on a stale spec.replicas and status."""
    observer = QueueObserver(SimpleNamespace(), StoreCache())  # type: ignore[arg-type]
    observer.track(queue("10"))
    observer.track(queue("12", replicas=3))
    observer.track(queue("11", replicas=1))  # late
    assert observer._bodies[("ns", "q")]["spec"]["replicas"] == 3
    observer.track(queue("13", generation=2, replicas=5))
    assert observer._bodies[("ns", "q")]["spec"]["replicas"] == 5
    assert ("ns", "q") in observer._dirty  # a new generation is looked at at once


class Reconciler:
    """What the observer asks of the reconciler: here, it records each view it is given."""

    store_timeout = 5.0

    def __init__(self) -> None:
        self.seen: list[tuple[str, QueueView]] = []
        self.on_applied: Any = None

    def spec_of(self, body: dict[str, Any]) -> QueueSpec:
        return QueueSpec.model_validate(
            {"image": "img", "store": {"secretRef": {"name": "db"}}, "replicas": 0}
        )

    async def secret_of(self, body: dict[str, Any], spec: QueueSpec) -> SecretRead:
        return SecretRead("postgresql://db", None, "1")

    async def observe(
        self, body: dict[str, Any], spec: QueueSpec, secret: SecretRead, view: QueueView
    ) -> None:
        self.seen.append((body["metadata"]["name"], view))


async def test_an_observation_of_changed_queues_reuses_a_read_younger_than_the_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Idle database statements grew with the number of Queues: every observation of a
    few changed Queues (a Deployment's status, a pod) read the store again. Such a look
    reuses the views of the last read while it is younger than the interval; a full tick,
    a Queue the last read did not cover, an old read and a failed one read afresh."""
    reads: list[list[str]] = []
    broken = {"down"}

    async def read_views(
        stores: StoreCache, dsn: str, queues: list[str], timeout: float
    ) -> dict[str, QueueView]:
        reads.append(sorted(queues))
        return {
            q: QueueView.failed(q, "no")
            if q in broken
            else QueueView(q, QueueStats(queue=q, ready=len(reads)), [], [], {})
            for q in queues
        }

    monkeypatch.setattr("slotfleet.operator.observer.read_views", read_views)
    clock = [100.0]
    monkeypatch.setattr("slotfleet.operator.observer.time.monotonic", lambda: clock[0])
    reconciler = Reconciler()
    observer = QueueObserver(reconciler, StoreCache())  # type: ignore[arg-type]
    for name in ("a", "b", "down"):
        observer.track(queue("1") | {"metadata": {**queue("1")["metadata"], "name": name}})

    await observer.observe_many([("ns", "a"), ("ns", "b"), ("ns", "down")], full=True)
    assert reads == [["a", "b", "down"]]
    clock[0] += 1.0
    await observer.observe_many([("ns", "a")], full=False)
    assert len(reads) == 1  # reused
    assert reconciler.seen[-1][1].stats == QueueStats(queue="a", ready=1)
    await observer.observe_many([("ns", "a"), ("ns", "down")], full=False)
    assert reads[1:] == [["a", "down"]]  # a failed view is never reused
    clock[0] += 2.0  # older than the 2 s interval
    await observer.observe_many([("ns", "b")], full=False)
    assert reads[2:] == [["b"]]
    await observer.observe_many([("ns", "b")], full=True)
    assert reads[3:] == [["b"]]  # a full tick always reads


def test_kept_objects_drop_managed_fields_and_a_deployment_its_pod_template() -> None:
    """At a thousand Queues the operator's memory was mostly copies of objects it never
    reads whole: managedFields on every Queue and pod, and each Deployment's template."""
    body = queue("7") | {"status": {"replicas": 1}}
    body["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    assert "managedFields" not in slim(body)["metadata"]
    assert slim(body)["status"] == {"replicas": 1}
    assert "managedFields" in body["metadata"]  # the caller's object is left as it was
    deployment = {
        "metadata": {"name": "q-worker", "annotations": {"slotfleet.dev/children-digest": "d"}},
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "worker"}]}}},
        "status": {"readyReplicas": 1},
    }
    assert slim_deployment(deployment) == {
        "metadata": deployment["metadata"],
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 1},
    }
