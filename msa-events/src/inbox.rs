//! Idempotent consumers: a handler's writes and the record that it handled a message commit
//! in one transaction, so a message delivered again (by the broker, or by an outbox relay
//! that died before it recorded what it published) has no second effect.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), msa_events::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let store = msa_events::Store::connect(&format!("sqlite://{}/billing.db", dir.path().display())).await?;
//! sqlx::raw_sql("CREATE TABLE charges (order_id TEXT)").execute(store.pool()).await?;
//! for _delivery in 0..2 {
//!     let mut tx = store.begin().await?;
//!     if tx.receive_once("billing", "message-1").await? {
//!         sqlx::query("INSERT INTO charges VALUES ($1)").bind("o-1").execute(tx.conn()).await?;
//!     }
//!     tx.commit().await?;
//! }
//! let charges: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM charges").fetch_one(store.pool()).await?;
//! assert_eq!(charges, 1);
//! # Ok(()) }
//! ```

use msa_stream::message::{Headers, MESSAGE_ID};

use crate::Error;
use crate::store::{Tx, now_ms};

/// The longest consumer name or message id the inbox records.
pub const MAX_ID: usize = 255;

impl Tx {
    /// Records that `consumer` handles message `message_id` in this transaction: `true` the
    /// first time, when the handler should do its work in this transaction; `false` when
    /// it was handled before (a committed transaction recorded it), when it should do
    /// nothing. Two deliveries of one message at once: the second waits for the first's
    /// transaction and then sees it.
    pub async fn receive_once(&mut self, consumer: &str, message_id: &str) -> Result<bool, Error> {
        for (what, value) in [("consumer", consumer), ("message id", message_id)] {
            if value.is_empty() || value.len() > MAX_ID {
                return Err(Error::Invalid(format!(
                    "inbox {what} {:?}: 1 to {MAX_ID} bytes",
                    value.chars().take(64).collect::<String>()
                )));
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO msa_inbox (consumer, message_id, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, message_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(message_id)
        .bind(now_ms())
        .execute(self.conn())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}

impl crate::Store {
    /// Forgets the inbox records older than `age` (a redelivery after that would act
    /// again: keep them longer than the brokers keep and redeliver messages); returns how
    /// many.
    pub async fn prune_inbox(&self, age: std::time::Duration) -> Result<u64, Error> {
        let cutoff = now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        let pruned = sqlx::query("DELETE FROM msa_inbox WHERE received_at < $1")
            .bind(cutoff)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(pruned)
    }
}

/// The message id in `headers` ([`MESSAGE_ID`], which outbox messages carry), if any.
pub fn message_id(headers: &Headers) -> Option<&str> {
    headers.get(MESSAGE_ID).map(String::as_str)
}
