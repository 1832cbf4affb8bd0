//! msa-events on SQLite (the embedded default): the suite (`suite/`) on a new database
//! file per test, with NATS between the processes of the relay-kill test.

#[path = "../../tests/support/nats.rs"]
mod nats_server;
#[macro_use]
mod suite;

/// A new database file, in a directory removed when the guard drops.
async fn database() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (format!("sqlite://{}/events.db", dir.path().display()), dir)
}

all_cases!();
