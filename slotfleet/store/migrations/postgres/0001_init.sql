-- slotfleet schema for PostgreSQL. All times come from the server (now()).

CREATE TABLE slotfleet_jobs (
    id bigserial PRIMARY KEY,
    queue text NOT NULL,
    func text NOT NULL,
    -- kwargs, meta and result are json, not jsonb: json keeps the text a client wrote,
    -- so floats such as 1e16, 1e300 or -0.0 come back exactly (jsonb turns them into
    -- decimals). Nothing queries inside them.
    kwargs json NOT NULL DEFAULT '{}',
    priority smallint NOT NULL DEFAULT 0,
    scheduled_at timestamptz NOT NULL DEFAULT now(),
    max_attempts integer NOT NULL DEFAULT 1,
    retry jsonb NOT NULL DEFAULT '{}',
    timeout double precision,
    unique_key text,
    meta json NOT NULL DEFAULT '{}',
    state text NOT NULL DEFAULT 'pending'
        CONSTRAINT slotfleet_jobs_state_check
        CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'retrying', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    result json,
    errors jsonb NOT NULL DEFAULT '[]',
    lease_owner text,
    lease_expires_at timestamptz,
    cancel_requested_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    completed_at timestamptz
);

-- Fetch walks this partial index in its own order (queue, priority DESC, scheduled_at,
-- id) and stops after LIMIT rows: no sort, and only ready-state rows are in it, so the
-- cost does not grow with the backlog of finished jobs. Because the order matches the
-- ORDER BY and the predicate matches the WHERE, the planner picks it even when the
-- table's statistics say "empty" (a queue table is often analyzed while empty);
-- tests/contract checks this with EXPLAIN on 100k rows right after such an ANALYZE.
CREATE INDEX slotfleet_jobs_fetch ON slotfleet_jobs (queue, priority DESC, scheduled_at, id)
    WHERE state IN ('pending', 'retrying');

-- unique_key dedup holds only while a job is not terminal.
CREATE UNIQUE INDEX slotfleet_jobs_unique_key ON slotfleet_jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'retrying');

-- Heartbeats (by owner), lease recovery and cancel requests only look at running jobs.
CREATE INDEX slotfleet_jobs_running_owner ON slotfleet_jobs (lease_owner)
    WHERE state = 'running';
CREATE INDEX slotfleet_jobs_running_lease ON slotfleet_jobs (lease_expires_at)
    WHERE state = 'running';

CREATE INDEX slotfleet_jobs_queue_id ON slotfleet_jobs (queue, id);

CREATE TABLE slotfleet_workers (
    worker_id text PRIMARY KEY,
    hostname text NOT NULL,
    pid integer NOT NULL,
    queues jsonb NOT NULL DEFAULT '{}',  -- {"queue": [total, busy]}
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    draining boolean NOT NULL DEFAULT false
);

CREATE TABLE slotfleet_rate_limits (
    queue text PRIMARY KEY,
    window_start timestamptz NOT NULL,
    used integer NOT NULL,
    granted integer NOT NULL  -- what the last take was given (returned by that statement)
);

-- One NOTIFY per INSERT statement and queue, for jobs ready now; payload: the queue.
CREATE FUNCTION slotfleet_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('slotfleet_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM slotfleet_new_jobs WHERE scheduled_at <= now()) AS q;
    RETURN NULL;
END;
$$;

CREATE TRIGGER slotfleet_jobs_notify_inserted
    AFTER INSERT ON slotfleet_jobs
    REFERENCING NEW TABLE AS slotfleet_new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION slotfleet_notify_inserted();
