"""The SQL the PostgreSQL store runs, in one place. psycopg named parameters.

Every verb is one statement (the store's connections are in autocommit mode, so one
statement is one round trip and one transaction). Times come from the server's
``now()``. Wake-ups go out on the ``slotfleet_jobs`` channel with the queue name as
payload: from a statement-level trigger on insert, and from the statements that put
jobs back in a queue (``complete`` for retry/release, ``recover_expired``).
"""

from __future__ import annotations

from slotfleet.models.claimed import CLAIMED_COLUMNS
from slotfleet.store.rows import JOB_COLUMNS

CHANNEL = "slotfleet_jobs"

#: NOTIFY channel of cancel requests on running jobs (payload: the queue name), for
#: ``wait_for_change``. Apart from ``CHANNEL`` so that idle workers never hear them.
CANCEL_CHANNEL = "slotfleet_cancels"

#: Key of the transaction-level advisory lock held while a transactional migration runs
#: (and by every release before online migrations, for its whole run).
MIGRATION_LOCK_KEY = 0x51_07F1_EE7

#: Key of the session-level advisory lock one process holds for its whole migration run
#: (``postgres_migrate``): a second key, so that a process of an older release starting
#: during an online index build waits on nothing the build waits on (see that module).
MIGRATION_RUN_LOCK_KEY = 0x51_07F1_EE8


#: Claimed columns read as JSON text (see ``FETCH``).
_JSON_TEXT = frozenset({"kwargs", "retry", "meta", "errors"})


def _cols(alias: str) -> str:
    return ", ".join(f"{alias}.{name}" for name in JOB_COLUMNS)


MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS slotfleet_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""

LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock(%(key)s)"

APPLIED_VERSIONS = "SELECT version FROM slotfleet_migrations"

RECORD_MIGRATION = "INSERT INTO slotfleet_migrations (version, name) VALUES (%(version)s, %(name)s)"

# A try, not a wait: a backend blocked in pg_advisory_lock holds a snapshot, and an
# online index build waits for every older snapshot, so a waiting opener and the build
# would wait on each other (a deadlock the server breaks by failing one of them).
TRY_RUN_LOCK = "SELECT pg_try_advisory_lock(%(key)s) AS locked"

RUN_UNLOCK = "SELECT pg_advisory_unlock(%(key)s)"

# Who holds the run lock (a bigint key shows as classid = high half, objid = low half).
RUN_LOCK_HOLDER = """
SELECT pid FROM pg_locks
WHERE locktype = 'advisory' AND granted AND objsubid = 1
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid = (%(key)s::bigint >> 32)::oid AND objid = (%(key)s::bigint & 4294967295)::oid
LIMIT 1
"""

# NULL when no index has the name; false for what a failed CREATE INDEX CONCURRENTLY left.
INDEX_VALID = "SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = to_regclass(%(name)s)"

DROP_INDEX_CONCURRENTLY = "DROP INDEX CONCURRENTLY IF EXISTS {name}"

