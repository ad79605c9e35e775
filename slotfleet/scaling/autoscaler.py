"""The autoscaler: how many workers a queue wants, from demand, as a pure function.

Why not an HPA on free slots? An HPA assumes its metric rises with load; free slots
*fall* with load, so scaling on them runs backwards. We size on demand instead:

    raw = ceil((busy + ready_pending) / (slots_per_pod * targetUtilization))

clamped to ``[minReplicas, maxReplicas]``. Up at once (optionally ``maxScaleUpStep`` at
a time); down only to the highest desire seen within ``scaleDownStabilizationSeconds``
(optionally ``maxScaleDownStep`` at a time), so a queue whose backlog comes in waves
does not flap; to zero only after ``idleSeconds`` with nothing pending or running;
back from zero as soon as one job is ready; never below what busy slots need, and never
below the workers that hold a running job (``Observation.busy_pods``): removing one of
those would cut its job short or hand it back to run again, so a scale-down only ever
removes idle workers (the caller picks which: the operator through
``pod-deletion-cost``, the local fleet by choosing idle victims).

Both the operator (``autoscaling.mode: operator``) and the local fleet call
:func:`decide` through the fleet-control core's :class:`slotfleet.control.Sizer`,
which builds the :class:`Observation` and keeps the :class:`ScalerState`. What this
module is not: it performs no I/O and reads no clock (``Observation.at`` is the
caller's monotonic time in seconds), it does not know where the figures come from, and
it never starts or stops a worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from slotfleet.models.errors import InvalidSettingsError
from slotfleet.models.resource import AutoscalingSpec


@dataclass(frozen=True, slots=True)
class Observation:
    """What the caller sees now."""

    at: float
    """Monotonic time in seconds (any origin; only differences matter)."""
    replicas: int
    """Workers that exist now and are not draining."""
    slots_per_pod: int
    """Slots of one worker (the executor's concurrency)."""
    busy: int
    """Slots running a job across the fleet (running jobs)."""
    ready_pending: int
    """Jobs ready to run now and waiting for a slot (not those scheduled later)."""
    busy_pods: int = 0
    """Workers (among ``replicas``) running at least one job. Jobs packed on few workers
    need ``ceil(busy / slots_per_pod)`` of them; jobs spread out pin every worker that
    holds one, and a scale-down never goes below this."""

    def __post_init__(self) -> None:
        if self.slots_per_pod < 1:
            raise InvalidSettingsError("slots per pod must be at least 1")
        if min(self.replicas, self.busy, self.ready_pending, self.busy_pods) < 0:
            raise InvalidSettingsError("replicas, busy and ready jobs must not be negative")

    @property
    def demand(self) -> int:
        """Jobs that want a slot now: running plus ready."""
        return self.busy + self.ready_pending


@dataclass(frozen=True, slots=True)
class ScalerState:
    """What the autoscaler remembers between observations. Immutable; start empty."""

    desires: tuple[tuple[float, int], ...] = ()
    """``(at, desired)`` within the stabilization window, kept strictly decreasing in
    ``desired`` (a newer, higher desire makes older, lower ones irrelevant), so the
    first entry is the window's highest desire and the tuple stays short."""
    last_active: float | None = None
    """When anything was last pending or running; ``None`` if never seen (or never
    mattered: the fleet was already at zero)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now."""

    replicas: int
    """Workers wanted now (after stabilization, steps and bounds)."""
    reason: str
    """Short, for a person: ``scale up: 37 jobs need 5 pods``."""
    desired: int = field(default=0)
    """The instantaneous desire before stabilization and steps (``status.desiredReplicas``)."""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def raw_replicas(demand: int, slots_per_pod: int, target_utilization: float) -> int:
    """``ceil(demand / (slots_per_pod * target))`` computed exactly.

    The target is taken as the decimal the user wrote (0.7, not 0.69999...), so 7 jobs on
    10 slots at 0.7 need exactly one pod rather than two.
    """
    capacity = slots_per_pod * Fraction(str(target_utilization))
    return math.ceil(demand / capacity)


def _desire(state: ScalerState, obs: Observation, spec: AutoscalingSpec) -> tuple[int, str]:
    """The clamped instantaneous desire and, when it is the idle floor, why."""
    raw = raw_replicas(obs.demand, obs.slots_per_pod, spec.target_utilization)
    desired = min(max(raw, spec.min_replicas), spec.max_replicas)
    if desired > 0 or obs.demand > 0:
        return desired, ""
    # minReplicas 0 and nothing to do: zero only once idle long enough. Until then keep
    # one warm worker if there is one (a short gap between bursts should not cost a cold
    # start), but never start a worker for no work.
    idle = math.inf if state.last_active is None else obs.at - state.last_active
    if idle >= spec.idle_seconds:
        return 0, "idle" if idle == math.inf else f"idle for {int(idle)} s"
    floor = min(1, obs.replicas)
    return floor, f"idle for {int(idle)} s of {spec.idle_seconds} s"


def decide(
    state: ScalerState, obs: Observation, spec: AutoscalingSpec
) -> tuple[Decision, ScalerState]:
    """Size the fleet for ``obs``; return the decision and the state to pass next time."""
    if obs.demand > 0:
        last_active: float | None = obs.at
    elif state.last_active is None and obs.replicas > 0:
        # First sight of a running fleet (say, after an operator restart): do not assume
        # it has been idle for ever; wait idleSeconds from now.
        last_active = obs.at
    else:
        last_active = state.last_active
    state = ScalerState(state.desires, last_active)

    desired, idle_note = _desire(state, obs, spec)
    horizon = obs.at - spec.scale_down_stabilization_seconds
    kept = [(at, d) for at, d in state.desires if at >= horizon and d > desired]
    desires = (*kept, (obs.at, desired))
    new_state = ScalerState(desires, last_active)

    need = f"{_plural(obs.demand, 'job')} need {_plural(desired, 'pod')}"
    current = obs.replicas
    # Never below the workers running jobs: those that exist and hold one (a busy worker
    # beyond ``replicas`` is already draining and needs no place) and, however the jobs
    # are packed, the slots they fill.
    held = min(obs.busy_pods, current)
    busy_floor = min(max(math.ceil(obs.busy / obs.slots_per_pod), held), spec.max_replicas)

    if desired > current:
        target = desired
        if spec.max_scale_up_step is not None:
            target = min(target, current + spec.max_scale_up_step)
        target = max(target, busy_floor, spec.min_replicas)
        reason = f"{'scale from zero' if current == 0 else 'scale up'}: {need}"
        if target < desired:
            reason += f" (step of {spec.max_scale_up_step})"
        return Decision(target, reason, desired), new_state

    # The window's highest desire, never above what exists: old desires hold a fleet up,
    # they never grow it.
    stabilized = min(current, desires[0][1])
    target = stabilized
    if spec.max_scale_down_step is not None:
        target = max(target, current - spec.max_scale_down_step)
    target = min(max(target, busy_floor, spec.min_replicas), spec.max_replicas)

    # desired and the held workers are <= current here, and so is target.
    pinned = (
        target > stabilized and target == held and held > math.ceil(obs.busy / obs.slots_per_pod)
    )
    if target == current:
        if current == 0:
            reason = "idle: no jobs"
        elif desired == current:
            reason = f"holding: {idle_note}" if idle_note else f"steady: {need}"
        elif pinned:
            reason = f"holding: {_plural(held, 'pod')} running jobs ({need})"
        else:
            reason = f"holding: stabilization window ({need})"
    elif target == 0:
        reason = f"scale to zero: {idle_note}"
    else:
        reason = f"scale down: {idle_note or need}"
        if target > desired:
            if pinned:
                why = "pods running jobs"
            elif target == stabilized:
                why = "stabilization window"
            else:
                why = "step"
            reason += f" (to {target}: {why})"
    return Decision(target, reason, desired), new_state
