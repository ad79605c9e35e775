-- Purging finished jobs walks this partial index oldest first (see the PostgreSQL one).
CREATE INDEX slotfleet_jobs_finished ON slotfleet_jobs (completed_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
