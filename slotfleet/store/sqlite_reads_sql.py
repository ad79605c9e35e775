"""The SQL of the SQLite store's listing and dashboard verbs (``sqlite_reads``), in one
place: newest-first pages of jobs, jobs finished per time bucket, the retry of a finished
job, and the fleet snapshot's reads of many queues at once. Named parameters
(``:name``); times are epoch seconds passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

from slotfleet.models import SUMMARY_ERROR_CHARS
from slotfleet.store import listing_sql as shared
from slotfleet.store.rows import SUMMARY_COLUMNS
from slotfleet.store.sqlite_sql import JOB_COUNTS

#: The summary columns and the latest attempt's error message, cut short in SQL.
SUMMARY_SELECT = ", ".join(SUMMARY_COLUMNS) + (
    f", substr(json_extract(errors, '$[#-1].error'), 1, {SUMMARY_ERROR_CHARS}) AS last_error"
)


def listing(
    select: str, states: Sequence[str] | None, *, queue: bool, func: bool, after: bool
) -> str:
    """A newest-first page (``listing_sql.listing``) in this backend's parameter style."""
    return shared.listing(
        select,
        states,
        queue=queue,
        func=func,
        after=after,
        param=lambda name: f":{name}",
        running_from="slotfleet_jobs INDEXED BY slotfleet_jobs_running_owner",
    )


#: Jobs that ended since ``:since`` (a bucket boundary), per queue and bucket of
#: ``:bucket`` seconds (``start``: epoch seconds), through the finished partial index
#: (named: without statistics SQLite preferred (state, id) and read every finished job).
FINISHED_COUNTS = """
SELECT queue,
    CAST(completed_at / :bucket AS INTEGER) * :bucket AS start,
    sum(state = 'succeeded') AS succeeded,
    sum(state = 'failed') AS failed,
    sum(state = 'cancelled') AS cancelled
FROM slotfleet_jobs INDEXED BY slotfleet_jobs_finished
WHERE state IN ('succeeded', 'failed', 'cancelled') AND completed_at >= :since
GROUP BY 1, 2
"""

#: A failed or cancelled job queued again (see ``postgres_sql.RETRY``); no row when it is
#: in another state or another unfinished job holds its unique_key.
RETRY = """
UPDATE slotfleet_jobs
SET state = 'pending',
    attempts = 0,
    scheduled_at = :now,
    result = NULL,
    completed_at = NULL,
    cancel_requested_at = NULL,
    lease_owner = NULL,
    lease_expires_at = NULL
WHERE id = :id AND state IN ('failed', 'cancelled')
    AND NOT EXISTS (
        SELECT 1 FROM slotfleet_jobs AS o
        WHERE o.unique_key = slotfleet_jobs.unique_key
            AND o.state IN ('pending', 'running', 'retrying')
    )
RETURNING *
"""

# -- fleet_snapshot: a constant number of statements for any number of queues --------
# The queue names travel as one JSON array (``:queues``), read with json_each.

#: Per queue asked (each once): its job counts (NULLs when it has no job) and the pause
#: in effect at ``:now``.
FLEET_COUNTS = """
WITH asked AS (SELECT DISTINCT value AS queue FROM json_each(:queues)),
counts AS ({counts})
SELECT a.queue, c.ready, c.scheduled, c.running, c.succeeded, c.failed, c.cancelled,
    p.paused_at, p.resume_at
FROM asked AS a
LEFT JOIN counts AS c ON c.queue = a.queue
LEFT JOIN slotfleet_queue_pauses AS p
    ON p.queue = a.queue AND (p.resume_at IS NULL OR p.resume_at > :now)
""".format(counts=JOB_COUNTS.format(where="WHERE queue IN (SELECT queue FROM asked)"))

#: Running jobs of the asked queues per lease owner (the running-owner partial index).
FLEET_RUNNING = """
SELECT queue, lease_owner, count(*) AS running FROM slotfleet_jobs
WHERE state = 'running' AND queue IN (SELECT value FROM json_each(:queues))
    AND lease_owner IS NOT NULL
GROUP BY queue, lease_owner
"""

#: Running jobs of the asked queues with a cancel request (whole rows, by id).
FLEET_CANCELS = """
SELECT * FROM slotfleet_jobs
WHERE state = 'running' AND cancel_requested_at IS NOT NULL
    AND queue IN (SELECT value FROM json_each(:queues))
ORDER BY id
"""

#: What ``wait_for_change`` compares after another connection committed: the newest job
#: id (an enqueue) and the running jobs' cancel requests (their count and the latest),
#: each from an index (the primary key, the running-owner partial index).
CHANGE_MARK = """
SELECT (SELECT max(id) FROM slotfleet_jobs) AS last_id,
    count(*) AS cancels, max(cancel_requested_at) AS last_cancel
FROM slotfleet_jobs WHERE state = 'running' AND cancel_requested_at IS NOT NULL
"""
