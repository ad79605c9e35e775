-- What the dashboard reads (slotfleet dashboard, slotfleet top): which worker ran a job, and
-- job listings filtered by queue, state or function that stay fast on millions of rows.
--
-- claimed_by: the worker that claimed the latest attempt. lease_owner is cleared when an
-- attempt ends; this is kept, so a finished job still says where it ran.
ALTER TABLE slotfleet_jobs ADD COLUMN claimed_by text;

-- Listings are newest first (ORDER BY id DESC) with keyset paging (id < last seen). One
-- index per filter, each ending in (state, id): a filtered page is one backwards range scan
-- per state, merged and stopped after LIMIT rows, however rare the matches are among the
-- rows (a few failed jobs among a million succeeded ones).
--
-- Running jobs are left out: every claim would otherwise move its row in all three indexes
-- twice (in, then out again at completion), for the one state that is never numerous (at
-- most one job per slot of the fleet). A listing of running jobs reads them all through
-- slotfleet_jobs_running_owner and sorts them.
CREATE INDEX slotfleet_jobs_state_id ON slotfleet_jobs (state, id) WHERE state <> 'running';
CREATE INDEX slotfleet_jobs_queue_state_id ON slotfleet_jobs (queue, state, id)
    WHERE state <> 'running';
CREATE INDEX slotfleet_jobs_func_state_id ON slotfleet_jobs (func, state, id)
    WHERE state <> 'running';
-- (queue, state, id) serves what (queue, id) served (with the running-owner index for
-- running jobs): one index fewer to write.
DROP INDEX slotfleet_jobs_queue_id;
-- Built inside the migration's transaction: on a large existing table it holds writes for
-- the time the three builds take (a few seconds per million rows on 2 cores).
