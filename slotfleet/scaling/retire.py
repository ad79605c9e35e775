"""Retiring workers before a scale-down: which ones stop claiming, and when the fleet may shrink.

A scale-down that only lowers the replica count races with the workers: an idle worker
can claim a job between the decision and its SIGTERM, and a job longer than the drain
timeout is then cut and run again. So a fleet shrinks in two steps:

1. :func:`plan_retirement` chooses the members to remove and marks them (the operator
   writes the marks to the Queue's ``status.retiring``); a marked worker stops claiming
   and echoes its mark in its heartbeat, written after its last claim;
2. the fleet shrinks only once every marked member has confirmed (echoed its mark) and
   runs nothing. Until then the plan holds the replica count where it is.

Which members: the ones the ReplicaSet controller removes first. It orders pods by their
state (:attr:`Member.tier`: unscheduled, pending, not ready, ready) before their
``pod-deletion-cost``, so marks go to the lowest tier first, then to idle members (fewest
busy slots), keeping earlier marks when they are still as good, so a mark does not move
from tick to tick. Marked members get :data:`RETIRING_DELETION_COST`, below every other
member's busy slots, so among equals the controller removes exactly them.

A marked member that claimed a job just before it saw its mark is busy: another idle
member of its tier takes its place when there is one, else the scale-down waits for the
job (no bound: the member has confirmed, it is only busy). A member that does not
confirm within ``confirm_timeout`` while the store sees it idle (a worker that predates
this protocol, a worker that cannot read its Queue) no longer holds the scale-down: the
fleet shrinks as it did before, and the lease model keeps a job it claimed meanwhile
safe (handed back by the drain, run again).

What this module is not: it reads nothing, writes nothing and reads no clock (``now`` and
the new marks' ``stamp`` are passed in); the operator turns pods, heartbeats and the
Queue's status into :class:`Member` and :class:`Mark` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

#: ``pod-deletion-cost`` of a retiring member: below an idle member's 0.
RETIRING_DELETION_COST = -1
#: Seconds a member that the store sees idle may take to confirm its mark before the
#: scale-down goes ahead without it: three heartbeats of the default lease, and well
#: above the moment a watching worker needs (its Queue's watch delivers the mark at once).
CONFIRM_TIMEOUT_SECONDS = 30.0
#: Members named in a holding reason at most.
_NAMED = 3


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the fleet (a worker pod that is not terminating)."""

    name: str
    """The pod's name, which is its worker id."""
    tier: int
    """Its place in the ReplicaSet controller's removal order before deletion cost
    (lower goes first): see ``slotfleet.operator.retiring.pod_tier``."""
    busy: int
    """Busy slots: the larger of its running jobs and its heartbeat's busy slots."""
    echo: str | None
    """The mark its latest live heartbeat echoes, if any."""
    placed: bool = True
    """Whether it is on a node (or a process that runs): a pod no node took has no
    worker, so it can claim nothing and has nothing to confirm."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A member chosen for removal, as written to ``status.retiring``."""

    pod: str
    since: str
    """When it was marked (RFC 3339); also the text its worker echoes to confirm."""
    final: bool = False
    """The replica count no longer counts it (the scale-down it was marked for was
    written, which only the caller knows): it goes, and its mark is never lifted (see
    :func:`split_final`)."""


@dataclass(frozen=True, slots=True)
class RetirePlan:
    """What one tick decides."""

    marks: tuple[Mark, ...]
    """The members to retire, for ``status.retiring`` (empty: nothing to retire)."""
    replicas: int
    """The replica count that may be written now."""
    holding: str
    """Why ``replicas`` stays above the target (empty when it does not)."""
    unconfirmed: tuple[str, ...] = ()
    """Members let go after ``confirm_timeout`` without a confirmation (worth a warning)."""


def plan_retirement(
    members: Sequence[Member],
    marks: Iterable[Mark],
    *,
    target: int,
    replicas: int,
    now: datetime,
    stamp: str,
    confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS,
    most: int | None = None,
) -> RetirePlan:
    """The marks and the replica count for this tick.

    ``target`` is the autoscaler's decision, ``replicas`` the current ``spec.replicas``,
    ``marks`` those written on earlier ticks, ``stamp`` the ``since`` of marks made now
    (``now`` as RFC 3339). At most ``most`` members are retired in one round: a larger
    scale-down takes several."""
    if target >= replicas:
        return RetirePlan((), target, "")
    need = len(members) - target
    if need <= 0:  # only pods not created yet go: no live worker is removed
        return RetirePlan((), target, "")
    if most is not None:
        need = min(need, most)
    names = {m.name for m in members}
    earlier = {m.pod: m for m in marks if m.pod in names}  # a pod gone needs no mark
    chosen = sorted(
        members,
        key=lambda m: (m.tier, m.busy > 0, m.name not in earlier, m.busy, m.name),
    )[:need]
    new_marks = tuple(earlier.get(m.name) or Mark(m.name, stamp) for m in chosen)
    smaller = len(members) - need
    if {m.pod for m in new_marks} != earlier.keys():
        # a mark placed (or lifted) now: its pod has not seen it, nor its deletion cost
        return RetirePlan(new_marks, replicas, f"retiring {_names(new_marks)} first")
    busy: list[str] = []
    waiting: list[str] = []
    late: list[str] = []
    for member, mark in zip(chosen, new_marks, strict=True):
        if member.busy > 0:
            busy.append(member.name)
        elif member.placed and member.echo != mark.since:
            if _age(mark, now) >= confirm_timeout:
                late.append(member.name)
            else:
                waiting.append(member.name)
    if busy:
        return RetirePlan(
            new_marks, replicas, f"waiting for the jobs of retiring {_join(busy)} to end"
        )
    if waiting:
        return RetirePlan(
            new_marks, replicas, f"waiting for retiring {_join(waiting)} to stop claiming"
        )
    return RetirePlan(new_marks, smaller, "", tuple(late))


def split_final(
    members: Sequence[Member], marks: Iterable[Mark], replicas: int
) -> tuple[list[Mark], list[Mark]]:
    """The marks of live members, split into final ones and the rest.

    A mark is final once the scale-down it was made for is written: its entry says so, or
    (the status write after that scale-down was lost) ``spec.replicas`` is below the live
    members and the marked ones are those the ReplicaSet controller removes. A final mark
    is never lifted while its pod lives: the controller may already have deleted the pod
    (the operator's watch lags), and a lifted mark would let it claim a job just before
    its SIGTERM, a burst right after a scale-down being the common case. Its pod is not
    part of the fleet any more; the operator deletes it if the controller does not (it
    may have seen a larger replica count first)."""
    live = {m.name for m in members}
    ours = [m for m in marks if m.pod in live]
    final = [m for m in ours if m.final]
    excess = len(members) - replicas - len(final)
    rest = [m for m in ours if not m.final]
    if excess > 0:
        final += [replace(m, final=True) for m in rest[:excess]]
        rest = rest[excess:]
    return final, rest


def _age(mark: Mark, now: datetime) -> float:
    try:
        since = datetime.fromisoformat(mark.since)
    except ValueError:  # not ours to parse: treat it as old, so it holds nothing for ever
        return float("inf")
    return (now - since).total_seconds()


def _names(marks: Sequence[Mark]) -> str:
    return _join([m.pod for m in marks])


def _join(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_NAMED])
    return shown if len(names) <= _NAMED else f"{shown} and {len(names) - _NAMED} more"
