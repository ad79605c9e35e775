"""The SQL of the SQLite store's listing and dashboard verbs (``sqlite_reads``), in one
place: newest-first pages of jobs, jobs finished per time bucket, and the retry of a
finished job. Named parameters (``:name``); times are epoch seconds passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

from slotfleet.models import SUMMARY_ERROR_CHARS
from slotfleet.store import listing_sql as shared
from slotfleet.store.rows import SUMMARY_COLUMNS

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
