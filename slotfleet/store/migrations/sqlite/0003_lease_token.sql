-- The claim token of a running attempt (see the PostgreSQL migration and
-- docs/reliability.md).
ALTER TABLE slotfleet_jobs ADD COLUMN lease_token TEXT;