# One statement for the whole batch, which arrives as one JSON array (see
# ``postgres_db.enqueue_document``). ``firsts`` keeps the first job of each unique_key in
# the batch and takes ids from the sequence in input order (so FIFO follows input
# order); the insert skips keys that a non-terminal stored job holds (the partial unique
# index). It returns the inserted rows (``new``) and the stored non-terminal jobs holding
# one of the batch's keys; the store maps them to input positions (by key, and by id
# order for jobs without a key). Matching in SQL instead (joining the inserted rows back
# to ``firsts``) ran as a nested loop, quadratic in the batch size: the planner sees tiny
# estimates for these CTEs.
ENQUEUE = f"""
WITH input AS (
    SELECT *
    FROM ROWS FROM (
        json_to_recordset(%(jobs)s::json) AS (
            queue text, func text, kwargs json, priority smallint, scheduled_at timestamptz,
            max_attempts integer, retry jsonb, timeout float8, unique_key text, meta json
        )
    ) WITH ORDINALITY AS t(
        queue, func, kwargs, priority, scheduled_at, max_attempts, retry, timeout,
        unique_key, meta, ord
    )
),
firsts AS (
    SELECT nextval('slotfleet_jobs_id_seq') AS id, x.*
    FROM (
        SELECT i.*, row_number() OVER (PARTITION BY i.unique_key ORDER BY i.ord) AS nth
        FROM input AS i
        ORDER BY i.ord
    ) AS x
    WHERE x.unique_key IS NULL OR x.nth = 1
),
inserted AS (
    INSERT INTO slotfleet_jobs AS j (
        id, queue, func, kwargs, priority, scheduled_at, max_attempts, retry, timeout,
        unique_key, meta
    )
    SELECT f.id, f.queue, f.func, f.kwargs, f.priority, coalesce(f.scheduled_at, now()),
        f.max_attempts, f.retry, f.timeout, f.unique_key, f.meta
    FROM firsts AS f
    -- Keys in one order for every batch: two batches sharing keys then wait for each
    -- other instead of deadlocking (each insert locks its key's index entry). Ids were
    -- taken in input order above, so FIFO still follows the input.
    ORDER BY f.unique_key, f.ord
    ON CONFLICT (unique_key)
        WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'retrying')
        DO NOTHING
    RETURNING {_cols("j")}
)
SELECT true AS new, ins.* FROM inserted AS ins
UNION ALL
SELECT false, {_cols("s")}
FROM slotfleet_jobs AS s
WHERE s.unique_key IN (SELECT i.unique_key FROM input AS i WHERE i.unique_key IS NOT NULL)
    AND s.state IN ('pending', 'running', 'retrying')
"""

# ENQUEUE for a batch without unique keys (the common case): nothing can conflict, so a
# plain INSERT, without ENQUEUE's window and CTEs. Ids are taken from the sequence in
# input order (the projection runs over the rows in ``ord`` order), so sorting the
# returned rows by id gives input order.
_ENQUEUE_NO_KEYS = """
INSERT INTO slotfleet_jobs (
    id, queue, func, kwargs, priority, scheduled_at, max_attempts, retry, timeout, meta
)
SELECT nextval('slotfleet_jobs_id_seq'), t.queue, t.func, t.kwargs, t.priority,
    coalesce(t.scheduled_at, now()), t.max_attempts, t.retry, t.timeout, t.meta
FROM (
    SELECT *
    FROM ROWS FROM (
        json_to_recordset(%(jobs)s::json) AS (
            queue text, func text, kwargs json, priority smallint, scheduled_at timestamptz,
            max_attempts integer, retry jsonb, timeout float8, meta json
        )
    ) WITH ORDINALITY AS i(
        queue, func, kwargs, priority, scheduled_at, max_attempts, retry, timeout, meta, ord
    )
    ORDER BY i.ord
) AS t
RETURNING {returning}
"""
ENQUEUE_NO_KEYS = _ENQUEUE_NO_KEYS.format(returning=", ".join(JOB_COLUMNS))
#: The same insert for callers that want ids only: no row comes back to be decoded.
ENQUEUE_NO_KEYS_IDS = _ENQUEUE_NO_KEYS.format(returning="id")

# A large batch without unique keys is written with COPY (``PostgresStore.enqueue_ids``):
# in one transaction, this takes the batch's ids from the sequence and the transaction's
# now() (what ``scheduled_at``'s default would be), then COPY writes the rows with those
# ids in input order (FIFO follows input order, as with the INSERT). COPY fires the
# statement-level insert trigger, so idle workers are woken the same way.
COPY_IDS = """
SELECT now() AS now,
    array(SELECT nextval('slotfleet_jobs_id_seq') FROM generate_series(1, %(n)s)) AS ids
"""
COPY_JOBS = (
    "COPY slotfleet_jobs (id, queue, func, priority, max_attempts, retry, timeout, kwargs,"
    " meta, scheduled_at) FROM STDIN"
)

