-- Purging finished jobs (Store.purge, `slotfleet purge`, a Queue's retentionSeconds)
-- walks this partial index oldest first, so a purge batch costs the same however many
-- finished jobs are kept. Built inside the migration's transaction: on a large existing
-- table it holds writes for the time the build takes.
CREATE INDEX slotfleet_jobs_finished ON slotfleet_jobs (completed_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
