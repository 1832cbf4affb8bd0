//! The transactional outbox: a service writes its rows and the messages that announce them
//! in one transaction ([`Tx::send`]), and a [`Relay`] publishes the committed messages
//! through msa-stream, in the order they were written, at least once.
//!
//! One relay publishes at a time: on PostgreSQL the relay holding a transaction-scoped
//! advisory lock takes the next batch (`FOR UPDATE SKIP LOCKED`), woken by `LISTEN/NOTIFY`
//! at each commit; on SQLite the relay holding the `outbox` lease (a row renewed every
//! batch) polls, and a commit in the same process wakes it at once. Several relays may
//! run (one per instance): the others wait their turn, and one takes over when the
//! publishing one dies — on PostgreSQL at once, on SQLite when its lease runs out.
//!
//! A relay that dies between publishing and deleting a batch leaves the batch in the
//! outbox, and it is published again: every message carries its id in the
//! [`MESSAGE_ID`] header, by which consumers recognise it ([`Tx::receive_once`](crate::store::Tx::receive_once)).

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use msa_stream::message::{Envelope, Headers, JSON, MESSAGE_ID, Message, random_id};
use msa_stream::stream::{StreamBridge, encode};
use prometheus::{IntCounter, IntGauge};
use serde::Serialize;
use sqlx::Row;
use tokio::sync::watch;

use crate::Error;
use crate::store::{Backend, Store, Tx, now_ms};
use crate::wake::{self, TaskHandle};

/// The longest binding name an outbox row takes.
pub const MAX_BINDING: usize = 255;

/// The key of the PostgreSQL advisory lock a relay holds while it publishes (`"msa-outb"`).
const RELAY_LOCK: i64 = 0x6d73_612d_6f75_7462;

/// The SQLite lease's name.
const LEASE: &str = "outbox";

impl Tx {
    /// Writes `message` to the outbox, to be sent through binding `binding` once this
    /// transaction commits: encoded as [`Stream::send_message`](msa_stream::stream::Stream::send_message)
    /// encodes (JSON, the current trace context in its headers) with a new
    /// [`MESSAGE_ID`]. Returns the message's id.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), msa_events::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = msa_events::Store::connect(&format!("sqlite://{}/orders.db", dir.path().display())).await?;
    /// use msa_stream::message::Message;
    ///
    /// sqlx::raw_sql("CREATE TABLE orders (id TEXT PRIMARY KEY)").execute(store.pool()).await?;
    /// let mut tx = store.begin().await?;
    /// sqlx::query("INSERT INTO orders (id) VALUES ($1)").bind("o-1").execute(tx.conn()).await?;
    /// tx.send("orders", Message::new(serde_json::json!({"placed": "o-1"})).with_key("o-1")).await?;
    /// tx.commit().await?; // the order and its message, or neither
    /// # Ok(()) }
    /// ```
    pub async fn send<T: Serialize>(
        &mut self,
        binding: &str,
        message: Message<T>,
    ) -> Result<String, Error> {
        let envelope = encode(message, JSON).map_err(|reason| {
            Error::Invalid(format!("cannot encode the message for {binding}: {reason}"))
        })?;
        self.send_envelope(binding, envelope).await
    }

