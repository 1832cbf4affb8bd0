-- msa-events 2: sagas. One row per saga: where it stands (status, step), its data, and
-- which instance drives it (owner, lease_until) so that another resumes it when that
-- one dies. A command step waiting for its reply has waiting_since and a deadline.

CREATE TABLE msa_sagas (
    id            TEXT PRIMARY KEY,
    saga_type     TEXT NOT NULL,
    status        TEXT NOT NULL,
    step          INTEGER NOT NULL,
    data          TEXT NOT NULL,
    error         TEXT,
    waiting_since INTEGER,
    deadline      INTEGER,
    attempts      INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,
    lease_until   INTEGER NOT NULL DEFAULT 0,
    history       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE INDEX msa_sagas_due ON msa_sagas (status, lease_until);
