-- What the dashboard reads (see the PostgreSQL migration of the same number).
ALTER TABLE slotfleet_jobs ADD COLUMN claimed_by TEXT;

-- Newest-first listings filtered by state, queue or function: one backwards range scan per
-- state, merged, stopped after LIMIT rows.
CREATE INDEX slotfleet_jobs_state_id ON slotfleet_jobs (state, id);
CREATE INDEX slotfleet_jobs_queue_state_id ON slotfleet_jobs (queue, state, id);
CREATE INDEX slotfleet_jobs_func_state_id ON slotfleet_jobs (func, state, id);
DROP INDEX slotfleet_jobs_queue_id;
