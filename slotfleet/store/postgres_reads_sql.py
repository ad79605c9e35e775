"""The SQL of the PostgreSQL store's listing and dashboard verbs (``postgres_reads``),
in one place: newest-first pages of jobs, jobs finished per time bucket, the retry of a
finished job, and the fleet snapshot's reads of many queues at once. psycopg named
parameters; the hot path's statements are in ``postgres_sql``.
"""

from __future__ import annotations

from collections.abc import Sequence

from slotfleet.models import SUMMARY_ERROR_CHARS
from slotfleet.store import listing_sql as shared
from slotfleet.store.postgres_sql import JOB_COUNT_COLUMNS
from slotfleet.store.rows import SUMMARY_COLUMNS

#: The summary columns and the latest attempt's error message, cut short in SQL so a
#: listing never reads a whole traceback.
SUMMARY_SELECT = ", ".join(SUMMARY_COLUMNS) + (
    f", left(errors -> -1 ->> 'error', {SUMMARY_ERROR_CHARS}) AS last_error"
)


def listing(
    select: str, states: Sequence[str] | None, *, queue: bool, func: bool, after: bool
) -> str:
    """A newest-first page (``listing_sql.listing``) in this backend's parameter style."""
    return shared.listing(
        select, states, queue=queue, func=func, after=after, param=lambda name: f"%({name})s"
    )


#: Jobs that ended in the last ``%(window)s`` seconds, counted per queue and bucket of
#: ``%(bucket)s`` seconds (``start``: epoch seconds). The window starts on a bucket
#: boundary, so the oldest bucket is whole. Walks the finished partial index (0002) from
#: the window's start: its cost follows the jobs finished in the window, not the table.
FINISHED_COUNTS = """
SELECT queue,
    floor(extract(epoch FROM completed_at)::float8 / %(bucket)s) * %(bucket)s AS start,
    count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE state = 'failed') AS failed,
    count(*) FILTER (WHERE state = 'cancelled') AS cancelled
FROM slotfleet_jobs
WHERE state IN ('succeeded', 'failed', 'cancelled')
    AND completed_at >= to_timestamp(
        floor((extract(epoch FROM now())::float8 - %(window)s) / %(bucket)s) * %(bucket)s
    )
GROUP BY 1, 2
"""

#: A failed or cancelled job queued again: pending now, its attempts given back, its
#: errors kept. Refused (no row changed) while another unfinished job holds its
#: unique_key. Returns the job and whether it changed; wakes the queue's workers.
RETRY = """
WITH changed AS (
    UPDATE slotfleet_jobs AS j
    SET state = 'pending',
        attempts = 0,
        scheduled_at = now(),
        result = NULL,
        completed_at = NULL,
        cancel_requested_at = NULL,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE j.id = %(id)s AND j.state IN ('failed', 'cancelled')
        AND NOT EXISTS (
            SELECT 1 FROM slotfleet_jobs AS o
            WHERE o.unique_key = j.unique_key AND o.state IN ('pending', 'running', 'retrying')
        )
    RETURNING j.*
),
notified AS (
    SELECT pg_notify('slotfleet_jobs', c.queue) AS sent FROM changed AS c
)
SELECT true AS retried, c.* FROM changed AS c WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT false, s.* FROM slotfleet_jobs AS s
WHERE s.id = %(id)s AND NOT EXISTS (SELECT 1 FROM changed)
"""

# -- fleet_snapshot: a constant number of statements for any number of queues --------
# The queue names travel as one text[] parameter, so the statements (and their plans and
# pg_stat_statements entries) are the same for 1 queue or 1,000.

#: Per queue asked (each once): its job counts (NULLs when it has no job) and the pause
#: in effect. One pass over the asked queues' rows for all of them, where ``queue_stats``
#: makes one per queue.
FLEET_COUNTS = f"""
WITH asked AS (SELECT DISTINCT unnest(%(queues)s::text[]) AS queue),
counts AS (
    SELECT queue,{JOB_COUNT_COLUMNS}
    FROM slotfleet_jobs
    WHERE queue = ANY (%(queues)s::text[])
    GROUP BY queue
)
SELECT a.queue, c.ready, c.scheduled, c.running, c.succeeded, c.failed, c.cancelled,
    p.paused_at, p.resume_at
FROM asked AS a
LEFT JOIN counts AS c ON c.queue = a.queue
LEFT JOIN slotfleet_queue_pauses AS p
    ON p.queue = a.queue AND (p.resume_at IS NULL OR p.resume_at > now())
"""

#: Running jobs of the asked queues per lease owner: the running-owner partial index
#: (running rows only), nothing decoded.
FLEET_RUNNING = """
SELECT queue, lease_owner, count(*) AS running FROM slotfleet_jobs
WHERE state = 'running' AND queue = ANY (%(queues)s::text[]) AND lease_owner IS NOT NULL
GROUP BY queue, lease_owner
"""

#: Running jobs of the asked queues with a cancel request (whole rows, by id).
FLEET_CANCELS = """
SELECT * FROM slotfleet_jobs
WHERE state = 'running' AND cancel_requested_at IS NOT NULL
    AND queue = ANY (%(queues)s::text[])
ORDER BY id
"""
