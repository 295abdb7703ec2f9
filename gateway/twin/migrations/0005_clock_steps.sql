-- Schema version 5: where the system clock was stepped.
-- Records keep the UTC time the system gave when they arrived; a row here says that rows
-- committed after numerics row `seq_at` carry a wall clock `step` seconds off the one
-- before it (an NTP correction, a wrong RTC at boot). No patient data.

CREATE TABLE clock_steps (
    id          INTEGER PRIMARY KEY,
    seq_at      INTEGER NOT NULL,          -- highest numerics id committed before the step
    wall_before REAL NOT NULL,             -- UTC seconds the old clock would read now
    wall_after  REAL NOT NULL,             -- UTC seconds the stepped clock reads
    step_s      REAL NOT NULL              -- wall_after - wall_before (negative: back)
);
