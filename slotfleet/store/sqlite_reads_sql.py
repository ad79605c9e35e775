"""The SQL of the SQLite store's listing and dashboard verbs (``sqlite_reads``), in one
place: newest-first pages of jobs, jobs finished per time bucket, and the retry of a
finished job. Named parameters (``:name``); times are epoch seconds passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

from slotfleet.models import SUMMARY_ERROR_CHARS
from slotfleet.store.rows import SUMMARY_COLUMNS

#: The summary columns and the latest attempt's error message, cut short in SQL.
SUMMARY_SELECT = ", ".join(SUMMARY_COLUMNS) + (
    f", substr(json_extract(errors, '$[#-1].error'), 1, {SUMMARY_ERROR_CHARS}) AS last_error"
)


def listing(
    select: str, states: Sequence[str] | None, *, queue: bool, func: bool, after: bool
) -> str:
    """A newest-first page of ``select`` columns (``:limit`` rows below ``:after_id``),
    filtered by ``:queue`` and ``:func`` when asked: the primary key backwards when
    ``states`` is ``None``, else one backwards range scan per state of an index ending in
    ``(state, id)``, merged by id (see ``postgres_sql.listing``; states are ``JobState``
    values, a closed set written as literals)."""
    where = []
    if queue:
        where.append("queue = :queue")
    if func:
        where.append("func = :func")
    if after:
        where.append("id < :after_id")
    if states is None:
        condition = " AND ".join(where) or "1 = 1"
        return (
            f"SELECT {select} FROM slotfleet_jobs WHERE {condition} ORDER BY id DESC LIMIT :limit"
        )
    if not states:
        return f"SELECT {select} FROM slotfleet_jobs WHERE 0"
    parts = [
        f"SELECT {select} FROM slotfleet_jobs WHERE {' AND '.join([state_is, *where])} "
        "ORDER BY id DESC LIMIT :limit"
        for state_is in (f"state = '{state}'" for state in states)
    ]
    if len(parts) == 1:
        return parts[0]
    union = " UNION ALL ".join(f"SELECT * FROM ({part})" for part in parts)
    return f"{union} ORDER BY id DESC LIMIT :limit"


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
