-- A worker's confirmation that it stopped claiming for a scale-down (see the PostgreSQL
-- migration).
ALTER TABLE slotfleet_workers ADD COLUMN retiring TEXT;