    /// Writes an encoded message to the outbox (its [`MESSAGE_ID`] kept when it has one).
    /// Returns the message's id.
    pub async fn send_envelope(
        &mut self,
        binding: &str,
        mut envelope: Envelope,
    ) -> Result<String, Error> {
        if binding.is_empty() || binding.len() > MAX_BINDING {
            return Err(Error::Invalid(format!(
                "outbox binding {:?}: 1 to {MAX_BINDING} bytes",
                binding.chars().take(64).collect::<String>()
            )));
        }
        let id = envelope
            .headers
            .entry(MESSAGE_ID.to_owned())
            .or_insert_with(random_id)
            .clone();
        let headers = serde_json::to_string(&envelope.headers)
            .map_err(|e| Error::Invalid(format!("outbox headers: {e}")))?;
        sqlx::query(
            "INSERT INTO msa_outbox (message_id, binding, message_key, headers, payload, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(binding)
        .bind(envelope.key.as_deref())
        .bind(headers)
        .bind(envelope.payload.to_vec())
        .bind(now_ms())
        .execute(self.conn())
        .await?;
        self.wrote_outbox();
        Ok(id)
    }
}

/// `msa_events_outbox_published_total`: messages the relays of this process published.
static PUBLISHED: LazyLock<IntCounter> = LazyLock::new(|| {
    // Constant name: cannot fail.
    let counter = IntCounter::new(
        "msa_events_outbox_published_total",
        "Messages the outbox relay of this process published.",
    )
    .expect("valid counter");
    msa_core::metrics::register_or_existing(counter)
});

/// `msa_events_outbox_oldest_seconds`: how long the oldest message of the last batch had
/// waited in the outbox.
static OLDEST: LazyLock<IntGauge> = LazyLock::new(|| {
    // Constant name: cannot fail.
    let gauge = IntGauge::new(
        "msa_events_outbox_oldest_seconds",
        "Age of the oldest message in the outbox relay's last batch, in seconds.",
    )
    .expect("valid gauge");
    msa_core::metrics::register_or_existing(gauge)
});

/// What one turn of a relay did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Turn {
    /// Published this many messages (0: the outbox was empty).
    Published(usize),
    /// Published this many, then set the next one aside (`msa_outbox_failed`): the broker
    /// can never take it.
    SetAside(usize),
    /// Another relay is publishing.
    NotOurs,
}

/// `msa_events_outbox_failed_total`: messages set aside because the broker can never take
/// them.
static FAILED: LazyLock<IntCounter> = LazyLock::new(|| {
    // Constant name: cannot fail.
    let counter = IntCounter::new(
        "msa_events_outbox_failed_total",
        "Outbox messages set aside (msa_outbox_failed) because the broker can never take them.",
    )
    .expect("valid counter");
    msa_core::metrics::register_or_existing(counter)
});

/// Why a message was not published, and whether trying again could help.
struct Failure {
    error: Error,
    /// The broker (or the row itself) can never take it: set it aside.
    permanent: bool,
}

/// Publishes the outbox's messages through msa-stream: see the [module](self).
#[derive(Clone)]
pub struct Relay {
    store: Store,
    bridge: StreamBridge,
    batch: u32,
    poll: Duration,
    lease: Duration,
    holder: String,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("store", &self.store)
            .field("batch", &self.batch)
            .field("poll", &self.poll)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay of `store`'s outbox sending through `bridge` (once its stream runs):
    /// batches of 100, polling every second when no commit wakes it (SQLite: every
    /// 100 ms), a 5 s lease on SQLite.
    pub fn new(store: Store, bridge: StreamBridge) -> Relay {
        let poll = match store.backend() {
            Backend::Sqlite => Duration::from_millis(100),
            Backend::Postgres => Duration::from_secs(1),
        };
        Relay {
            store,
            bridge,
            batch: 100,
            poll,
            lease: Duration::from_secs(5),
            holder: random_id(),
        }
    }

    /// Publishes at most `batch` messages per turn.
    pub fn batch(mut self, batch: u32) -> Relay {
        self.batch = batch.max(1);
        self
    }

    /// Looks for messages every `poll` when nothing wakes the relay (commits in another
    /// process on SQLite; a lost notification on PostgreSQL).
    pub fn poll(mut self, poll: Duration) -> Relay {
        self.poll = poll;
        self
    }

    /// On SQLite, how long the publishing relay's turn lasts unless it renews it: how long
    /// the others wait before taking over from one that died.
    pub fn lease(mut self, lease: Duration) -> Relay {
        self.lease = lease;
        self
    }

    /// Publishes the oldest batch if it is this relay's turn, and deletes what it published.
    pub async fn publish_batch(&self) -> Result<Turn, Error> {
        match self.store.backend() {
            Backend::Postgres => self.publish_postgres().await,
            Backend::Sqlite => self.publish_sqlite().await,
        }
    }

