"""Sizing a Queue's fleet in ``mode: operator``: pod deletion costs, then the decision.

Two steps each tick, in this order (:meth:`QueueReconciler.observe` calls them):

* :func:`update_deletion_costs` keeps every worker pod's
  ``controller.kubernetes.io/pod-deletion-cost`` at its busy slots (running jobs by lease
  owner, or the heartbeat if higher), so the ReplicaSet controller removes idle pods
  first;
* :func:`autoscale` runs the shared autoscaler (``slotfleet.scaling.decide``) and writes
  ``spec.replicas`` through the Queue's ``/scale``: the fleet never shrinks below the
  pods running jobs, and a scale-down waits a tick while a cost was just changed. A
  ``spec.replicas`` someone else wrote (``kubectl scale``) is put back with a Warning
  Event, ``ScaleReverted``, and the ``Scaling`` condition saying why.

What this module is not: it reads no store (the caller passes the store's view) and
owns no status; it is the only place the operator resizes a fleet.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from slotfleet.models import QueueStats
from slotfleet.models.resource import QueueSpec
from slotfleet.operator import status as st
from slotfleet.operator.builders import (
    API_VERSION,
    QueueRef,
    deletion_cost_patch,
)
from slotfleet.operator.kube import KubeApiError, KubeClient
from slotfleet.operator.stores import StoreView
from slotfleet.scaling import Decision, Observation, ScalerState, busy_by_worker, decide


class EventSink(Protocol):
    """Kubernetes Events about a Queue (kopf posts them in the operator)."""

    def info(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...

    def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...


@dataclass
class SizingMemory:
    """The autoscaler's state for one Queue between ticks (reset when its settings change)."""

    scaler: ScalerState = field(default_factory=ScalerState)
    scaler_spec: Any = None
    last_decision: Decision | None = None


async def autoscale(
    kube: KubeClient,
    events: EventSink,
    body: Mapping[str, Any],
    ref: QueueRef,
    spec: QueueSpec,
    stats: QueueStats,
    memory: SizingMemory,
    *,
    busy_pods: int,
    costs_settled: bool,
    paused: bool,
) -> Decision:
    """``mode: operator``: decide with the shared autoscaler and write ``spec.replicas``
    through the Queue's ``/scale`` (so the Deployment follows by the same path as
    ``kubectl scale`` or an HPA).

    The fleet never shrinks below the pods running jobs (``busy_pods``), and a
    scale-down waits a tick when a pod's deletion cost changed on this one
    (``costs_settled`` false): the ReplicaSet controller must see which pods are busy
    before it picks the ones to remove.

    A ``paused`` queue's backlog is no demand (no worker would take it): the fleet
    follows its running jobs only, and grows again once the pause ends."""
    if memory.scaler_spec != spec.autoscaling:
        memory.scaler_spec = spec.autoscaling
        memory.scaler = ScalerState(last_active=memory.scaler.last_active)
    # the operator's last word differs from spec.replicas: someone else (kubectl scale, an
    # edit of the Queue) changed it. Mode operator puts it back, and says so; the outside
    # number is not what the autoscaler sized, so it decides from its own.
    last = memory.last_decision
    overridden = last is not None and last.replicas != spec.replicas
    observation = Observation(
        at=time.monotonic(),
        replicas=last.replicas if last is not None and overridden else spec.replicas,
        slots_per_pod=spec.executor.concurrency,
        busy=stats.running,
        ready_pending=0 if paused else stats.ready,
        busy_pods=busy_pods,
    )
    decision, memory.scaler = decide(memory.scaler, observation, spec.autoscaling)
    held = decision.replicas < spec.replicas and not costs_settled
    if held:
        decision = Decision(
            spec.replicas,
            f"holding: marking busy pods before scaling down ({decision.reason})",
            decision.desired,
        )
    if overridden and decision.replicas != spec.replicas:
        decision = Decision(
            decision.replicas,
            f"reverted spec.replicas {spec.replicas}, set outside the operator: "
            f"autoscaling.mode is operator, so the operator sizes this Queue "
            f'(set autoscaling.mode: "off" to size it by hand); {decision.reason}',
            decision.desired,
        )
    # a hold keeps the outside number for a tick; it does not make it the operator's
    memory.last_decision = last if overridden and held else decision
    if decision.replicas != spec.replicas:
        await write_replicas(kube, ref, decision.replicas)
        message = f"replicas {spec.replicas} -> {decision.replicas}: {decision.reason}"
        if overridden:
            events.warn(body, "ScaleReverted", message)
        else:
            events.info(body, "Scaled", message)
    return decision


async def write_replicas(kube: KubeClient, ref: QueueRef, replicas: int) -> None:
    """``spec.replicas`` through the Queue's ``/scale``: how the operator sizes a fleet
    (the Deployment follows by the same path as ``kubectl scale`` or an HPA)."""
    await kube.merge_patch(
        API_VERSION,
        "Queue",
        ref.namespace,
        ref.name,
        {"spec": {"replicas": replicas}},
        subresource="scale",
    )


async def update_deletion_costs(
    kube: KubeClient,
    ref: QueueRef,
    queue: str,
    view: StoreView,
    pods: Sequence[Mapping[str, Any]],
) -> tuple[int, bool]:
    """Keep each pod's deletion cost at its busy slots; return how many live pods run
    jobs and whether every cost was already right (nothing patched).

    Without the store's figures the costs stay as they are, and the answer is
    ``(0, False)``: nothing may be scaled down on a guess.
    """
    if view.stats is None:
        return 0, False
    busy = busy_by_worker(view.leased, view.workers, queue)
    live = [
        str(p["metadata"].get("name", ""))
        for p in pods
        if not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    busy_pods = sum(1 for name in live if busy.get(name, 0) > 0)
    changes = st.deletion_costs(pods, busy)
    for name, slots in changes.items():
        try:
            await kube.merge_patch("v1", "Pod", ref.namespace, name, deletion_cost_patch(slots))
        except KubeApiError as exc:
            if exc.status != 404:  # a pod that just went away needs no cost
                raise
    return busy_pods, not changes
