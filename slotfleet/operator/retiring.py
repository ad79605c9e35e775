"""The operator's side of a race-free scale-down: mark pods, wait for their workers.

One tick builds a :class:`RetireGate` from the worker pods, the store's view and the
Queue's previous ``status.retiring``; then

* :func:`slotfleet.operator.sizing.update_deletion_costs` gives the pods marked so far
  the lowest deletion cost (:attr:`RetireGate.marked`), so the ReplicaSet controller
  removes exactly them;
* :func:`slotfleet.operator.sizing.autoscale` passes its decision through the gate
  (:meth:`RetireGate.__call__`): a smaller replica count waits until every pod it removes
  has stopped claiming and runs nothing (:func:`slotfleet.scaling.retire.plan_retirement`);
* the status gets the new marks (:meth:`RetireGate.entries`); each worker watches its
  Queue, stops claiming when its pod is listed and echoes the mark in its heartbeat.

A marked pod stays listed until its object is gone: once deleted it is no member any
more (the plan forgets it), but it runs until the kubelet's SIGTERM, and a mark lifted in
that gap (a burst arrived just after the scale-down) would let it claim a job it could
only cut (:attr:`RetireGate.leaving`). The same holds from the moment the scale-down is
written: its marks are final (:func:`slotfleet.scaling.retire.split_final`), their pods
are no part of the fleet any more, and :attr:`RetireGate.doomed` names those still alive
for the operator to delete (the ReplicaSet controller may keep one when a larger replica
count reached it first).

What this module is not: it writes nothing itself (the caller owns the status and the
deletion costs) and decides nothing the pure plan does not; it only translates pods,
heartbeats and the status into the plan's terms.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from slotfleet.models import WorkerHeartbeat
from slotfleet.models.resource import MAX_RETIRING, RetiringPod
from slotfleet.scaling import Decision
from slotfleet.scaling.retire import Mark, Member, RetirePlan, plan_retirement, split_final

Json = dict[str, Any]
logger = logging.getLogger(__name__)

_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}


def pod_tier(pod: Mapping[str, Any]) -> int:
    """The ReplicaSet controller's removal order before deletion cost (``ActivePods``'
    ranking: unassigned before assigned, then Pending < Unknown < Running, then not ready
    before ready), as one number; lower goes first."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    assigned = 1 if spec.get("nodeName") else 0
    phase = _PHASE_ORDER.get(str(status.get("phase") or "Pending"), 0)
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return assigned * 100 + phase * 10 + int(ready)


def live_pods(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Pods the ReplicaSet controller counts: neither terminating nor finished."""
    return [
        p
        for p in pods
        if not (p.get("metadata") or {}).get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def previous_marks(status: Mapping[str, Any]) -> list[Mark]:
    """The marks of ``status.retiring`` (an entry that does not parse is dropped)."""
    marks = []
    for entry in status.get("retiring") or []:
        try:
            pod = RetiringPod.model_validate(entry)
        except ValidationError:
            continue
        marks.append(Mark(pod.pod, pod.since, pod.final))
    return marks


@dataclass
class RetireGate:
    """One tick's retirement: what was marked before, and the plan once asked."""

    members: list[Member]
    """The fleet: live pods, less those whose marks are final."""
    previous: list[Mark]
    """The earlier marks of live pods that are not final (the plan may move or lift them)."""
    final: list[Mark]
    """Final marks of live pods (:func:`~slotfleet.scaling.retire.split_final`)."""
    leaving: list[Mark]
    """Marks of pods being deleted: kept until the pods are gone."""
    now: datetime
    plan: RetirePlan | None = field(default=None)
    kept: bool = field(default=False)
    """Whether ``spec.replicas`` counts every live pod: the ReplicaSet controller removes
    none, so a final pod still alive was kept (it saw a larger count first)."""
    written: bool = field(default=False)
    """Whether the scale-down the plan let through was written (:meth:`scaled`): only
    then are its marks final."""

    @classmethod
    def for_tick(
        cls,
        pods: Sequence[Mapping[str, Any]],
        busy: Mapping[str, int],
        workers: Sequence[WorkerHeartbeat],
        status: Mapping[str, Any],
        now: datetime,
        replicas: int,
    ) -> RetireGate:
        """``busy``: busy slots per worker (:func:`slotfleet.scaling.busy_by_worker`);
        ``workers``: the live heartbeats; ``status``: the Queue's previous status;
        ``replicas``: its ``spec.replicas``."""
        echoes = {w.worker_id: w.retiring for w in workers}
        members = []
        for pod in live_pods(pods):
            name = str((pod.get("metadata") or {}).get("name", ""))
            placed = bool((pod.get("spec") or {}).get("nodeName"))
            members.append(
                Member(name, pod_tier(pod), int(busy.get(name, 0)), echoes.get(name), placed)
            )
        live = {m.name for m in members}
        present = {str((p.get("metadata") or {}).get("name", "")) for p in pods}
        previous = previous_marks(status)
        leaving = [
            replace(m, final=True) for m in previous if m.pod in present and m.pod not in live
        ]
        final, rest = split_final(members, previous, replicas)
        going = {m.pod for m in final}
        fleet = [m for m in members if m.name not in going]
        return cls(fleet, rest, final, leaving, now, kept=len(members) <= replicas)

    @property
    def marked(self) -> list[str]:
        """Pods marked on earlier ticks: they carry the lowest deletion cost."""
        return [m.pod for m in (*self.final, *self.previous)]

    @property
    def doomed(self) -> list[str]:
        """Live pods whose marks are final that the ReplicaSet controller kept: the
        operator deletes them. While there are more live pods than ``spec.replicas`` the
        controller removes the final ones itself (they cost least); deleting them too
        raced its own deletes, and it once removed a new pod instead (a job cut)."""
        return [m.pod for m in self.final] if self.kept else []

    def __call__(self, decision: Decision, replicas: int) -> Decision:
        """``decision`` as it may be written now: a smaller replica count only once the
        pods it removes have stopped claiming."""
        stamp = self.now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        plan = plan_retirement(
            self.members,
            self.previous,
            target=decision.replicas,
            replicas=replicas,
            now=self.now,
            stamp=stamp,
            most=max(0, MAX_RETIRING - len(self.leaving) - len(self.final)),
        )
        self.plan = plan
        if plan.unconfirmed:
            logger.warning(
                "scaling down without a confirmation from %s (marked retiring, idle in the "
                "store, silent for the bound): a job it claims now is handed back by its drain",
                ", ".join(plan.unconfirmed),
            )
        if plan.replicas == decision.replicas:
            return decision
        reason = f"holding: {plan.holding} ({decision.reason})" if plan.holding else decision.reason
        return Decision(plan.replicas, reason, decision.desired)

    def scaled(self, replicas: int, before: int) -> None:
        """``spec.replicas`` was written from ``before`` to ``replicas``: a scale-down
        the plan let through makes its marks final (another hold may still have kept
        the size this tick, and then nothing is final)."""
        if self.plan is not None and self.plan.marks and replicas < before:
            self.written = True

    def entries(self) -> list[Json] | None:
        """``status.retiring`` after this tick; ``None`` when the gate was not asked
        (the store could not be read): the previous entries stand."""
        if self.plan is None:
            return None
        planned = tuple(replace(m, final=self.written) for m in self.plan.marks)
        marks = (*planned, *self.final, *self.leaving)
        return [
            RetiringPod(pod=m.pod, since=m.since, final=m.final).model_dump(
                by_alias=True, exclude_defaults=True
            )
            for m in marks
        ]
