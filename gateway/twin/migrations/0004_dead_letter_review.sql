-- Schema version 4: a technician reviews dead letters.
-- A refused message stays "open" (and the sync_dead_letters alarm with it) until a
-- technician has looked at it and either replayed it (queued again for the destination,
-- e.g. after the receiver's configuration was fixed) or dismissed it (it will never be
-- accepted). Who did which, and when, is kept with the dead letter and in the audit log.

ALTER TABLE dead_letters ADD COLUMN resolved REAL;   -- UTC seconds; NULL while open
ALTER TABLE dead_letters ADD COLUMN resolution TEXT; -- "replayed by <user>" / "dismissed by <user>"
CREATE INDEX dead_letters_open ON dead_letters (destination, id) WHERE resolved IS NULL;
