-- msa-events 3: outbox messages the broker can never take (a destination name it refuses)
-- are set aside here with the reason, so that they do not hold up the messages after them.

CREATE TABLE msa_outbox_failed (
    id          BIGINT PRIMARY KEY,
    message_id  TEXT NOT NULL,
    binding     TEXT NOT NULL,
    message_key TEXT,
    headers     TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    error       TEXT NOT NULL,
    failed_at   BIGINT NOT NULL
);
