//! msa-events: data that each service owns, and the events that carry it between services.
//!
//! Each microservice keeps its own database; a business transaction that spans services is
//! a chain of local transactions joined by messages. msa-events keeps that chain honest,
//! over SQLite (embedded, the default) or PostgreSQL with one API ([`Store`]):
//!
//! - **Transactional outbox** ([`outbox`]): [`Tx::send`] writes a message in the same
//!   transaction as the rows it announces; a [`Relay`](outbox::Relay) publishes committed
//!   messages through msa-stream in order, at least once (PostgreSQL wakes it with
//!   `LISTEN/NOTIFY`).
//! - **Idempotent consumers** ([`inbox`]): [`Tx::receive_once`] records a message's id in
//!   the transaction that handles it, so a redelivery has no second effect.
//! - **Event sourcing** ([`Aggregate`], [`EventStore`]): commands produce events, events
//!   fold into state; appends at an expected version (a concurrent append is an
//!   [`Error::Conflict`]), snapshots, upcasting, publication through the outbox.
//! - **Projections** ([`projection`]): read models fed from the event store with a stored
//!   checkpoint, rebuilt on demand.
//! - **Sagas** ([`saga`]): an orchestrator runs named steps (calls or commands with
//!   replies) with compensations, persisting after each step, resuming after a crash.
//!
//! # Examples
//!
//! ```
//! use msa_events::{EventStore, Store};
//! # use msa_events::Aggregate;
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Default, Serialize, Deserialize)] struct Counter { n: u64 }
//! # #[derive(Serialize, Deserialize)] #[serde(tag = "type")] enum Event { Added { by: u64 } }
//! # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
//! # impl Aggregate for Counter {
//! #     const TYPE: &'static str = "counter";
//! #     type Command = u64; type Event = Event; type Error = Never;
//! #     fn handle(&self, by: u64) -> Result<Vec<Event>, Never> { Ok(vec![Event::Added { by }]) }
//! #     fn apply(&mut self, Event::Added { by }: &Event) { self.n += by }
//! # }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Store::connect(&format!("sqlite://{}/counters.db", dir.path().display())).await?;
//! let events = EventStore::new(store).snapshot_every(100).publish("counter", "counters");
//! let counter = events.execute::<Counter>("c-1", 5).await?;
//! assert_eq!((counter.state.n, counter.version), (5, 1));
//! // Appending at a version someone else has moved past is a conflict.
//! let stale = events.append::<Counter>("c-1", 0, &[Event::Added { by: 1 }]).await;
//! assert!(matches!(stale, Err(msa_events::Error::Conflict { .. })));
//! # Ok(()) }
//! ```

pub mod aggregate;
pub mod event_store;
pub mod inbox;
pub mod outbox;
pub mod projection;
pub mod saga;
pub mod store;
mod wake;

/// The sqlx msa-events runs on, for the service's own queries in a [`Tx`]
/// (`sqlx::query("…").execute(tx.conn())`) without a second copy of it.
pub use sqlx;

pub use aggregate::Aggregate;
pub use event_store::EventStore;
pub use store::{Store, Tx};
pub use wake::TaskHandle;

/// What went wrong in msa-events.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database failed.
    #[error("database: {}", msa_core::secrets::mask_url(&.0.to_string()))]
    Database(#[from] sqlx::Error),
    /// Another writer appended to the aggregate first.
    #[error("concurrent append to {stream}: expected version {expected}{}", match .actual {
        Some(actual) => format!(", found {actual}"),
        None => String::new(),
    })]
    Conflict {
        /// `<aggregate type>/<id>`.
        stream: String,
        /// The version the append expected.
        expected: u64,
        /// The version found, when known.
        actual: Option<u64>,
    },
    /// Sending through msa-stream failed.
    #[error(transparent)]
    Stream(#[from] msa_stream::stream::StreamError),
    /// A name, setting or stored value msa-events cannot take.
    #[error("{0}")]
    Invalid(String),
}
