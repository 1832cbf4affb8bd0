-- msa-events 1: the outbox, the inbox, the event store, snapshots and checkpoints.
-- SQLite has one writer at a time, so rows commit in the order of their ids and `tx`
-- stays 0 (PostgreSQL records the writing transaction there).

CREATE TABLE msa_outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT    NOT NULL,
    binding     TEXT    NOT NULL,
    message_key TEXT,
    headers     TEXT    NOT NULL,
    payload     BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE msa_inbox (
    consumer    TEXT    NOT NULL,
    message_id  TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE msa_events (
    position      INTEGER PRIMARY KEY AUTOINCREMENT,
    tx            INTEGER NOT NULL DEFAULT 0,
    stream_type   TEXT    NOT NULL,
    stream_id     TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    event_id      TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    event_version INTEGER NOT NULL,
    payload       TEXT    NOT NULL,
    metadata      TEXT    NOT NULL,
    recorded_at   INTEGER NOT NULL,
    UNIQUE (stream_type, stream_id, version)
);

CREATE TABLE msa_snapshots (
    stream_type      TEXT    NOT NULL,
    stream_id        TEXT    NOT NULL,
    version          INTEGER NOT NULL,
    snapshot_version INTEGER NOT NULL,
    state            TEXT    NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);

CREATE TABLE msa_checkpoints (
    name       TEXT    PRIMARY KEY,
    tx         INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE msa_leases (
    name   TEXT    PRIMARY KEY,
    holder TEXT    NOT NULL,
    until  INTEGER NOT NULL
);