# Used only when a concurrent enqueue committed a key after ENQUEUE took its snapshot.
FIND_ACTIVE_BY_KEYS = """
SELECT * FROM slotfleet_jobs
WHERE unique_key = ANY(%(keys)s::text[]) AND state IN ('pending', 'running', 'retrying')
"""

GET_JOB = "SELECT * FROM slotfleet_jobs WHERE id = %(id)s"

# The subquery walks slotfleet_jobs_fetch in index order and stops at LIMIT; SKIP
# LOCKED lets concurrent fetches pass each other's claimed rows instead of waiting. A
# queue paused in the store yields nothing: the pause check names no job column, so it
# runs once per statement (a one-time filter over a primary-key lookup), not per row.
# It returns the columns a worker reads (``CLAIMED_COLUMNS``, in that order: the store's
# row maker builds a ``ClaimedJob`` straight from them), not result or completed_at. The
# JSON columns come back as text: the claimed job decodes kwargs and meta (``{}`` without
# the parser) and the retry policy and earlier errors only if a failure or the job's
# instance needs them.
FETCH = f"""
UPDATE slotfleet_jobs AS j
SET state = 'running',
    attempts = j.attempts + 1,
    started_at = now(),
    lease_owner = %(worker_id)s,
    lease_token = %(claim)s,
    claimed_by = %(worker_id)s,
    lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
FROM (
    SELECT id FROM slotfleet_jobs
    WHERE queue = %(queue)s AND state IN ('pending', 'retrying') AND scheduled_at <= now()
        AND NOT EXISTS (
            SELECT 1 FROM slotfleet_queue_pauses AS p
            WHERE p.queue = %(queue)s AND (p.resume_at IS NULL OR p.resume_at > now())
        )
    ORDER BY priority DESC, scheduled_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
) AS claimed
WHERE j.id = claimed.id
RETURNING {
    ", ".join(f"j.{name}::text" if name in _JSON_TEXT else f"j.{name}" for name in CLAIMED_COLUMNS)
}
"""

# The ids of the rows a fetch claimed under a token, when its reply could not be read
# (see ``PostgresStore.fetch``): each is then read, or failed, on its own.
CLAIMED_IDS = """
SELECT id FROM slotfleet_jobs
WHERE state = 'running' AND lease_owner = %(worker_id)s AND lease_token = %(claim)s
ORDER BY id
"""

# A claimed row that cannot be read back: failed in place, so it is neither run nor
# claimed again and again.
FAIL_UNREADABLE = """
UPDATE slotfleet_jobs
SET state = 'failed',
    completed_at = now(),
    errors = errors || jsonb_build_array(jsonb_build_object(
        'attempt', attempts, 'error', %(error)s::text, 'traceback', '', 'at', now()
    )),
    lease_owner = NULL,
    lease_token = NULL,
    lease_expires_at = NULL
WHERE id = %(id)s AND state = 'running' AND lease_token = %(claim)s
"""

# A fetch whose reply was lost: its rows go back as they were (the attempt is given back:
# the worker never had them). The owner narrows the search to the running-owner index.
RELEASE_CLAIM = """
WITH released AS (
    UPDATE slotfleet_jobs
    SET state = CASE WHEN cancel_requested_at IS NOT NULL THEN 'cancelled' ELSE 'pending' END,
        attempts = greatest(attempts - 1, 0),
        completed_at = CASE WHEN cancel_requested_at IS NOT NULL THEN now() ELSE NULL END,
        lease_owner = NULL,
        lease_token = NULL,
        lease_expires_at = NULL
    WHERE state = 'running' AND lease_owner = %(worker_id)s AND lease_token = %(claim)s
    RETURNING id, queue, state
),
notified AS (
    SELECT pg_notify('slotfleet_jobs', q.queue) AS sent
    FROM (SELECT DISTINCT queue FROM released WHERE state = 'pending') AS q
)
SELECT r.id, n.sent FROM released AS r CROSS JOIN (SELECT count(*) AS sent FROM notified) AS n
"""

