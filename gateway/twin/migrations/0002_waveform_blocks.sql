-- Schema version 2: full-disclosure waveforms, stored as compressed, sealed blocks.
-- Version 1 files (numerics, events, alarms only) gain the two tables; nothing is rewritten.
--
-- seq (both tables) is the store's own index of the first sample within its admission's
-- stream, counted by the store (TwinStore._store_seq), NOT the device's sequence number:
-- a device's sequence restarts when it reconnects, the store's index never repeats within
-- an admission's stream and keeps a forward jump of the device's sequence as a gap.

CREATE TABLE waveform_blocks (
    id           INTEGER PRIMARY KEY,
    admission_id INTEGER NOT NULL REFERENCES admissions (id),
    stream_id    INTEGER NOT NULL REFERENCES streams (id),
    seq          INTEGER NOT NULL,         -- the store's index of the first sample (see above)
    t            REAL NOT NULL,            -- UTC seconds of the first sample
    t_end        REAL NOT NULL,            -- UTC seconds just after the last sample
    sample_rate  REAL NOT NULL,            -- Hz, for indexing; readers use the sealed header's
    samples      INTEGER NOT NULL,
    sealed       BLOB NOT NULL,            -- JSON header + compressed integer samples
    UNIQUE (admission_id, stream_id, seq)
);
CREATE INDEX waveform_blocks_by_time ON waveform_blocks (admission_id, t);

-- Chunks committed within the batch latency but not yet gathered into a block; folded
-- into waveform_blocks (and deleted) in the transaction that writes the block.
CREATE TABLE waveform_staging (
    id           INTEGER PRIMARY KEY,
    admission_id INTEGER NOT NULL REFERENCES admissions (id),
    stream_id    INTEGER NOT NULL REFERENCES streams (id),
    seq          INTEGER NOT NULL,
    t            REAL NOT NULL,
    sample_rate  REAL NOT NULL,
    samples      INTEGER NOT NULL,
    sealed       BLOB NOT NULL
);
CREATE INDEX waveform_staging_by_stream ON waveform_staging (admission_id, stream_id, seq);

