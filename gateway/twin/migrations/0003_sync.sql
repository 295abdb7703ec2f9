-- Schema version 3: sync dead letters.
-- A message a destination refused outright (HL7 AE/AR, HTTP 4xx) leaves the queue so it
-- cannot block what follows; it is kept here, with the reason, for a technician to look at.
-- The outbox row itself is marked done (acked) in the same transaction; retention treats a
-- dead-lettered row like a delivered one, and the dead letter keeps the row id for replay.

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    outbox_id   INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    row_id      INTEGER NOT NULL,
    t           REAL NOT NULL,             -- UTC seconds it was refused
    reason      TEXT NOT NULL              -- the destination's answer; never patient data
);
CREATE INDEX dead_letters_by_destination ON dead_letters (destination, id);