# The batch arrives as one JSON array (``postgres_db.completion_document``). Fenced by
# state and claim token: a late write from a worker that lost the job (a paused process,
# an earlier attempt, a restarted container with the same worker id) matches no row.
# ``notified`` must be referenced by the final SELECT to run.
COMPLETE = """
WITH c AS (
    SELECT *
    FROM json_to_recordset(%(completions)s::json) AS t(
        id bigint, token text, outcome text, result json, error jsonb, retry_delay float8,
        meta json
    )
),
updated AS (
    UPDATE slotfleet_jobs AS j
    SET state = CASE
            WHEN c.outcome IN ('retry', 'released') AND j.cancel_requested_at IS NOT NULL
                THEN 'cancelled'
            WHEN c.outcome = 'retry' THEN 'retrying'
            WHEN c.outcome = 'released' THEN 'pending'
            ELSE c.outcome
        END,
        attempts = CASE
            WHEN c.outcome = 'released' THEN greatest(j.attempts - 1, 0) ELSE j.attempts
        END,
        scheduled_at = CASE
            WHEN c.outcome = 'retry' AND j.cancel_requested_at IS NULL
                THEN now() + make_interval(secs => c.retry_delay)
            ELSE j.scheduled_at
        END,
        result = CASE WHEN c.outcome = 'succeeded' THEN c.result ELSE j.result END,
        -- The meta a job left on its instance (absent: the job never had it).
        meta = coalesce(c.meta, j.meta),
        errors = CASE
            WHEN c.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(c.error)
        END,
        completed_at = CASE
            WHEN c.outcome IN ('retry', 'released') AND j.cancel_requested_at IS NULL THEN NULL
            ELSE now()
        END,
        lease_owner = NULL,
        lease_token = NULL,
        lease_expires_at = NULL
    FROM c
    -- The id list as an array makes the planner find the batch's rows by primary key.
    -- Joining on lease_owner alone let it drive the update from the running-owner index
    -- and, once autovacuum had analyzed a big backlog mid-drain, merge-join ~380k rows
    -- to update ~80 (45 ms instead of 1 ms a batch; drain slowed as the backlog grew).
    WHERE j.id = ANY (ARRAY(SELECT c2.id FROM c AS c2)) AND j.id = c.id
        AND j.state = 'running' AND j.lease_token = c.token
    RETURNING j.id, j.queue, j.state
),
notified AS (
    SELECT pg_notify('slotfleet_jobs', q.queue) AS sent
    FROM (SELECT DISTINCT queue FROM updated WHERE state IN ('pending', 'retrying')) AS q
)
SELECT u.id, n.sent FROM updated AS u CROSS JOIN (SELECT count(*) AS sent FROM notified) AS n
"""

REQUEST_CANCEL = """
WITH changed AS (
    UPDATE slotfleet_jobs
    SET state = CASE WHEN state IN ('pending', 'retrying') THEN 'cancelled' ELSE state END,
        completed_at = CASE
            WHEN state IN ('pending', 'retrying') THEN now() ELSE completed_at
        END,
        cancel_requested_at = coalesce(cancel_requested_at, now())
    WHERE id = %(id)s AND state IN ('pending', 'running', 'retrying')
    RETURNING *
),
notified AS (
    SELECT pg_notify('slotfleet_cancels', c.queue) AS sent FROM changed AS c
    WHERE c.state = 'running'
)
SELECT * FROM changed WHERE (SELECT count(*) FROM notified) >= 0
UNION ALL
SELECT * FROM slotfleet_jobs
WHERE id = %(id)s AND NOT EXISTS (SELECT 1 FROM changed)
"""

