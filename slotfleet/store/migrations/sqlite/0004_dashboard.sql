-- What the dashboard reads (see the PostgreSQL migration of the same number, which says
-- why running jobs are left out of the listing indexes).
ALTER TABLE slotfleet_jobs ADD COLUMN claimed_by TEXT;

CREATE INDEX slotfleet_jobs_state_id ON slotfleet_jobs (state, id) WHERE state <> 'running';
CREATE INDEX slotfleet_jobs_queue_state_id ON slotfleet_jobs (queue, state, id)
    WHERE state <> 'running';
CREATE INDEX slotfleet_jobs_func_state_id ON slotfleet_jobs (func, state, id)
    WHERE state <> 'running';
DROP INDEX slotfleet_jobs_queue_id;
