-- slotfleet schema for SQLite. Timestamps are UTC epoch seconds (REAL); JSON is TEXT.

CREATE TABLE slotfleet_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused
    queue TEXT NOT NULL,
    func TEXT NOT NULL,
    kwargs TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 0,
    scheduled_at REAL NOT NULL,
    max_attempts INTEGER NOT NULL DEFAULT 1,
    retry TEXT NOT NULL DEFAULT '{}',
    timeout REAL,
    unique_key TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'retrying', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    errors TEXT NOT NULL DEFAULT '[]',
    lease_owner TEXT,
    lease_expires_at REAL,
    cancel_requested_at REAL,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL
);

-- Fetch walks this index in fetch order: queue, then priority high first, then FIFO.
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
    worker_id TEXT PRIMARY KEY,
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    queues TEXT NOT NULL DEFAULT '{}',  -- {"queue": [total, busy]}
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    draining INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE slotfleet_rate_limits (
    queue TEXT PRIMARY KEY,
    window_start REAL NOT NULL,
    used INTEGER NOT NULL
);
