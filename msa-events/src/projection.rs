//! Projections (CQRS read models): a [`Projection`] folds events into tables shaped for
//! reading; a [`Projector`] feeds it the event store's events in their global order, each
//! batch in one transaction with the stored checkpoint, so the read model and the
//! checkpoint never disagree. [`Projector::rebuild`] empties the read model and replays
//! every event: the result equals the model built live.
//!
//! Several instances of a service may run the same projector: the checkpoint's row lock
//! (PostgreSQL) or the write lock (SQLite) lets one apply a batch at a time.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use prometheus::IntGaugeVec;
use sqlx::Row;
use tokio::sync::watch;

use crate::Error;
use crate::event_store::{EventStore, Position, RecordedEvent};
use crate::store::{Backend, Tx, now_ms};
use crate::wake::{self, TaskHandle};

/// The longest projection name.
pub const MAX_NAME: usize = 255;

/// A read model fed from events.
#[async_trait::async_trait]
pub trait Projection: Send + Sync + 'static {
    /// The projection's name, under which its checkpoint is stored: 1 to 255 bytes.
    fn name(&self) -> &str;

    /// Folds `event` into the read model, in `tx` (which also moves the checkpoint).
    /// Events of aggregates the projection does not read are passed too: ignore them.
    async fn apply(&self, tx: &mut Tx, event: &RecordedEvent) -> Result<(), Error>;

    /// Empties the read model, before a rebuild.
    async fn reset(&self, tx: &mut Tx) -> Result<(), Error>;
}

/// `msa_events_projection_lag{projection}`: events recorded after the projection's
/// checkpoint.
static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let opts = prometheus::Opts::new(
        "msa_events_projection_lag",
        "Events recorded after the projection's checkpoint.",
    );
    // Constant names and labels: cannot fail.
    let gauge = IntGaugeVec::new(opts, &["projection"]).expect("valid gauge");
    msa_core::metrics::register_or_existing(gauge)
});

/// Feeds one [`Projection`] from an [`EventStore`].
pub struct Projector<P> {
    events: EventStore,
    projection: Arc<P>,
    batch: u32,
    poll: Duration,
}

impl<P> Clone for Projector<P> {
    fn clone(&self) -> Self {
        Projector {
            events: self.events.clone(),
            projection: self.projection.clone(),
            batch: self.batch,
            poll: self.poll,
        }
    }
}

