"""The observer loop's bookkeeping of Queue versions (no cluster needed)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from slotfleet.operator.observer import QueueObserver
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
