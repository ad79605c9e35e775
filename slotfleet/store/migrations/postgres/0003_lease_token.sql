-- The claim token of a running attempt (docs/reliability.md): a fetch writes a fresh one
-- on every row it claims; heartbeats renew, and completions apply, only where the row
-- still carries the token the worker holds. A nullable column without a default: adding
-- it changes only the catalog, so it takes no time on a large table.
ALTER TABLE slotfleet_jobs ADD COLUMN lease_token text;
