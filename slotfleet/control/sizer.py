"""The sizer: one queue's autoscaler state and the one observation it decides from.

Both fleet controllers (the operator in ``autoscaling.mode: operator``, the local fleet)
build the autoscaler's :class:`~slotfleet.scaling.Observation` here, with one meaning
for each figure:

* ``replicas`` is the size the fleet is set to (:meth:`FleetPort.size`), or the sizer's
  own last decision when someone else changed that size (``overridden``: the operator
  puts it back, and a local fleet restarts a worker that died);
* ``busy`` is the larger of the running jobs and the busy slots the heartbeats report
  (a heartbeat lags a claim; a job of a dead worker stays running until its lease ends);
* ``ready_pending`` is the ready backlog, none while the queue is paused (no worker
  would take it);
* ``busy_pods`` counts members holding a job: a scale-down never goes below them.

The state is reset when the Queue's autoscaling settings change (keeping when the
queue was last active). What this module is not: it does no I/O and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slotfleet.models import QueueStats
from slotfleet.models.resource import AutoscalingMode, AutoscalingSpec, QueueSpec
from slotfleet.scaling import Decision, Observation, ScalerState, decide


@dataclass(slots=True)
class Sizer:
    """Autoscaler state for one queue between ticks (lost on restart, which the
    autoscaler allows for: a fleet seen for the first time is not assumed idle)."""

    state: ScalerState = field(default_factory=ScalerState)
    settings: AutoscalingSpec | None = None
    last: Decision | None = None

    def decide(
        self,
        spec: QueueSpec,
        stats: QueueStats,
        *,
        at: float,
        size: int,
        busy_members: int,
        paused: bool,
    ) -> tuple[Decision, bool]:
        """The decision for this tick and whether ``size`` had been changed outside
        the sizer since its last decision."""
        if spec.autoscaling.mode is AutoscalingMode.OFF:
            return Decision(spec.replicas, "fixed: autoscaling is off", spec.replicas), False
        if self.settings != spec.autoscaling:
            self.settings = spec.autoscaling
            self.state = ScalerState(last_active=self.state.last_active)
        overridden = self.last is not None and self.last.replicas != size
        observation = Observation(
            at=at,
            replicas=self.last.replicas if self.last is not None and overridden else size,
            slots_per_pod=spec.executor.concurrency,
            busy=max(stats.running, stats.slots_busy),
            ready_pending=0 if paused or stats.paused else stats.ready,
            busy_pods=busy_members,
        )
        decision, self.state = decide(self.state, observation, spec.autoscaling)
        return decision, overridden

    def remember(self, decision: Decision, *, overridden: bool, held: bool) -> None:
        """Keep ``decision`` as the sizer's last word; a hold keeps an outside size for
        a tick without making it the sizer's own."""
        if not (overridden and held):
            self.last = decision
