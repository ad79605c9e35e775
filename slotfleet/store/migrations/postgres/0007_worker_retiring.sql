-- A worker's confirmation that it stopped claiming because the operator chose its pod for
-- the next scale-down: the mark it saw (the Queue's status.retiring[].since), NULL when it
-- claims as usual. A nullable column without a default: adding it rewrites nothing and
-- holds its lock for an instant; workers that predate it keep writing their heartbeats.
ALTER TABLE slotfleet_workers ADD COLUMN retiring text;
