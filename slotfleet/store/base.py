"""The store protocol: the only way the runtime touches persistent state.

Both backends (``sqlite`` and ``postgres``) implement :class:`Store` and pass one
contract suite (``tests/contract/test_store_contract.py``); nothing above this layer
knows which one it talks to. Each method is one domain verb and, where it matters,
one round trip: ``enqueue`` writes a batch in one statement, ``fetch`` claims up to
``limit`` jobs in one statement, ``complete`` applies a batch of completions in one.

What this layer is not: it makes no retry decisions (the executor base decides
retry vs. fail and passes the outcome), it never imports user code, and it keeps no
cache of job rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from slotfleet.models import (
    Completion,
    FleetSnapshot,
    JobId,
    JobState,
    QueuePause,
    QueueStats,
    WorkerHeartbeat,
)
from slotfleet.models.claimed import ClaimedJob

if TYPE_CHECKING:  # pydantic models: a worker that only claims and reports loads none
    from slotfleet.models.jobs import FinishedCounts, Job, JobSummary, QueuedJob

#: Seconds a fetched job's lease lasts unless its worker's heartbeat extends it. A job
#: whose worker died is back in the queue within about this long.
DEFAULT_LEASE_SECONDS = 15.0

#: A worker whose heartbeat is older than this is not counted in slots or fleets.
DEFAULT_WORKER_TTL_SECONDS = 30.0

#: A running attempt as its worker holds it: ``(job id, claim token)``.
Lease = tuple[JobId, str]


@runtime_checkable
class Store(Protocol):
    """Persistent jobs, leases, worker heartbeats and rate-limit windows."""

    dsn: str

    async def open(self) -> None:
        """Connect and apply pending migrations. Idempotent."""

    async def close(self) -> None:
        """Release connections. Safe to call twice."""

    async def enqueue(self, jobs: Sequence[Job]) -> list[QueuedJob]:
        """Insert ``jobs`` in one round trip and return them queued, in input order.

        A job whose ``unique_key`` matches a non-terminal job (already stored, or
        earlier in the same batch) is not inserted; that job is returned in its place.
        """

    async def enqueue_ids(self, jobs: Sequence[Job]) -> list[JobId]:
        """:meth:`enqueue`, returning only the ids (same order and deduplication): what
        ``App.enqueue_many`` needs, without building a :class:`QueuedJob` per row."""

    async def get(self, job_id: JobId) -> QueuedJob | None:
        """The job with that id, or ``None``."""

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState] | None = None,
        limit: int = 100,
        after_id: JobId | None = None,
        func: str | None = None,
    ) -> list[QueuedJob]:
        """Jobs filtered by queue, states and function, newest first; ``after_id`` pages
        backwards (ids below it). Each page is a few index range scans whatever the
        filter, so paging stays fast on millions of rows."""

    async def list_summaries(
        self,
        *,
        queue: str | None = None,
        states: Sequence[JobState] | None = None,
        limit: int = 100,
        after_id: JobId | None = None,
        func: str | None = None,
    ) -> list[JobSummary]:
        """:meth:`list_jobs` without the payloads: the same jobs in the same order, as
        summaries (kwargs, result and tracebacks are not read)."""

    async def finished_counts(
        self, *, window_seconds: float, bucket_seconds: float
    ) -> list[FinishedCounts]:
        """Jobs that ended (succeeded, failed, cancelled) in the last ``window_seconds``
        by the store's clock, per queue and bucket of ``bucket_seconds`` (buckets start
        on multiples of it since the epoch; the window starts on a bucket boundary, so
        the oldest bucket is whole). Buckets with nothing finished are absent."""

    async def retry(self, job_id: JobId) -> tuple[QueuedJob, bool] | None:
        """Queue a failed or cancelled job again: ``pending`` now, its attempts given
        back, result and cancel request cleared, its errors kept. Any other state, or
        another unfinished job holding its ``unique_key``, leaves it as it is. Returns
        the job afterwards and whether it was queued again; ``None`` if unknown."""

    async def fetch(
        self, queue: str, worker_id: str, limit: int, lease_seconds: float, *, claim: str
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` ready jobs of ``queue`` for ``worker_id`` under the claim
        token ``claim`` (a fresh random string per call: see :meth:`release_claim`).

        Ready means pending or retrying with ``scheduled_at <= now``, in a queue not
        paused (:meth:`pause_queue`) at ``now``; the order is
        priority (high first), then scheduled time, then id. Claimed jobs become
        ``running`` with ``attempts + 1``, ``started_at = now``, ``lease_token = claim``
        and a lease until ``now + lease_seconds``. Two concurrent fetches never claim the
        same job. A claimed row that cannot be read back is failed in place with a
        readable error (never left leased to a worker that cannot run it).
        """

    async def release_claim(self, worker_id: str, claim: str) -> list[JobId]:
        """Hand back the jobs a :meth:`fetch` claimed under ``claim`` that are still
        running: pending again, the attempt not counted. For a fetch whose reply never
        arrived (the claim may have committed): the worker never saw those jobs, so they
        did not run. Idempotent; returns the ids handed back."""

    async def complete(self, completions: Sequence[Completion]) -> list[JobId]:
        """Apply completions in one round trip; return the ids actually updated.

        A completion applies only while its job is ``running`` under the completion's
        claim ``token``. ``RETRY`` makes the job ``retrying`` at the store's ``now +
        retry_delay``; ``RELEASED`` makes it ``pending`` again and gives the attempt
        back; ``SUCCEEDED``/``FAILED``/``CANCELLED`` are terminal. Errors are appended.
        A batch the database refuses as a whole raises :class:`StoreError`; callers split
        it to find the row at fault.
        """

    async def request_cancel(self, job_id: JobId) -> QueuedJob | None:
        """Ask for a job to be cancelled. A pending, retrying job is cancelled at once;
        a running one gets ``cancel_requested_at`` for its worker to act on; a
        terminal one is left as it is. Returns the job afterwards, ``None`` if unknown."""

    async def cancel_requests(
        self, *, worker_id: str | None = None, queue: str | None = None
    ) -> list[QueuedJob]:
        """Running jobs with a cancel request, optionally only those leased by
        ``worker_id`` or on ``queue``."""

    async def heartbeat(
        self, beat: WorkerHeartbeat, lease_seconds: float, held: Sequence[Lease]
    ) -> set[Lease]:
        """Record the worker's liveness and slots, and extend to ``now + lease_seconds``
        the leases of the ``(job id, claim token)`` pairs in ``held`` whose job is still
        running under that token. Returns the pairs renewed: a held pair missing from it
        was lost (recovered after the lease expired, taken by another attempt), and the
        worker must stop acting on it. Leases are never renewed by worker id: a
        restarted process with the same id holds nothing of its predecessor's."""

    async def remove_worker(self, worker_id: str) -> None:
        """Forget a worker that has stopped."""

    async def workers(
        self, *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> list[WorkerHeartbeat]:
        """Workers seen within ``ttl_seconds``."""

    async def purge(
        self, older_than: timedelta, *, queue: str | None = None, limit: int = 1000
    ) -> int:
        """Delete up to ``limit`` finished jobs (succeeded, failed, cancelled) completed
        more than ``older_than`` before the store's ``now``, oldest first, from ``queue``
        or every queue; return how many. Batches keep each delete short: call again
        while it returns ``limit``."""

    async def running_by_worker(self, queue: str) -> dict[str, int]:
        """Running jobs of ``queue`` per lease owner (worker id); owners with none are
        absent. Unlike a heartbeat, this counts a job the moment it is claimed."""

    async def recover_expired(self) -> list[JobId]:
        """Put running jobs whose lease has expired back in the queue (``retrying``
        now, error ``lease expired`` recorded), or ``failed`` when they have used all
        their attempts. Returns the ids it touched. Safe to run from every worker."""

    async def queue_stats(
        self, queue: str | None = None, *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> list[QueueStats]:
        """Backlog by state, live slots from heartbeats and the pause in effect, per
        queue."""

    async def fleet_snapshot(
        self, queues: Sequence[str], *, ttl_seconds: float = DEFAULT_WORKER_TTL_SECONDS
    ) -> FleetSnapshot:
        """What a fleet controller reads per tick, for every queue in ``queues`` at once:
        per queue, what :meth:`queue_stats` (that queue's entry),
        :meth:`cancel_requests` (``queue=``) and :meth:`running_by_worker` return, and
        the live workers once (:meth:`workers`); each queue asked has an entry, empty
        when the store knows nothing of it. A constant number of statements whatever
        the number of queues (two while none of them has a running job, four
        otherwise; one with no queue asked), each seeing the latest commits: the parts
        are not one transaction's snapshot."""

    async def wait_for_change(self, timeout: float) -> None:
        """Return when a job may have been enqueued (or become ready again) on any queue
        or a cancel was requested, or after ``timeout`` seconds. A change since the
        previous call returned makes it return at once, so a controller that reads,
        then waits, misses nothing between the two (the first call only sees changes
        after it starts). PostgreSQL wakes on NOTIFY (a channel of its own for cancel
        requests, which idle workers do not listen to); SQLite watches the file for new
        jobs and cancel requests (jobs made ready again by another process are seen at
        ``timeout`` there). A scheduled job coming due wakes nobody on either."""

    async def pause_queue(
        self,
        queue: str,
        *,
        resume_at: datetime | None = None,
        resume_after: float | None = None,
    ) -> QueuePause:
        """Pause ``queue`` for every worker (replacing an earlier pause of it): no
        :meth:`fetch` claims from it until ``resume_at``, or for ``resume_after`` seconds
        of the store's clock, or (neither given) until :meth:`resume_queue`. Running jobs
        are not touched. Returns the pause as stored."""

    async def resume_queue(self, queue: str) -> bool:
        """End ``queue``'s pause and wake its idle workers; return whether a pause was in
        effect."""

    async def take_rate_tokens(self, queue: str, wanted: int, count: int, period: float) -> int:
        """Take up to ``wanted`` job starts from ``queue``'s shared window of ``count``
        per ``period`` seconds; return how many were granted (possibly 0)."""

    async def wait_for_jobs(self, queue: str, timeout: float) -> None:
        """Return when a job may have become ready on ``queue`` or after ``timeout``
        seconds. Postgres wakes on NOTIFY; SQLite simply sleeps."""

    async def now(self) -> datetime:
        """The store's clock (the database server's time on Postgres)."""


#: Rows one purge statement deletes at most (short deletes, short locks).
PURGE_BATCH = 1000


async def purge_in_batches(
    store: Store,
    older_than: timedelta,
    *,
    queue: str | None = None,
    batch: int = PURGE_BATCH,
    max_batches: int | None = None,
) -> int:
    """The one batched purge loop (``slotfleet jobs purge``, the dashboard, retention):
    :meth:`Store.purge` in batches of ``batch`` until one comes back short, or
    ``max_batches`` ran; return how many jobs were deleted."""
    total = 0
    rounds = 0
    while max_batches is None or rounds < max_batches:
        deleted = await store.purge(older_than, queue=queue, limit=batch)
        total += deleted
        rounds += 1
        if deleted < batch:
            break
    return total
