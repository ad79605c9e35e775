"""The operator's side of the fleet-control core: a Queue's pods as a FleetPort.

:class:`PodFleet` is what :func:`slotfleet.control.size_fleet` sizes in the operator:

* ``mark`` deletes the pods a written scale-down no longer counts
  (:attr:`~slotfleet.operator.retiring.RetireGate.doomed`) and keeps every live worker
  pod's ``controller.kubernetes.io/pod-deletion-cost`` at its busy slots in coarse
  buckets (:func:`slotfleet.control.cost_bucket`), so the ReplicaSet controller removes
  idle pods first, with a patch only when a pod changes bucket;
* ``retire`` passes a smaller size only once the pods it removes have stopped claiming
  (:class:`~slotfleet.operator.retiring.RetireGate`; the pods it marked carry the lowest
  deletion cost);
* ``resize`` writes ``spec.replicas`` through the Queue's ``/scale`` (so the Deployment
  follows by the same path as ``kubectl scale`` or an HPA). A ``spec.replicas`` someone
  else wrote (``kubectl scale``) is put back with a Warning Event, ``ScaleReverted``,
  and the ``Scaling`` condition saying why.

What this module is not: it reads no store and owns no status; it is the only place the
operator resizes a fleet (:func:`write_replicas`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from slotfleet.control import cost_bucket
from slotfleet.models.pod import DELETION_COST_ANNOTATION
from slotfleet.models.resource import QueueSpec
from slotfleet.operator.builders import API_VERSION, QueueRef, deletion_cost_patch
from slotfleet.operator.kube import KubeApiError, KubeClient
from slotfleet.operator.retiring import RetireGate
from slotfleet.scaling import Decision
from slotfleet.scaling.retire import RETIRING_DELETION_COST


class EventSink(Protocol):
    """Kubernetes Events about a Queue (kopf posts them in the operator)."""

    def info(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...

    def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...


def deletion_costs(
    pods: Sequence[Mapping[str, Any]], busy: Mapping[str, int], retiring: Collection[str] = ()
) -> dict[str, int]:
    """Live pods whose deletion cost must change, mapped to the new cost.

    Worker ids are pod names (``--worker-id $(POD_NAME)``); ``busy`` maps them to busy
    slots (:meth:`slotfleet.control.QueueView.busy`). A pod absent from it costs 0: it
    runs nothing the store knows of, so it may go first. A ``retiring`` pod costs
    :data:`~slotfleet.scaling.retire.RETIRING_DELETION_COST`: it goes before them all.
    """
    changes: dict[str, int] = {}
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            continue
        name = str(metadata.get("name", ""))
        cost = cost_bucket(int(busy.get(name, 0)))
        if name in retiring:
            cost = RETIRING_DELETION_COST
        if (metadata.get("annotations") or {}).get(DELETION_COST_ANNOTATION) != str(cost):
            changes[name] = cost
    return changes


class PodFleet:
    """One Queue's worker pods and its ``/scale``, for one tick."""

    def __init__(
        self,
        kube: KubeClient,
        events: EventSink,
        body: Mapping[str, Any],
        ref: QueueRef,
        spec: QueueSpec,
        pods: Sequence[Mapping[str, Any]],
        retiring: RetireGate | None = None,
    ) -> None:
        self.kube, self.events, self.body = kube, events, body
        self.ref, self.spec, self.pods = ref, spec, pods
        self.retiring = retiring

    def size(self) -> int:
        return self.spec.replicas

    def members(self) -> list[str]:
        return [
            str(p["metadata"].get("name", ""))
            for p in self.pods
            if not (p.get("metadata") or {}).get("deletionTimestamp")
        ]

    async def mark(self, busy: Mapping[str, int]) -> bool:
        marked = self.retiring.marked if self.retiring is not None else ()
        for name in self.retiring.doomed if self.retiring is not None else ():
            # a smaller spec.replicas no longer counts it, but the ReplicaSet controller
            # may keep it (a larger count reached it first): it must go all the same
            await self.kube.delete("v1", "Pod", self.ref.namespace, name)
        changes = deletion_costs(self.pods, busy, frozenset(marked))
        for name, cost in changes.items():
            try:
                await self.kube.merge_patch(
                    "v1", "Pod", self.ref.namespace, name, deletion_cost_patch(cost)
                )
            except KubeApiError as exc:
                if exc.status != 404:  # a pod that just went away needs no cost
                    raise
        return not changes

    def retire(self, decision: Decision) -> Decision:
        if self.retiring is None:
            return decision
        return self.retiring(decision, self.size())

    async def resize(
        self, decision: Decision, busy: Mapping[str, int], *, overridden: bool
    ) -> Decision:
        replicas = self.spec.replicas
        if overridden:
            decision = Decision(
                decision.replicas,
                f"reverted spec.replicas {replicas}, set outside the operator: "
                f"autoscaling.mode is operator, so the operator sizes this Queue "
                f'(set autoscaling.mode: "off" to size it by hand); {decision.reason}',
                decision.desired,
            )
        await write_replicas(self.kube, self.ref, decision.replicas)
        if self.retiring is not None:
            self.retiring.scaled(decision.replicas, replicas)
        message = f"replicas {replicas} -> {decision.replicas}: {decision.reason}"
        if overridden:
            self.events.warn(self.body, "ScaleReverted", message)
        else:
            self.events.info(self.body, "Scaled", message)
        return decision


async def write_replicas(kube: KubeClient, ref: QueueRef, replicas: int) -> None:
    """``spec.replicas`` through the Queue's ``/scale``: how the operator sizes a fleet."""
    await kube.merge_patch(
        API_VERSION,
        "Queue",
        ref.namespace,
        ref.name,
        {"spec": {"replicas": replicas}},
        subresource="scale",
    )
