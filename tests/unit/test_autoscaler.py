"""The autoscaler's rules, case by case and as properties over random histories."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slotfleet.models import InvalidSettingsError
from slotfleet.models.resource import AutoscalingSpec
from slotfleet.scaling import Decision, Observation, ScalerState, decide, raw_replicas


def spec(**kw: Any) -> AutoscalingSpec:
    base: dict[str, Any] = {
        "min_replicas": 0,
        "max_replicas": 10,
        "target_utilization": 1.0,
        "scale_down_stabilization_seconds": 60,
        "idle_seconds": 300,
    }
    return AutoscalingSpec(**{**base, **kw})


def obs(at: float, replicas: int, busy: int = 0, ready: int = 0, slots: int = 10) -> Observation:
    return Observation(
        at=at, replicas=replicas, slots_per_pod=slots, busy=busy, ready_pending=ready
    )


def run(
    sp: AutoscalingSpec, steps: list[tuple[float, int, int]], replicas: int, slots: int = 10
) -> tuple[list[Decision], ScalerState]:
    """Feed ``(at, busy, ready)`` observations, each seeing the previous decision's replicas."""
    state = ScalerState()
    out = []
    for at, busy, ready in steps:
        d, state = decide(state, obs(at, replicas, busy, ready, slots), sp)
        replicas = d.replicas
        out.append(d)
    return out, state


# --- table-driven -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    spec: dict[str, Any]
    history: list[tuple[float, int, int]]
    """Earlier (at, busy, ready), replicas following decisions from ``start``."""
    start: int
    now: tuple[float, int, int]
    replicas: int | None
    """Replicas seen now; ``None``: whatever the history decided."""
    want: int
    reason: str


