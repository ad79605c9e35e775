"""The SQL the SQLite store runs, in one place. Named parameters (``:name``).

Timestamps are epoch seconds passed in as ``:now`` by the store (SQLite has no
server clock worth the name); JSON columns are text edited with the JSON1 functions.
"""

from __future__ import annotations

MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS slotfleet_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
)
"""

APPLIED_VERSIONS = "SELECT version FROM slotfleet_migrations"

RECORD_MIGRATION = (
    "INSERT INTO slotfleet_migrations (version, name, applied_at) VALUES (:version, :name, :now)"
)

FIND_ACTIVE_BY_KEY = """
SELECT * FROM slotfleet_jobs
WHERE unique_key = :unique_key AND state IN ('pending', 'running', 'retrying')
"""

INSERT_JOB = """
INSERT INTO slotfleet_jobs (
    queue, func, kwargs, priority, scheduled_at, max_attempts, retry, timeout, unique_key,
    meta, created_at
) VALUES (
    :queue, :func, :kwargs, :priority, :scheduled_at, :max_attempts, :retry, :timeout,
    :unique_key, :meta, :now
)
RETURNING *
"""

GET_JOB = "SELECT * FROM slotfleet_jobs WHERE id = :id"

# The inner SELECT walks slotfleet_jobs_fetch in index order (no sort step); the write
# lock taken by BEGIN IMMEDIATE makes the select-then-update atomic across processes. A
# queue paused in the store yields nothing (the pause check names no job column: SQLite
# evaluates it once, before the scan).
FETCH = """
UPDATE slotfleet_jobs
SET state = 'running',
    attempts = attempts + 1,
    started_at = :now,
    lease_owner = :worker_id,
    lease_token = :claim,
    claimed_by = :worker_id,
    lease_expires_at = :now + :lease_seconds
WHERE id IN (
    SELECT id FROM slotfleet_jobs
    WHERE queue = :queue AND state IN ('pending', 'retrying') AND scheduled_at <= :now
        AND NOT EXISTS (
            SELECT 1 FROM slotfleet_queue_pauses AS p
            WHERE p.queue = :queue AND (p.resume_at IS NULL OR p.resume_at > :now)
        )
    ORDER BY priority DESC, scheduled_at, id
    LIMIT :limit
)
RETURNING *
"""

#: Is anything ready in the queue (and the queue not paused)? A read: under WAL it never
#: waits for a writer.
READY_EXISTS = """
SELECT 1 FROM slotfleet_jobs
WHERE queue = :queue AND state IN ('pending', 'retrying') AND scheduled_at <= :now
    AND NOT EXISTS (
        SELECT 1 FROM slotfleet_queue_pauses AS p
        WHERE p.queue = :queue AND (p.resume_at IS NULL OR p.resume_at > :now)
    )
LIMIT 1
"""

#: A claimed row that cannot be read back: failed in place (see the PostgreSQL store).
FAIL_UNREADABLE = """
UPDATE slotfleet_jobs
SET state = 'failed',
    completed_at = :now,
    errors = json_insert(errors, '$[#]', json_object(
        'attempt', attempts, 'error', :error, 'traceback', '', 'at', :now_iso
    )),
    lease_owner = NULL,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE id = :id AND state = 'running' AND lease_token = :claim
"""

#: A fetch whose reply was lost: its rows go back as they were, the attempt given back.
RELEASE_CLAIM = """
UPDATE slotfleet_jobs
SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'pending' END,
    attempts = max(attempts - 1, 0),
    completed_at = CASE WHEN cancel_requested_at IS NOT NULL THEN :now ELSE NULL END,
    lease_owner = NULL,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE state = 'running' AND lease_owner = :worker_id AND lease_token = :claim
RETURNING id
"""

#: Fenced by state and claim token: a late write from a worker that lost the job matches
#: no row.
COMPLETE = """
UPDATE slotfleet_jobs
SET state = CASE
        WHEN :outcome IN ('retry', 'released') AND cancel_requested_at IS NOT NULL
            THEN 'cancelled'
        WHEN :outcome = 'retry' THEN 'retrying'
        WHEN :outcome = 'released' THEN 'pending'
        ELSE :outcome
    END,
    attempts = CASE WHEN :outcome = 'released' THEN max(attempts - 1, 0) ELSE attempts END,
    scheduled_at = CASE
        WHEN :outcome = 'retry' AND cancel_requested_at IS NULL THEN :now + :retry_delay
        ELSE scheduled_at
    END,
    result = CASE WHEN :outcome = 'succeeded' THEN :result ELSE result END,
    meta = coalesce(:meta, meta),
    errors = CASE
        WHEN :error IS NULL THEN errors
        ELSE json_insert(errors, '$[#]', json(:error))
    END,
    completed_at = CASE
        WHEN :outcome IN ('retry', 'released') AND cancel_requested_at IS NULL THEN NULL
        ELSE :now
    END,
    lease_owner = NULL,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE id = :id AND state = 'running' AND lease_token = :token
RETURNING id
"""

REQUEST_CANCEL = """
UPDATE slotfleet_jobs
SET state = CASE WHEN state IN ('pending', 'retrying') THEN 'cancelled' ELSE state END,
    completed_at = CASE WHEN state IN ('pending', 'retrying') THEN :now ELSE completed_at END,
    cancel_requested_at = coalesce(cancel_requested_at, :now)