HEARTBEAT = """
WITH beat AS (
    INSERT INTO slotfleet_workers AS w
        (worker_id, hostname, pid, queues, started_at, last_seen, draining, retiring)
    VALUES (
        %(worker_id)s, %(hostname)s, %(pid)s, %(queues)s,
        coalesce(%(started_at)s::timestamptz, now()), now(), %(draining)s, %(retiring)s
    )
    ON CONFLICT (worker_id) DO UPDATE SET
        hostname = excluded.hostname,
        pid = excluded.pid,
        queues = excluded.queues,
        started_at = coalesce(%(started_at)s::timestamptz, w.started_at),
        last_seen = now(),
        draining = excluded.draining,
        retiring = excluded.retiring
    RETURNING 1
),
held AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(tokens)s::text[]) AS h(id, token)
),
renewed AS (
    UPDATE slotfleet_jobs AS j
    SET lease_expires_at = now() + make_interval(secs => %(lease_seconds)s)
    FROM held AS h
    -- By primary key, and only where the row still carries the token the worker holds:
    -- never by worker id, which a restarted container shares with the process that died
    -- holding these jobs. The ids as an array built by a subquery (a value the planner
    -- does not inspect) keep it on the primary key; a literal array let it scan the
    -- running-owner index and filter every running row (the plan test).
    WHERE j.id = ANY (ARRAY(SELECT h2.id FROM held AS h2)) AND j.id = h.id
        AND j.lease_token = h.token AND j.state = 'running'
    RETURNING j.id, j.lease_token
)
SELECT r.id, r.lease_token FROM renewed AS r
"""

DELETE_WORKER = "DELETE FROM slotfleet_workers WHERE worker_id = %(worker_id)s"

LIVE_WORKERS = """
SELECT * FROM slotfleet_workers
WHERE last_seen > now() - make_interval(secs => %(ttl)s)
ORDER BY worker_id
"""

# SKIP LOCKED: a job being completed or recovered by someone else right now is theirs;
# FOR UPDATE re-checks the lease on the row's latest version, so a heartbeat that just
# extended it wins.
RECOVER_EXPIRED = """
WITH updated AS (
    UPDATE slotfleet_jobs AS j
    SET state = CASE
            WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
            WHEN j.attempts >= j.max_attempts THEN 'failed'
            ELSE 'retrying'
        END,
        scheduled_at = CASE
            WHEN j.cancel_requested_at IS NULL AND j.attempts < j.max_attempts THEN now()
            ELSE j.scheduled_at
        END,
        completed_at = CASE
            WHEN j.cancel_requested_at IS NULL AND j.attempts < j.max_attempts THEN NULL
            ELSE now()
        END,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts,
            'error', 'lease expired (worker ' || coalesce(j.lease_owner, 'unknown')
                || ' stopped heartbeating)',
            'traceback', '',
            'at', now(),
            'worker', j.lease_owner
        )),
        lease_owner = NULL,
        lease_token = NULL,
        lease_expires_at = NULL
    FROM (
        SELECT id FROM slotfleet_jobs
        WHERE state = 'running' AND lease_expires_at < now()
        FOR UPDATE SKIP LOCKED
    ) AS expired
    WHERE j.id = expired.id
    RETURNING j.id, j.queue, j.state
),
notified AS (
    SELECT pg_notify('slotfleet_jobs', q.queue) AS sent
    FROM (SELECT DISTINCT queue FROM updated WHERE state = 'retrying') AS q
)
SELECT u.id, n.sent FROM updated AS u CROSS JOIN (SELECT count(*) AS sent FROM notified) AS n
"""

#: A queue's jobs counted by what ``QueueStats`` shows (``queue_stats``, ``fleet_snapshot``).
JOB_COUNT_COLUMNS = """
    count(*) FILTER (WHERE state IN ('pending', 'retrying') AND scheduled_at <= now()) AS ready,
    count(*) FILTER (WHERE state IN ('pending', 'retrying') AND scheduled_at > now())
        AS scheduled,
    count(*) FILTER (WHERE state = 'running') AS running,
    count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE state = 'failed') AS failed,
    count(*) FILTER (WHERE state = 'cancelled') AS cancelled"""

