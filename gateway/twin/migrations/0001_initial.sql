-- Schema version 1 of the twin store.
-- Index columns (time, stream, sequence, sync state) are in clear; every value, waveform
-- sample, patient identifier and free text is in a "sealed" column: AES-256-GCM under the
-- admission's data key, bound to its row by associated data (see gateway/twin/crypto.py).

CREATE TABLE admissions (
    id          INTEGER PRIMARY KEY,
    bed_id      TEXT NOT NULL,
    started     REAL NOT NULL,            -- UTC seconds
    ended       REAL,                     -- UTC seconds; NULL while the patient is in the bed
    kek_id      TEXT,                     -- which key-encryption key wraps the data key
    wrapped_key BLOB,                     -- NULL once shredded: the data is then unrecoverable
    patient     BLOB,                     -- sealed JSON {name, mrn, birth_date}, or NULL
    shredded    REAL                      -- UTC seconds the data key was destroyed
);
CREATE UNIQUE INDEX admissions_one_open_per_bed ON admissions (bed_id) WHERE ended IS NULL;

-- "<device id>/<MDC reference id>": names a signal, never a patient.
CREATE TABLE streams (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE numerics (
    id           INTEGER PRIMARY KEY,
    admission_id INTEGER NOT NULL REFERENCES admissions (id),
    stream_id    INTEGER NOT NULL REFERENCES streams (id),
    seq          INTEGER NOT NULL,
    t            REAL NOT NULL,
    sealed       BLOB NOT NULL,            -- JSON {value, unit, status, device_time}
    UNIQUE (admission_id, stream_id, seq)
);
CREATE INDEX numerics_by_time ON numerics (admission_id, t);

CREATE TABLE device_events (
    id           INTEGER PRIMARY KEY,
    admission_id INTEGER NOT NULL REFERENCES admissions (id),
    stream_id    INTEGER NOT NULL REFERENCES streams (id),
    seq          INTEGER NOT NULL,
    t            REAL NOT NULL,
    sealed       BLOB NOT NULL,            -- JSON {kind, condition, active, detail, ...}
    UNIQUE (admission_id, stream_id, seq)
);
CREATE INDEX device_events_by_time ON device_events (admission_id, t);

CREATE TABLE alarm_log (
    id           INTEGER PRIMARY KEY,
    admission_id INTEGER NOT NULL REFERENCES admissions (id),
    stream_id    INTEGER NOT NULL REFERENCES streams (id),
    seq          INTEGER NOT NULL,
    t            REAL NOT NULL,
    sealed       BLOB NOT NULL,            -- JSON alarm state change: condition, value, limit, who
    UNIQUE (admission_id, stream_id, seq)
);
CREATE INDEX alarm_log_by_time ON alarm_log (admission_id, t);

-- Who did what to whom, for accountability. Never holds patient data in clear: bed ids,
-- actions and technician-facing details only.
CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    t      REAL NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    bed_id TEXT,
    detail TEXT NOT NULL DEFAULT ''
);

-- One row per destination-to-be of each stored row, written in the same transaction.
CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY,
    destination TEXT NOT NULL,
    kind        TEXT NOT NULL,            -- alarm, event, numeric, waveform, audit
    row_id      INTEGER NOT NULL,
    priority    INTEGER NOT NULL,         -- 0 first: alarms, then events, numerics, waveforms
    created     REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    acked       REAL                      -- UTC seconds the destination confirmed; NULL = pending
);
CREATE INDEX outbox_pending ON outbox (destination, priority, id) WHERE acked IS NULL;
CREATE INDEX outbox_by_row ON outbox (kind, row_id) WHERE acked IS NULL;
