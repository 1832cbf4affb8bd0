-- msa-events 1: the outbox, the inbox, the event store, snapshots and checkpoints.
-- `tx` records the writing transaction's id, so that readers can tell which rows can no
-- longer be joined by an earlier, still running transaction (see msa_events.projection).

CREATE TABLE msa_outbox (
    id          BIGSERIAL PRIMARY KEY,
    message_id  TEXT   NOT NULL,
    binding     TEXT   NOT NULL,
    message_key TEXT,
    headers     TEXT   NOT NULL,
    payload     BYTEA  NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE FUNCTION msa_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('msa_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER msa_outbox_notify AFTER INSERT ON msa_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION msa_outbox_notify();

CREATE TABLE msa_inbox (
    consumer    TEXT   NOT NULL,
    message_id  TEXT   NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE msa_events (
    position      BIGSERIAL PRIMARY KEY,
    tx            BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    stream_type   TEXT   NOT NULL,
    stream_id     TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    event_id      TEXT   NOT NULL,
    event_type    TEXT   NOT NULL,
    event_version BIGINT NOT NULL,
    payload       TEXT   NOT NULL,
    metadata      TEXT   NOT NULL,
    recorded_at   BIGINT NOT NULL,
    UNIQUE (stream_type, stream_id, version)
);

CREATE INDEX msa_events_tx ON msa_events (tx, position);

CREATE FUNCTION msa_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('msa_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER msa_events_notify AFTER INSERT ON msa_events
    FOR EACH STATEMENT EXECUTE FUNCTION msa_events_notify();

CREATE TABLE msa_snapshots (
    stream_type      TEXT   NOT NULL,
    stream_id        TEXT   NOT NULL,
    version          BIGINT NOT NULL,
    snapshot_version BIGINT NOT NULL,
    state            TEXT   NOT NULL,
    PRIMARY KEY (stream_type, stream_id)
);

CREATE TABLE msa_checkpoints (
    name       TEXT   PRIMARY KEY,
    tx         BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE msa_leases (
    name   TEXT   PRIMARY KEY,
    holder TEXT   NOT NULL,
    until  BIGINT NOT NULL
);
