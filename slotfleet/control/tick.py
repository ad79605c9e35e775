"""One sizing tick over a :class:`~slotfleet.control.port.FleetPort`.

In this order, for both fleet controllers: mark members by busy slots (so whatever
removes members removes idle ones first), decide with the :class:`Sizer`, let the port
hold a scale-down until the members it removes have stopped claiming, hold a
scale-down for a tick while a mark was just changed (the operator's ReplicaSet
controller must see which pods are busy before it picks), and resize when the decision
differs from the fleet's size.

What this module is not: it reads no store and no cluster (the caller passes the view)
and writes no status.
"""

from __future__ import annotations

from slotfleet.control.port import FleetPort
from slotfleet.control.sizer import Sizer
from slotfleet.control.view import QueueView
from slotfleet.models.resource import AutoscalingMode, QueueSpec
from slotfleet.scaling import Decision


def cost_bucket(busy: int) -> int:
    """A member's deletion cost for ``busy`` slots, in coarse buckets (0 idle, then 1,
    2, 3, 4 ... for 1, 2-3, 4-7, 8-15 ... busy slots): idle members go first and the
    busier go last, without a write each time one slot frees or fills."""
    return max(busy, 0).bit_length()


async def size_fleet(
    port: FleetPort,
    sizer: Sizer,
    spec: QueueSpec,
    view: QueueView,
    *,
    at: float,
    paused: bool,
    hpa_sizes: bool,
) -> Decision | None:
    """One tick; the decision, or ``None`` when the core does not size this fleet (the
    store could not be read, or an HPA sizes it: ``hpa_sizes`` and mode ``hpa``)."""
    if view.stats is None:
        return None  # nothing is marked or resized on a guess
    busy = view.busy()
    settled = await port.mark(busy)
    if hpa_sizes and spec.autoscaling.mode is AutoscalingMode.HPA:
        return None
    size = port.size()
    busy_members = sum(1 for member in port.members() if busy.get(member, 0) > 0)
    decision, overridden = sizer.decide(
        spec, view.stats, at=at, size=size, busy_members=busy_members, paused=paused
    )
    wanted = decision.replicas
    decision = port.retire(decision)  # before the hold: it must see the wanted size
    if decision.replicas < size and not settled:
        decision = Decision(
            size, f"holding: marking busy pods before scaling down ({decision.reason})",
            decision.desired,
        )  # fmt: skip
    # Either hold keeps the size for now; it does not make an outside size the sizer's own
    # (else the next tick would see no override, and its stabilization keep that size).
    sizer.remember(decision, overridden=overridden, held=decision.replicas > wanted)
    if decision.replicas != size:
        decision = await port.resize(decision, busy, overridden=overridden)
    return decision