    async fn publish_postgres(&self) -> Result<Turn, Error> {
        let mut tx = self.store.pool().begin().await?;
        // What this transaction records (the batch was published) need not be durable: if
        // a crash loses it, the batch is published again, which consumers tolerate. Not
        // waiting for the flush keeps the relay's turn short. One round trip sets that and
        // takes the turn.
        let ours: bool = sqlx::query(
            "SELECT set_config('synchronous_commit', 'off', true), pg_try_advisory_xact_lock($1)",
        )
        .bind(RELAY_LOCK)
        .fetch_one(&mut *tx)
        .await?
        .get(1);
        if !ours {
            tx.rollback().await?;
            return Ok(Turn::NotOurs);
        }
        let rows = sqlx::query(
            "SELECT id, message_id, binding, message_key, headers, payload, created_at \
             FROM msa_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(self.batch))
        .fetch_all(&mut *tx)
        .await?;
        let (published, failure) = self.publish(&rows).await;
        delete(&mut tx, &rows[..published]).await?;
        let turn = set_aside(&mut tx, &rows, published, failure).await?;
        tx.commit().await?;
        turn
    }

    async fn publish_sqlite(&self) -> Result<Turn, Error> {
        // An idle relay polls: it looks before it takes SQLite's write lock for its lease.
        let waiting: Option<i64> = sqlx::query_scalar("SELECT id FROM msa_outbox LIMIT 1")
            .fetch_optional(self.store.pool())
            .await?;
        if waiting.is_none() {
            return Ok(Turn::Published(0));
        }
        if !self.take_lease().await? {
            return Ok(Turn::NotOurs);
        }
        let rows = sqlx::query(
            "SELECT id, message_id, binding, message_key, headers, payload, created_at \
             FROM msa_outbox ORDER BY id LIMIT $1",
        )
        .bind(i64::from(self.batch))
        .fetch_all(self.store.pool())
        .await?;
        let (published, failure) = self.publish(&rows).await;
        let mut tx = self.store.begin().await?;
        delete(tx.conn(), &rows[..published]).await?;
        let turn = set_aside(tx.conn(), &rows, published, failure).await?;
        tx.commit().await?;
        turn
    }

    /// Takes or renews the SQLite lease: whether it is this relay's turn.
    async fn take_lease(&self) -> Result<bool, Error> {
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX));
        let mut tx = self.store.begin().await?;
        let renewed = sqlx::query(
            "UPDATE msa_leases SET holder = $1, until = $2 \
             WHERE name = $3 AND (holder = $1 OR until < $4)",
        )
        .bind(&self.holder)
        .bind(until)
        .bind(LEASE)
        .bind(now)
        .execute(tx.conn())
        .await?
        .rows_affected();
        let ours = renewed == 1
            || sqlx::query(
                "INSERT INTO msa_leases (name, holder, until) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(LEASE)
            .bind(&self.holder)
            .bind(until)
            .execute(tx.conn())
            .await?
            .rows_affected()
                == 1;
        tx.commit().await?;
        Ok(ours)
    }

    /// Sends `rows` in order; stops at the first failure. Returns how many were sent.
    async fn publish(&self, rows: &[sqlx::any::AnyRow]) -> (usize, Option<Failure>) {
        if let Some(first) = rows.first() {
            let created: i64 = first.get(6);
            OLDEST.set(now_ms().saturating_sub(created) / 1000);
        }
        for (sent, row) in rows.iter().enumerate() {
            let (binding, envelope) = match envelope_of(row) {
                Ok(message) => message,
                Err(error) => {
                    let permanent = true; // the row itself does not decode
                    return (sent, Some(Failure { error, permanent }));
                }
            };
            if let Err(error) = self.bridge.send_envelope(&binding, envelope).await {
                use msa_stream::binder::BinderError;
                use msa_stream::stream::StreamError;
                let permanent = matches!(
                    error,
                    StreamError::Binder(BinderError::Invalid(_))
                        | StreamError::Encode { .. }
                        | StreamError::Settings(_)
                );
                let error = error.into();
                return (sent, Some(Failure { error, permanent }));
            }
            PUBLISHED.inc();
        }
        (rows.len(), None)
    }