impl<P: Projection> fmt::Debug for Projector<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projector")
            .field("projection", &self.projection.name())
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl<P: Projection> Projector<P> {
    /// A projector of `events` into `projection`: batches of 500, polling every second
    /// when no commit wakes it (SQLite: every 100 ms).
    pub fn new(events: EventStore, projection: P) -> Result<Projector<P>, Error> {
        let name = projection.name();
        if name.is_empty() || name.len() > MAX_NAME {
            return Err(Error::Invalid(format!(
                "projection name {:?}: 1 to {MAX_NAME} bytes",
                name.chars().take(64).collect::<String>()
            )));
        }
        let poll = match events.store().backend() {
            Backend::Sqlite => Duration::from_millis(100),
            Backend::Postgres => Duration::from_secs(1),
        };
        Ok(Projector {
            events,
            projection: Arc::new(projection),
            batch: 500,
            poll,
        })
    }

    /// Applies at most `batch` events per transaction.
    pub fn batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Looks for events every `poll` when nothing wakes the projector.
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// The stored checkpoint: the last event applied.
    pub async fn checkpoint(&self) -> Result<Position, Error> {
        let row = sqlx::query("SELECT tx, position FROM msa_checkpoints WHERE name = $1")
            .bind(self.projection.name())
            .fetch_optional(self.events.store().pool())
            .await?;
        Ok(match row {
            Some(row) => Position {
                tx: row.try_get(0)?,
                position: row.try_get(1)?,
            },
            None => Position::default(),
        })
    }

    /// Applies one batch of the events after the checkpoint; returns how many.
    pub async fn step(&self) -> Result<usize, Error> {
        // A projector with nothing to do looks without a transaction (on SQLite, without
        // the write lock the checkpoint's takes).
        let after = self.checkpoint().await?;
        let mut connection = self.events.store().pool().acquire().await?;
        if self
            .events
            .read_all(&mut connection, after, 1)
            .await?
            .is_empty()
        {
            return Ok(0);
        }
        drop(connection);
        let name = self.projection.name();
        let mut tx = self.events.store().begin().await?;
        sqlx::query(
            "INSERT INTO msa_checkpoints (name, tx, position, updated_at) VALUES ($1, 0, 0, $2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(now_ms())
        .execute(tx.conn())
        .await?;
        let lock = match self.events.store().backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT tx, position FROM msa_checkpoints WHERE name = $1{lock}"
        ))
        .bind(name)
        .fetch_one(tx.conn())
        .await?;
        let after = Position {
            tx: row.try_get(0)?,
            position: row.try_get(1)?,
        };
        let events = self.events.read_all(tx.conn(), after, self.batch).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            tx.rollback().await?;
            return Ok(0);
        };
        for event in &events {
            self.projection.apply(&mut tx, event).await?;
        }
        sqlx::query(
            "UPDATE msa_checkpoints SET tx = $1, position = $2, updated_at = $3 WHERE name = $4",
        )
        .bind(last.tx)
        .bind(last.position)
        .bind(now_ms())
        .bind(name)
        .execute(tx.conn())
        .await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// Applies batches until none is left; returns how many events.
    pub async fn catch_up(&self) -> Result<usize, Error> {
        let mut applied = 0;
        loop {
            let n = self.step().await?;
            applied += n;
            if n < self.batch as usize {
                self.record_lag().await;
                return Ok(applied);
            }
        }
    }

    /// Empties the read model and its checkpoint in one transaction, then replays every
    /// event into it. Returns how many events were applied.
    pub async fn rebuild(&self) -> Result<usize, Error> {
        let mut tx = self.events.store().begin().await?;
        self.projection.reset(&mut tx).await?;
        sqlx::query("DELETE FROM msa_checkpoints WHERE name = $1")
            .bind(self.projection.name())
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        tracing::info!(
            projection = self.projection.name(),
            "rebuilding the read model"
        );
        self.catch_up().await
    }

    /// Events recorded after the checkpoint's position.
    pub async fn lag(&self) -> Result<u64, Error> {
        let head = self.events.head().await?;
        let at = self.checkpoint().await?;
        let behind: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM msa_events WHERE position > $1 AND position <= $2",
        )
        .bind(at.position)
        .bind(head)
        .fetch_one(self.events.store().pool())
        .await?;
        Ok(u64::try_from(behind).unwrap_or(0))
    }

    /// Where the projection stands: its checkpoint and lag.
    pub async fn status(&self) -> Result<ProjectionStatus, Error> {
        Ok(ProjectionStatus {
            name: self.projection.name().to_owned(),
            checkpoint: self.checkpoint().await?,
            lag: self.lag().await?,
        })
    }

    /// Sets the lag gauge.
    async fn record_lag(&self) {
        if let Ok(lag) = self.lag().await {
            LAG.with_label_values(&[self.projection.name()])
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
        }
    }

    /// Keeps the read model current until `stop` turns true.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let store = self.events.store().clone();
        let what = format!("projection {}", self.projection.name());
        wake::run(
            what,
            store.clone(),
            store.event_commits(),
            "msa_events",
            self.poll,
            stop,
            move || {
                let projector = self.clone();
                async move { projector.catch_up().await.map(|_| false) }
            },
        )
        .await;
    }

    /// Runs the projector on a task until the returned handle is stopped.
    pub fn spawn(self) -> TaskHandle {
        TaskHandle::spawn(|stop| self.run(stop))
    }
}

/// Where a projection stands, as `/actuator/projections` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// The last event applied.
    pub checkpoint: Position,
    /// Events recorded after it.
    pub lag: u64,
}

/// A projector of any projection, for code that drives several (the app's actuator).
pub trait AnyProjector: Send + Sync + 'static {
    /// The projection's name.
    fn name(&self) -> &str;
    /// [`Projector::status`].
    fn status(&self) -> BoxFuture<'_, Result<ProjectionStatus, Error>>;
    /// [`Projector::rebuild`].
    fn rebuild(&self) -> BoxFuture<'_, Result<usize, Error>>;
}

impl<P: Projection> AnyProjector for Projector<P> {
    fn name(&self) -> &str {
        self.projection.name()
    }

    fn status(&self) -> BoxFuture<'_, Result<ProjectionStatus, Error>> {
        Box::pin(Projector::status(self))
    }

    fn rebuild(&self) -> BoxFuture<'_, Result<usize, Error>> {
        Box::pin(Projector::rebuild(self))
    }
}