CASES = [
    Case(
        "37 jobs at 10 slots and 0.8 need 5",
        {"target_utilization": 0.8},
        [],
        1,
        (0, 0, 37),
        None,
        5,
        "scale up: 37 jobs need 5 pods",
    ),
    Case(
        "exact decimal target: 7 jobs at 10x0.7 need 1",
        {"target_utilization": 0.7},
        [],
        1,
        (0, 0, 7),
        None,
        1,
        "steady: 7 jobs need 1 pod",
    ),
    Case("capped at max", {"max_replicas": 3}, [], 1, (0, 0, 100), None, 3, "scale up"),
    Case("raised to min", {"min_replicas": 2}, [], 0, (0, 0, 0), None, 2, "scale"),
    Case("up step", {"max_scale_up_step": 2}, [], 1, (0, 0, 100), None, 3, "(step of 2)"),
    Case(
        "from zero on one ready job",
        {},
        [],
        0,
        (0, 0, 1),
        None,
        1,
        "scale from zero: 1 job need 1 pod",
    ),
    Case(
        "from zero ignores the window",
        {"scale_down_stabilization_seconds": 3600},
        [(0, 0, 0)],
        0,
        (1, 0, 1),
        None,
        1,
        "scale from zero",
    ),
    Case(
        "down held within the window",
        {},
        [(0, 0, 50)],
        1,
        (30, 0, 10),
        None,
        5,
        "holding: stabilization window",
    ),
    Case(
        "down after the window",
        {},
        [(0, 0, 50)],
        1,
        (61, 0, 10),
        None,
        1,
        "scale down: 10 jobs need 1 pod",
    ),
    Case(
        "down to the highest desire within the window",
        {},
        [(0, 0, 50), (20, 0, 30), (40, 0, 20)],
        1,
        (70, 0, 10),
        None,
        3,
        "stabilization window",
    ),
    Case(
        "down step",
        {"max_scale_down_step": 1, "scale_down_stabilization_seconds": 0},
        [(0, 0, 50)],
        1,
        (1, 0, 10),
        None,
        4,
        "(to 4: step)",
    ),
    Case(
        "window 0 drops at once",
        {"scale_down_stabilization_seconds": 0},
        [(0, 0, 50)],
        1,
        (1, 0, 10),
        None,
        1,
        "scale down",
    ),
    Case(
        "idle keeps one warm worker",
        {"scale_down_stabilization_seconds": 0},
        [(0, 5, 0)],
        1,
        (100, 0, 0),
        None,
        1,
        "holding: idle for 100 s of 300 s",
    ),
    Case(
        "to zero after idleSeconds",
        {"scale_down_stabilization_seconds": 0},
        [(0, 5, 0)],
        1,
        (300, 0, 0),
        None,
        0,
        "scale to zero: idle for 300 s",
    ),
    Case("idle floor never starts a worker", {}, [(0, 5, 0)], 1, (10, 0, 0), 0, 0, "idle"),
    Case(
        "a fleet first seen idle waits idleSeconds",
        {"scale_down_stabilization_seconds": 0},
        [],
        3,
        (0, 0, 0),
        None,
        1,
        "idle for 0 s of 300 s",
    ),
    Case(
        "an empty fleet first seen idle stays at zero",
        {},
        [],
        0,
        (0, 0, 0),
        None,
        0,
        "idle: no jobs",
    ),
    Case(
        "busy slots hold pods even with a down step",
        {
            "max_scale_down_step": 10,
            "scale_down_stabilization_seconds": 0,
            "target_utilization": 1.0,
        },
        [],
        8,
        (0, 45, 0),
        None,
        5,
        "scale down",
    ),
    Case(
        "busy slots beat the up step",
        {"max_scale_up_step": 1},
        [],
        1,
        (0, 45, 0),
        None,
        5,
        "scale up",
    ),
    Case(
        "above max after a spec change",
        {"max_replicas": 2},
        [],
        6,
        (0, 60, 0),
        None,
        2,
        "scale down",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case) -> None:
    sp = spec(**case.spec)
    decisions, state = run(sp, case.history, case.start)
    replicas = decisions[-1].replicas if decisions else case.start
    if case.replicas is not None:
        replicas = case.replicas
    at, busy, ready = case.now
    decision, _ = decide(state, obs(at, replicas, busy, ready), sp)
    assert decision.replicas == case.want, decision
    assert case.reason in decision.reason


def test_reason_is_short_and_desired_is_reported() -> None:
    d, _ = decide(ScalerState(), obs(0, 2, 10, 27), spec(target_utilization=0.8))
    assert d == Decision(5, "scale up: 37 jobs need 5 pods", 5)


def test_state_stays_short() -> None:
    _, state = run(spec(scale_down_stabilization_seconds=3600), [(t, 0, 5) for t in range(500)], 1)
    assert len(state.desires) == 1


def test_bad_observation_is_refused() -> None:
    with pytest.raises(InvalidSettingsError, match="slots per pod"):
        obs(0, 1, slots=0)
    with pytest.raises(InvalidSettingsError, match="negative"):
        obs(0, -1)


def test_raw_replicas_is_exact() -> None:
    assert raw_replicas(0, 10, 0.8) == 0
    assert raw_replicas(8, 10, 0.8) == 1
    assert raw_replicas(9, 10, 0.8) == 2
    assert raw_replicas(21, 10, 0.3) == 7


# --- properties ------------------------------------------------------------------------------

specs = st.builds(
    lambda lo, span, target, window, idle, up, down: AutoscalingSpec(
        min_replicas=lo,
        max_replicas=max(1, lo + span),
        target_utilization=target,
        scale_down_stabilization_seconds=window,
        idle_seconds=idle,
        max_scale_up_step=up,
        max_scale_down_step=down,
    ),
    st.integers(0, 4),
    st.integers(0, 8),
    st.sampled_from([0.1, 0.5, 0.7, 0.8, 1.0]),
    st.integers(0, 120),
    st.integers(0, 600),
    st.none() | st.integers(1, 4),
    st.none() | st.integers(1, 4),
)

# (seconds since the last observation, busy, ready, replicas changed behind our back)
events = st.tuples(
    st.floats(0, 200, allow_nan=False),
    st.integers(0, 60),
    st.integers(0, 60),
    st.none() | st.integers(0, 12),
)


def replay(
    sp: AutoscalingSpec, history: list[tuple[float, int, int, int | None]], slots: int
) -> tuple[ScalerState, float, int, list[tuple[Observation, Decision]]]:
    state, at, replicas = ScalerState(), 0.0, 0
    seen = []
    for dt, busy, ready, forced in history:
        at += dt
        if forced is not None:
            replicas = forced
        o = obs(at, replicas, busy, ready, slots)
        d, state = decide(state, o, sp)
        seen.append((o, d))
        replicas = d.replicas
    return state, at, replicas, seen


@settings(max_examples=300, deadline=None)
@given(specs, st.lists(events, max_size=30), st.integers(1, 20))
def test_within_bounds_and_never_below_busy(
    sp: AutoscalingSpec, history: list[tuple[float, int, int, int | None]], slots: int
) -> None:
    *_, seen = replay(sp, history, slots)
    for o, d in seen:
        assert sp.min_replicas <= d.replicas <= sp.max_replicas
        assert d.replicas >= min(math.ceil(o.busy / slots), sp.max_replicas)
        if o.ready_pending > 0:
            assert d.replicas >= 1  # back from zero at once


@settings(max_examples=300, deadline=None)
@given(
    specs,
    st.lists(events, max_size=20),
    events,
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(1, 20),
)
def test_monotone_in_demand(
    sp: AutoscalingSpec,
    history: list[tuple[float, int, int, int | None]],
    now: tuple[float, int, int, int | None],
    more_busy: int,
    more_ready: int,
    slots: int,
) -> None:
    state, at, replicas, _ = replay(sp, history, slots)
    dt, busy, ready, forced = now
    o = obs(at + dt, forced if forced is not None else replicas, busy, ready, slots)
    low, _ = decide(state, o, sp)
    high, _ = decide(state, replace(o, busy=busy + more_busy, ready_pending=ready + more_ready), sp)
    assert high.replicas >= low.replicas


@settings(max_examples=300, deadline=None)
@given(
    specs,
    st.lists(events, max_size=10),
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(1, 20),
    st.sampled_from([0.5, 1.0, 7.0]),
)
def test_constant_demand_converges_without_flapping(
    sp: AutoscalingSpec,
    history: list[tuple[float, int, int, int | None]],
    busy: int,
    ready: int,
    slots: int,
    tick: float,
) -> None:
    state, at, replicas, _ = replay(sp, history, slots)
    settle = sp.scale_down_stabilization_seconds + sp.idle_seconds + tick * 2
    steps = int(settle / tick) + 2 * sp.max_replicas + 16
    path = [replicas]
    for _ in range(steps):
        at += tick
        d, state = decide(state, obs(at, replicas, busy, ready, slots), sp)
        replicas = d.replicas
        path.append(replicas)
    moves = [b - a for a, b in itertools.pairwise(path) if b != a]
    assert all(m > 0 for m in moves) or all(m < 0 for m in moves), path  # one direction
    tail = path[-8:]
    assert len(set(tail)) == 1, path  # settled
    fixed = tail[0]
    desired = min(
        max(raw_replicas(busy + ready, slots, sp.target_utilization), sp.min_replicas),
        sp.max_replicas,
    )
    assert fixed == desired


@settings(max_examples=300, deadline=None)
@given(specs, st.lists(events, max_size=40), st.integers(1, 20))
def test_zero_only_after_idle_seconds(
    sp: AutoscalingSpec, history: list[tuple[float, int, int, int | None]], slots: int
) -> None:
    last_active: float | None = None
    replicas = 0
    for o, d in replay(sp, history, slots)[3]:
        if o.demand > 0 or (last_active is None and o.replicas > 0):
            last_active = o.at
        if o.replicas > 0 and d.replicas == 0:
            assert last_active is not None
            assert o.at - last_active >= sp.idle_seconds
            assert o.demand == 0
        replicas = d.replicas
    assert replicas >= 0


@settings(max_examples=200, deadline=None)
@given(specs, st.lists(events, max_size=20), st.integers(1, 60), st.integers(1, 20))
def test_back_from_zero_at_once(
    sp: AutoscalingSpec,
    history: list[tuple[float, int, int, int | None]],
    ready: int,
    slots: int,
) -> None:
    state, at, _, _ = replay(sp, history, slots)
    d, _ = decide(state, obs(at + 0.001, 0, 0, ready, slots), sp)
    assert d.replicas >= 1


def test_scale_down_never_removes_a_pod_running_a_job() -> None:
    """Regression: the floor was ``ceil(busy / slots)``, so two long jobs on two pods of
    two slots each let the fleet shrink to one pod, and the ReplicaSet had to SIGTERM a
    pod still running a job. Pods holding a job now pin the fleet."""
    sp = spec(scale_down_stabilization_seconds=0)
    shrink = Observation(at=0, replicas=4, slots_per_pod=2, busy=2, ready_pending=0)
    d, _ = decide(ScalerState(), shrink, sp)
    assert d.replicas == 1  # without the pods count: packed jobs need one pod
    d, _ = decide(ScalerState(), replace(shrink, busy_pods=2), sp)
    assert d.replicas == 2
    assert "pods running jobs" in d.reason
    d, _ = decide(ScalerState(), replace(shrink, replicas=2, busy_pods=2), sp)
    assert (d.replicas, d.reason) == (2, "holding: 2 pods running jobs (2 jobs need 1 pod)")
    # a busy worker beyond replicas is already draining: it never grows the fleet
    d, _ = decide(ScalerState(), replace(shrink, replicas=1, busy_pods=3), sp)
    assert d.replicas == 1
    # and zero only with nothing running anywhere
    idle = spec(scale_down_stabilization_seconds=0, idle_seconds=0)
    d, _ = decide(ScalerState(), replace(shrink, replicas=1, busy=1, busy_pods=1), idle)
    assert d.replicas == 1
