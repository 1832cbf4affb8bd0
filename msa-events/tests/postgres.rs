//! msa-events on PostgreSQL: the suite (`suite/`) on a new database per test in one
//! throwaway cluster (`initdb` on a free port, removed at the end), with NATS between the
//! processes of the relay-kill test.

#[path = "../../tests/support/nats.rs"]
mod nats_server;
#[path = "../../tests/support/postgres.rs"]
mod postgres;
#[macro_use]
mod suite;

/// A new database on the cluster this binary shares (removed with it).
async fn database() -> (String, ()) {
    (postgres::database().await, ())
}

all_cases!();
