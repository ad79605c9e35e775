"""The pure retirement plan (``slotfleet.scaling.retire``) and the operator's view of pods
(``slotfleet.operator.retiring``): who is marked, and when the fleet may shrink."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from slotfleet.models import WorkerHeartbeat
from slotfleet.operator.retiring import RetireGate, pod_tier, previous_marks
from slotfleet.operator.sizing import deletion_costs
from slotfleet.operator.status import Observed, build_status
from slotfleet.scaling import Decision
from slotfleet.scaling.retire import (
    RETIRING_DELETION_COST,
    Mark,
    Member,
    RetirePlan,
    plan_retirement,
)

NOW = datetime(2026, 11, 30, 21, 0, 0, tzinfo=UTC)
STAMP = "2026-11-30T21:00:00.000000Z"
EARLIER = "2026-11-30T20:59:58.000000Z"
READY = 112  # assigned, Running, Ready


def member(name: str, busy: int = 0, echo: str | None = None, tier: int = READY) -> Member:
    return Member(name, tier, busy, echo)


def plan(
    members: list[Member], marks: list[Mark], target: int, replicas: int = 3, **kw: Any
) -> RetirePlan:
    return plan_retirement(
        members, marks, target=target, replicas=replicas, now=NOW, stamp=STAMP, **kw
    )


def test_a_scale_down_first_marks_the_idle_pods_and_holds_the_replicas() -> None:
    result = plan([member("a", busy=1), member("b"), member("c")], [], target=1)
    assert result.marks == (Mark("b", STAMP), Mark("c", STAMP))
    assert result.replicas == 3
    assert "retiring b, c first" in result.holding


def test_the_fleet_shrinks_once_every_marked_pod_echoed_its_mark_and_is_idle() -> None:
    marks = [Mark("b", EARLIER), Mark("c", EARLIER)]
    members = [member("a", busy=1), member("b", echo=EARLIER), member("c", echo=EARLIER)]
    result = plan(members, marks, target=1)
    assert (result.marks, result.replicas, result.holding) == (tuple(marks), 1, "")


def test_a_stale_echo_of_an_older_mark_confirms_nothing() -> None:
    marks = [Mark("b", EARLIER)]
    result = plan([member("a"), member("b", echo="2026-11-30T20:00:00.000000Z")], marks, 1, 2)
    assert result.replicas == 2
    assert "waiting for retiring b to stop claiming" in result.holding


def test_a_marked_pod_that_claimed_a_job_is_replaced_by_an_idle_one() -> None:
    marks = [Mark("b", EARLIER)]
    result = plan([member("a"), member("b", busy=1, echo=EARLIER)], marks, 1, 2)
    assert result.marks == (Mark("a", STAMP),)
    assert result.replicas == 2  # a's mark is new: it has not stopped claiming yet


def test_a_busy_marked_pod_without_a_replacement_holds_without_bound() -> None:
    marks = [Mark("b", "2026-11-30T20:00:00.000000Z")]  # an hour ago
    members = [member("a", busy=2), member("b", busy=1, echo=marks[0].since)]
    result = plan(members, marks, target=1, replicas=2)
    assert result.marks == tuple(marks)
    assert result.replicas == 2
    assert "waiting for the jobs of retiring b to end" in result.holding


def test_an_idle_pod_that_never_confirms_is_let_go_after_the_bound() -> None:
    old = (NOW - timedelta(seconds=31)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    marks = [Mark("b", old)]
    result = plan([member("a"), member("b")], marks, target=1, replicas=2)
    assert (result.replicas, result.unconfirmed) == (1, ("b",))
    young = (NOW - timedelta(seconds=29)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert plan([member("a"), member("b")], [Mark("b", young)], 1, 2).replicas == 2


def test_marks_go_to_the_pods_the_replicaset_removes_first_whatever_their_cost() -> None:
    # a pod that is not ready is removed before any ready one, deletion cost or not
    members = [member("a"), member("b"), member("new", tier=110)]
    assert plan(members, [], target=2).marks == (Mark("new", STAMP),)


def test_earlier_marks_stay_put_among_equal_pods() -> None:
    marks = [Mark("c", EARLIER)]
    result = plan([member("a"), member("b"), member("c", echo=EARLIER)], marks, 2)
    assert (result.marks, result.replicas) == (tuple(marks), 2)


def test_a_burst_lifts_the_marks() -> None:
    marks = [Mark("b", EARLIER), Mark("c", EARLIER)]
    assert plan([member("a"), member("b"), member("c")], marks, target=3).marks == ()
    # a smaller step keeps one mark; the lifted one holds this tick (its cost is still low)
    fewer = plan([member("a"), member("b", echo=EARLIER), member("c", echo=EARLIER)], marks, 2)
    assert (fewer.marks, fewer.replicas) == ((Mark("b", EARLIER),), 3)


def test_pods_not_created_yet_go_without_a_mark() -> None:
    # spec.replicas 4 with 2 pods so far: 4 -> 2 removes no live worker
    assert plan([member("a"), member("b")], [], target=2, replicas=4).replicas == 2


def test_a_large_step_goes_in_rounds() -> None:
    members = [member(f"p{i}", echo=EARLIER) for i in range(5)]
    marks = [Mark(f"p{i}", EARLIER) for i in range(2)]
    result = plan(members, marks, target=0, replicas=5, most=2)
    assert (result.replicas, len(result.marks)) == (3, 2)


def test_retiring_pods_cost_least() -> None:
    pods = [pod("a"), pod("b"), pod("c")]
    costs = deletion_costs(pods, {"a": 2, "c": 1}, {"c"})
    assert costs == {"a": 2, "b": 0, "c": RETIRING_DELETION_COST}


def pod(
    name: str, *, node: str = "n", phase: str = "Running", ready: bool = True
) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_pod_tiers_follow_the_replicaset_controller() -> None:
    order = [
        pod("unassigned", node="", phase="Pending", ready=False),
        pod("pending", phase="Pending", ready=False),
        pod("unknown", phase="Unknown", ready=False),
        pod("starting", ready=False),
        pod("ready"),
    ]
    tiers = [pod_tier(p) for p in order]
    assert tiers == sorted(set(tiers))


def test_the_gate_holds_the_decision_and_writes_the_marks_to_the_status() -> None:
    pods = [
        pod("a"),
        pod("b"),
        {**pod("gone"), "metadata": {"name": "gone", "deletionTimestamp": "x"}},
    ]
    beats = [WorkerHeartbeat(worker_id="a"), WorkerHeartbeat(worker_id="b", retiring=EARLIER)]
    status = {"retiring": [{"pod": "b", "since": EARLIER}, {"bad": 1}]}
    gate = RetireGate.for_tick(pods, {"a": 1}, beats, status, NOW, 2)
    assert gate.marked == ["b"]
    assert gate.entries() is None  # not asked: the previous entries stand
    assert gate(Decision(1, "idle"), 2) == Decision(1, "idle")
    assert gate.entries() == [{"pod": "b", "since": EARLIER}]
    gate.scaled(1, 2)  # written: the mark is final
    assert gate.entries() == [{"pod": "b", "since": EARLIER, "final": True}]
    held = RetireGate.for_tick(pods, {}, [], {}, NOW, 2)(Decision(1, "idle"), 2)
    assert (held.replicas, held.reason[:18]) == (2, "holding: retiring ")


def test_a_deleted_pod_keeps_its_mark_until_it_is_gone() -> None:
    """Regression: a burst just after a scale-down lifted the marks of the pods being
    deleted; still running until their SIGTERM, they claimed long jobs and cut them."""
    deleted = {**pod("b"), "metadata": {"name": "b", "deletionTimestamp": "x"}}
    status = {"retiring": [{"pod": "b", "since": EARLIER}, {"pod": "gone", "since": EARLIER}]}
    gate = RetireGate.for_tick([pod("a"), deleted], {}, [], status, NOW, 1)
    assert gate(Decision(3, "scale up: a burst"), 1) == Decision(3, "scale up: a burst")
    assert gate.entries() == [{"pod": "b", "since": EARLIER, "final": True}]


def test_a_written_scale_down_makes_its_marks_final_until_the_pods_are_gone() -> None:
    """Regression: the tick right after a 3 -> 1 scale-down, with two long jobs just
    enqueued, scaled up to 2 and lifted a mark, while the ReplicaSet controller had
    already deleted both marked pods (the watch had not shown it yet): the pod claimed a
    long job and its SIGTERM cut it. Marks are final once their scale-down is written
    (said by the entry, or read from a spec.replicas below the live pods when that
    status write was lost): kept whatever the fleet wants, their pods out of the fleet,
    and deleted by the operator when still alive."""
    pods = [pod("a"), pod("b"), pod("c")]
    beats = [WorkerHeartbeat(worker_id=n, retiring=EARLIER) for n in "bc"]
    confirmed = {"retiring": [{"pod": "b", "since": EARLIER}, {"pod": "c", "since": EARLIER}]}
    drop = RetireGate.for_tick(pods, {}, beats, confirmed, NOW, 3)
    assert drop(Decision(1, "idle"), 3).replicas == 1
    drop.scaled(1, 3)
    entries = drop.entries() or []
    assert [e["final"] for e in entries] == [True, True]
    written = {"retiring": entries}
    for status, replicas in ((written, 1), (confirmed, 1), (written, 2)):
        # the burst's tick (spec.replicas 1, the pods alive in the watch), one whose
        # status write was lost, and the next (spec.replicas 2, the pods still there)
        burst = RetireGate.for_tick(pods, {}, beats, status, NOW, replicas)
        assert [m.name for m in burst.members] == ["a"]
        # more live pods than spec.replicas: the ReplicaSet controller removes them itself
        assert burst.doomed == []
        assert burst.marked == ["b", "c"]  # the lowest deletion cost stays
        assert burst(Decision(2, "a burst"), replicas) == Decision(2, "a burst")
        assert [e["pod"] for e in burst.entries() or []] == ["b", "c"], (status, replicas)
    # the controller saw spec.replicas 2 first and kept one final pod: the operator
    # deletes it (regression: deleting final pods while the controller was removing them
    # too made it delete the pod the burst had just added, and cut its job)
    kept = RetireGate.for_tick([pod("a"), pod("c")], {}, beats, written, NOW, 2)
    assert (kept.doomed, [m.name for m in kept.members]) == (["c"], ["a"])
    # a scale-down the plan let through but another hold kept (no write): nothing final,
    # nothing deleted (regression: the pods were deleted with spec.replicas still 3, the
    # ReplicaSet controller replaced them, and the scale-down then removed the new ones)
    held = RetireGate.for_tick(pods, {}, beats, confirmed, NOW, 3)
    assert held(Decision(1, "idle"), 3).replicas == 1
    after = RetireGate.for_tick(pods, {}, beats, {"retiring": held.entries()}, NOW, 3)
    assert (after.doomed, [m.name for m in after.members]) == ([], ["a", "b", "c"])
    # a mark not yet final is still lifted by a burst
    early = RetireGate.for_tick(pods, {}, beats, confirmed, NOW, 3)
    assert early(Decision(3, "a burst"), 3) == Decision(3, "a burst")
    assert (early.entries(), early.doomed) == ([], [])


def test_the_status_keeps_its_marks_when_the_store_cannot_be_read() -> None:
    previous = {"retiring": [{"pod": "b", "since": EARLIER}]}
    seen = Observed(1, 1, 2, None, "s", None, None, [])
    assert build_status(previous, seen, now=STAMP)["retiring"] == previous["retiring"]
    assert previous_marks(previous) == [Mark("b", EARLIER)]


def test_a_pod_no_node_took_goes_without_a_confirmation() -> None:
    """Regression: a marked pod that no node took (Pending, unscheduled) has no worker to
    confirm its mark, so a scale-down (or a revert of `kubectl scale`) waited the full
    confirmation bound for nothing."""
    marks = [Mark("b", EARLIER), Mark("c", EARLIER)]
    unplaced = [Member(n, 0, 0, None, placed=False) for n in ("b", "c")]
    result = plan([member("a"), *unplaced], marks, target=1)
    assert (result.replicas, result.holding) == (1, "")
    placed = [Member(n, 0, 0, None) for n in ("b", "c")]
    assert plan([member("a"), *placed], marks, target=1).replicas == 3
