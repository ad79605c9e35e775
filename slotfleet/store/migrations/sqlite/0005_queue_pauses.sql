-- Queues paused in the store (see the PostgreSQL migration). Times are epoch seconds.
CREATE TABLE slotfleet_queue_pauses (
    queue TEXT PRIMARY KEY,
    paused_at REAL NOT NULL,
    resume_at REAL
);