    /// Runs the relay until `stop` turns true: a batch whenever it is woken, a growing
    /// delay after failures.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let store = self.store.clone();
        let full = self.batch as usize;
        wake::run(
            "the outbox relay".to_owned(),
            store.clone(),
            store.outbox_commits(),
            "msa_outbox",
            self.poll,
            stop,
            move || {
                let relay = self.clone();
                async move {
                    let turn = relay.publish_batch().await?;
                    Ok(matches!(turn, Turn::Published(n) if n == full)
                        || matches!(turn, Turn::SetAside(_)))
                }
            },
        )
        .await;
    }

    /// Runs the relay on a task until the returned handle is stopped.
    pub fn spawn(self) -> TaskHandle {
        TaskHandle::spawn(|stop| self.run(stop))
    }
}

/// An outbox row as its binding and the envelope it was written from.
fn envelope_of(row: &sqlx::any::AnyRow) -> Result<(String, Envelope), Error> {
    let binding: String = row.try_get(2)?;
    let key: Option<String> = row.try_get(3)?;
    let headers: String = row.try_get(4)?;
    let payload: Vec<u8> = row.try_get(5)?;
    let headers: Headers = serde_json::from_str(&headers)
        .map_err(|e| Error::Invalid(format!("outbox row headers: {e}")))?;
    Ok((
        binding,
        Envelope {
            payload: Bytes::from(payload),
            headers,
            key,
            partition: None,
        },
    ))
}

/// After `published` of `rows` went out: the turn, having moved the next row to
/// `msa_outbox_failed` if the broker can never take it.
async fn set_aside(
    connection: &mut sqlx::AnyConnection,
    rows: &[sqlx::any::AnyRow],
    published: usize,
    failure: Option<Failure>,
) -> Result<Result<Turn, Error>, Error> {
    let Some(failure) = failure else {
        return Ok(Ok(Turn::Published(published)));
    };
    let Some(row) = rows.get(published).filter(|_| failure.permanent) else {
        return Ok(Err(failure.error));
    };
    let id: i64 = row.try_get(0)?;
    let reason = msa_core::secrets::mask_url(&failure.error.to_string());
    sqlx::query(
        "INSERT INTO msa_outbox_failed (id, message_id, binding, message_key, headers, payload, \
         created_at, error, failed_at) SELECT id, message_id, binding, message_key, headers, \
         payload, created_at, $1, $2 FROM msa_outbox WHERE id = $3",
    )
    .bind(&reason)
    .bind(now_ms())
    .bind(id)
    .execute(&mut *connection)
    .await?;
    sqlx::query("DELETE FROM msa_outbox WHERE id = $1")
        .bind(id)
        .execute(&mut *connection)
        .await?;
    FAILED.inc();
    tracing::error!(
        id,
        error = %reason,
        "an outbox message the broker can never take was set aside in msa_outbox_failed"
    );
    Ok(Ok(Turn::SetAside(published)))
}

/// Deletes the published `rows`.
async fn delete(
    connection: &mut sqlx::AnyConnection,
    rows: &[sqlx::any::AnyRow],
) -> Result<(), Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row.try_get::<i64, _>(0).map(|id| id.to_string()))
        .collect::<Result<_, _>>()?;
    // Ids are integers the database gave: nothing to escape.
    // `query`, not `raw_sql`: rustc cannot tell that `raw_sql`'s future is `Send` on a
    // borrowed connection.
    sqlx::query(&format!(
        "DELETE FROM msa_outbox WHERE id IN ({})",
        ids.join(",")
    ))
    .execute(&mut *connection)
    .await?;
    Ok(())
}