WHERE id = :id AND state IN ('pending', 'running', 'retrying')
RETURNING *
"""

UPSERT_WORKER = """
INSERT INTO slotfleet_workers
    (worker_id, hostname, pid, queues, started_at, last_seen, draining, retiring)
VALUES (
    :worker_id, :hostname, :pid, :queues, coalesce(:started_at, :now), :now, :draining, :retiring
)
ON CONFLICT (worker_id) DO UPDATE SET
    hostname = excluded.hostname,
    pid = excluded.pid,
    queues = excluded.queues,
    started_at = coalesce(:started_at, slotfleet_workers.started_at),
    last_seen = excluded.last_seen,
    draining = excluded.draining,
    retiring = excluded.retiring
"""

#: One held lease, by primary key and only while the row carries the worker's token
#: (never by worker id: a restarted process shares it with its dead predecessor).
RENEW_LEASE = """
UPDATE slotfleet_jobs SET lease_expires_at = :now + :lease_seconds
WHERE id = :id AND lease_token = :token AND state = 'running'
RETURNING id
"""

DELETE_WORKER = "DELETE FROM slotfleet_workers WHERE worker_id = :worker_id"

LIVE_WORKERS = """
SELECT * FROM slotfleet_workers WHERE last_seen > :now - :ttl ORDER BY worker_id
"""

RECOVER_EXPIRED = """
UPDATE slotfleet_jobs
SET state = CASE
        WHEN cancel_requested_at IS NOT NULL THEN 'cancelled'
        WHEN attempts >= max_attempts THEN 'failed'
        ELSE 'retrying'
    END,
    scheduled_at = CASE
        WHEN cancel_requested_at IS NULL AND attempts < max_attempts THEN :now
        ELSE scheduled_at
    END,
    completed_at = CASE
        WHEN cancel_requested_at IS NULL AND attempts < max_attempts THEN NULL
        ELSE :now
    END,
    errors = json_insert(errors, '$[#]', json_object(
        'attempt', attempts,
        'error', 'lease expired (worker ' || coalesce(lease_owner, 'unknown')
            || ' stopped heartbeating)',
        'traceback', '',
        'at', :now_iso,
        'worker', lease_owner
    )),
    lease_owner = NULL,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE state = 'running' AND lease_expires_at < :now
RETURNING id
"""

JOB_COUNTS = """
SELECT queue,
    sum(state IN ('pending', 'retrying') AND scheduled_at <= :now) AS ready,
    sum(state IN ('pending', 'retrying') AND scheduled_at > :now) AS scheduled,
    sum(state = 'running') AS running,
    sum(state = 'succeeded') AS succeeded,
    sum(state = 'failed') AS failed,
    sum(state = 'cancelled') AS cancelled
FROM slotfleet_jobs
{where}
GROUP BY queue
"""

GET_RATE_WINDOW = "SELECT window_start, used FROM slotfleet_rate_limits WHERE queue = :queue"

PUT_RATE_WINDOW = """
INSERT INTO slotfleet_rate_limits (queue, window_start, used)
VALUES (:queue, :window_start, :used)
ON CONFLICT (queue) DO UPDATE SET window_start = excluded.window_start, used = excluded.used
"""

#: Up to :limit finished jobs completed :older_than seconds before :now, oldest first
#: (the finished index, named: without statistics SQLite walked the (state, id) index of
#: migration 0004 and sorted every finished job instead).
PURGE = """
DELETE FROM slotfleet_jobs
WHERE id IN (
    SELECT id FROM slotfleet_jobs INDEXED BY slotfleet_jobs_finished
    WHERE state IN ('succeeded', 'failed', 'cancelled') AND completed_at < :now - :older_than
        AND (:queue IS NULL OR queue = :queue)
    ORDER BY completed_at
    LIMIT :limit
)
"""

#: Running jobs of a queue per lease owner (the running-owner partial index).
RUNNING_BY_WORKER = """
SELECT lease_owner, count(*) AS running FROM slotfleet_jobs
WHERE state = 'running' AND queue = :queue AND lease_owner IS NOT NULL
GROUP BY lease_owner
"""

#: Pause a queue, replacing any earlier pause of it (``:resume_at`` may be NULL: until
#: resumed).
PAUSE_QUEUE = """
INSERT INTO slotfleet_queue_pauses (queue, paused_at, resume_at)
VALUES (:queue, :now, :resume_at)
ON CONFLICT (queue) DO UPDATE SET paused_at = excluded.paused_at, resume_at = excluded.resume_at
RETURNING queue, paused_at, resume_at
"""

#: Resume a queue; returns its pause (the caller checks whether it was still in effect).
RESUME_QUEUE = """
DELETE FROM slotfleet_queue_pauses WHERE queue = :queue RETURNING queue, paused_at, resume_at
"""

#: Pauses in effect at :now, for ``queue_stats``.
QUEUE_PAUSES = """
SELECT queue, paused_at, resume_at FROM slotfleet_queue_pauses
WHERE (resume_at IS NULL OR resume_at > :now) AND (:queue IS NULL OR queue = :queue)
"""
