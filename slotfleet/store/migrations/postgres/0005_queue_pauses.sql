-- Queues paused in the store (`slotfleet pause`, App.pause): a fetch claims nothing from a
-- queue that has a row here whose resume_at is unset or still ahead of now(), so every
-- worker of every fleet honours it on its next fetch, by the database's clock. Resuming
-- deletes the row; a row whose resume_at has passed pauses nothing (the next pause of the
-- queue replaces it). At most one row per queue, read by primary key.
CREATE TABLE slotfleet_queue_pauses (
    queue text PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    resume_at timestamptz
);