JOB_COUNTS = f"""
SELECT queue,{JOB_COUNT_COLUMNS}
FROM slotfleet_jobs
WHERE %(queue)s::text IS NULL OR queue = %(queue)s::text
GROUP BY queue
"""

# One window per queue; ``granted`` records this take so RETURNING can report it (all
# SET expressions read the row as it was before the statement).
TAKE_RATE_TOKENS = """
INSERT INTO slotfleet_rate_limits AS r (queue, window_start, used, granted)
VALUES (%(queue)s, now(), least(%(wanted)s, %(count)s), least(%(wanted)s, %(count)s))
ON CONFLICT (queue) DO UPDATE SET
    window_start = CASE
        WHEN r.window_start + make_interval(secs => %(period)s) <= now() THEN now()
        ELSE r.window_start
    END,
    granted = CASE
        WHEN r.window_start + make_interval(secs => %(period)s) <= now()
            THEN least(%(wanted)s, %(count)s)
        ELSE least(%(wanted)s, greatest(%(count)s - r.used, 0))
    END,
    used = CASE
        WHEN r.window_start + make_interval(secs => %(period)s) <= now()
            THEN least(%(wanted)s, %(count)s)
        ELSE r.used + least(%(wanted)s, greatest(%(count)s - r.used, 0))
    END
RETURNING granted
"""

NOW = "SELECT now() AS now"

#: Up to :limit finished jobs completed :older_than seconds before the server's now(),
#: oldest first (the finished index);
#: rows another transaction holds are left for the next call. The ids as an array make
#: the delete find its rows by primary key: with ``id IN (subquery)`` the planner hash-
#: joined the batch against a sequential scan of the whole table (the plan test).
PURGE = """
DELETE FROM slotfleet_jobs
WHERE id = ANY (ARRAY(
    SELECT id FROM slotfleet_jobs
    WHERE state IN ('succeeded', 'failed', 'cancelled')
        AND completed_at < now() - make_interval(secs => %(older_than)s)
        AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
    ORDER BY completed_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
))
"""

#: Running jobs of a queue per lease owner: the running-owner partial index, no rows
#: decoded (the operator and local fleets read this every tick).
RUNNING_BY_WORKER = """
SELECT lease_owner, count(*) AS running FROM slotfleet_jobs
WHERE state = 'running' AND queue = %(queue)s AND lease_owner IS NOT NULL
GROUP BY lease_owner
"""

#: Pause a queue (replacing any earlier pause of it): until ``resume_at`` when given, else
#: for ``resume_after`` seconds of the server's clock when given, else until resumed.
PAUSE_QUEUE = """
INSERT INTO slotfleet_queue_pauses AS p (queue, paused_at, resume_at)
VALUES (
    %(queue)s,
    now(),
    coalesce(
        %(resume_at)s::timestamptz,
        now() + make_interval(secs => %(resume_after)s::float8)
    )
)
ON CONFLICT (queue) DO UPDATE SET paused_at = excluded.paused_at, resume_at = excluded.resume_at
RETURNING p.queue, p.paused_at, p.resume_at
"""

#: Resume a queue: drop its pause and wake its idle workers at once. Returns the pause
#: only if it was still in effect.
RESUME_QUEUE = """
WITH gone AS (
    DELETE FROM slotfleet_queue_pauses
    WHERE queue = %(queue)s
    RETURNING queue, paused_at, resume_at
),
notified AS (
    SELECT pg_notify('slotfleet_jobs', g.queue) AS sent FROM gone AS g
)
SELECT g.queue, g.paused_at, g.resume_at, (SELECT count(*) FROM notified) AS sent
FROM gone AS g
WHERE g.resume_at IS NULL OR g.resume_at > now()
"""

#: Pauses in effect now, for ``queue_stats``.
QUEUE_PAUSES = """
SELECT queue, paused_at, resume_at FROM slotfleet_queue_pauses
WHERE (resume_at IS NULL OR resume_at > now())
    AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
"""
