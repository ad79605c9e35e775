"""Leader election's decisions, without I/O: who may hold the Lease, and when a leader
must give up.

This is the pattern of client-go's ``leaderelection`` package on a
``coordination.k8s.io/v1`` Lease; ``slotfleet/operator/election.py`` does the API calls
and runs the operator under it. Here are only the rules, each a pure function of what
this process saw and its own monotonic clock, so they are tested with a fake clock:

* **Expiry is judged by the observer, never by comparing wall clocks.** A Lease says when
  its holder last renewed (``renewTime``), in the holder's wall clock; another machine's
  clock may be minutes off. So a candidate notes *its own* monotonic time whenever it
  sees the record change, and the holder's lease counts as expired only
  ``leaseDurationSeconds`` after that, on this process's clock. A holder that keeps
  renewing changes ``renewTime``, so the record keeps changing and never expires.
* **A leader stops before anyone may take over.** It counts its lease from the moment it
  *sent* its last successful renewal (earlier than the API server applied it, so earlier
  than any other candidate can have seen it), and gives up ``renew_deadline`` after that,
  which is shorter than the lease duration: the rest is the time it has to stop writing.
* **Two candidates cannot both win**: every write carries the ``resourceVersion`` read
  with the record (the API server refuses a stale one with 409), so of two candidates
  that saw the same expired record only one update succeeds. That is enforced by
  the caller; this module only says which record to write.
* **An empty holder is a released lease**, free at once (a leader that stops cleanly
  writes it, so its successor need not wait out the duration).

What this module is not: it never talks to the API server, never sleeps and never reads
a clock; callers pass ``now`` (monotonic seconds) and ``wall`` (the time written into the
record, which only humans and ``kubectl`` read).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

#: Seconds a lease lasts when ``--lease-duration`` is not given (client-go's default).
DEFAULT_LEASE_DURATION = 15.0


@dataclass(frozen=True)
class ElectionTimings:
    """How long a lease lasts, how soon its leader gives up, how often it is tried."""

    lease_duration: float = DEFAULT_LEASE_DURATION
    """Seconds a candidate waits, after it last saw the record change, before it takes
    the lease over; the longest a failover after a crash can take (plus one retry)."""

    @property
    def renew_deadline(self) -> float:
        """Seconds after its last successful renewal at which a leader gives up: two
        thirds of the duration, leaving a third to stop writing before anyone may take
        over (client-go's 10 s of 15)."""
        return self.lease_duration * 2 / 3

    @property
    def retry_period(self) -> float:
        """Seconds between renewals, and between a follower's looks at the Lease: a third
        of the duration, so a leader tries at least twice before its deadline."""
        return self.lease_duration / 3

    def __post_init__(self) -> None:
        if not self.lease_duration >= 1:
            raise ValueError(f"the lease duration must be at least 1 s, not {self.lease_duration}")


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec: what the holder wrote."""

    holder: str
    """``holderIdentity``; empty when nobody holds it (released)."""
    duration: float
    """``leaseDurationSeconds``."""
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0
    """``leaseTransitions``: how many times the lease changed hands."""

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | None) -> LeaseRecord:
        spec = spec or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration=float(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": max(1, round(self.duration)),
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


def micro_time(wall: datetime) -> str:
    """A ``MicroTime`` as the API server wants it: UTC with microseconds and ``Z``."""
    return wall.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Verdict(enum.Enum):
    """What a candidate should do after looking at the Lease."""

    CREATE = "create"
    """No Lease exists: create it, holding it."""
    TAKE = "take"
    """Released, or its holder's lease ran out as seen here: take it over."""
    RENEW = "renew"
    """This process holds it: renew it."""
    WAIT = "wait"
    """Another holder's lease is still running: look again later."""


@dataclass(frozen=True)
class Seen:
    """The record as this process last saw it, and when (monotonic) it last changed."""

    record: LeaseRecord
    resource_version: str
    changed_at: float


@dataclass
class Candidate:
    """One process's view of the Lease: what it saw, and what it may do about it."""

    identity: str
    timings: ElectionTimings
    seen: Seen | None = None

    def observe(self, record: LeaseRecord | None, resource_version: str, now: float) -> None:
        """Note the record just read (``None``: no Lease). The clock for the holder's expiry
        restarts only when the record differs from the last one seen."""
        if record is None:
            self.seen = None
        elif self.seen is None or self.seen.record != record:
            self.seen = Seen(record, resource_version, now)
        else:
            self.seen = replace(self.seen, resource_version=resource_version)

    def verdict(self, now: float) -> Verdict:
        if self.seen is None:
            return Verdict.CREATE
        record = self.seen.record
        if record.holder == self.identity:
            return Verdict.RENEW
        if not record.holder or now >= self.seen.changed_at + record.duration:
            return Verdict.TAKE
        return Verdict.WAIT

    def expires_in(self, now: float) -> float:
        """Seconds until another holder's lease runs out as seen here (0: it has)."""
        if self.seen is None or not self.seen.record.holder:
            return 0.0
        return max(0.0, self.seen.changed_at + self.seen.record.duration - now)

    def claim(self, wall: datetime) -> LeaseRecord:
        """The record to write to hold the lease from ``wall`` on (a renewal keeps the
        acquire time and the transition count; a takeover counts one transition)."""
        stamp = micro_time(wall)
        duration = self.timings.lease_duration
        previous = self.seen.record if self.seen is not None else None
        if previous is not None and previous.holder == self.identity:
            return replace(previous, duration=duration, renew_time=stamp)
        transitions = 0 if previous is None else previous.transitions + 1
        return LeaseRecord(self.identity, duration, stamp, stamp, transitions)

    def release(self, wall: datetime) -> LeaseRecord | None:
        """The record that hands the lease back (empty holder), or ``None`` when this
        process does not hold it as far as it knows."""
        if self.seen is None or self.seen.record.holder != self.identity:
            return None
        stamp = micro_time(wall)
        return replace(self.seen.record, holder="", duration=1, renew_time=stamp)


@dataclass
class Tenure:
    """A leader's own count of how long its lease is good for."""

    timings: ElectionTimings
    renewed_at: float
    """Monotonic time at which the last successful renewal was *sent*."""

    def renewed(self, sent_at: float) -> None:
        self.renewed_at = max(self.renewed_at, sent_at)

    def remaining(self, now: float) -> float:
        """Seconds left before this leader must give up (<= 0: it must, now)."""
        return self.renewed_at + self.timings.renew_deadline - now

    def lost(self, now: float) -> bool:
        return self.remaining(now) <= 0

    def hard_stop_in(self, now: float) -> float:
        """Seconds until another candidate may take over (the lease duration since the
        last renewal was sent): whatever still writes must be gone by then."""
        return self.renewed_at + self.timings.lease_duration - now
