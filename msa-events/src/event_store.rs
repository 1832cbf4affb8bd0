//! The event store: each aggregate's events in order, appended at an expected version (a
//! [`Error::Conflict`] when another writer got there first), with snapshots every N events,
//! upcasting of events written at older schema versions, and publication of new events
//! through the outbox in the same transaction.
//!
//! Every event also has a global [`Position`], the order in which projections read them
//! ([`read_all`](EventStore::read_all)).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use msa_stream::message::{JSON, MESSAGE_ID, Message, random_id};
use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::Error;
use crate::aggregate::Aggregate;
use crate::store::{Backend, Store, Tx, now_ms};

/// The header naming an event's aggregate type.
pub const AGGREGATE_TYPE: &str = "msa-aggregate-type";
/// The header naming an event's aggregate id.
pub const AGGREGATE_ID: &str = "msa-aggregate-id";
/// The header naming an event's type.
pub const EVENT_TYPE: &str = "msa-event-type";
/// The header holding an event's version in its aggregate (1 for the first).
pub const SEQUENCE: &str = "msa-sequence";

/// The longest aggregate id the store takes.
pub const MAX_ID: usize = 255;

/// Where an event stands in the order projections read: the writing transaction (on
/// PostgreSQL; 0 on SQLite), then the position given at insert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Position {
    /// The writing transaction's id (PostgreSQL), 0 on SQLite.
    pub tx: i64,
    /// The event's position, increasing with each insert.
    pub position: i64,
}

/// An event as stored, its payload upcast to the newest schema there is an upcaster for.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEvent {
    /// Its place in the global order.
    pub position: Position,
    /// The aggregate's type.
    pub stream_type: String,
    /// The aggregate's id.
    pub stream_id: String,
    /// Its version in the aggregate (1 for the first event).
    pub version: u64,
    /// Its unique id (also the published message's id).
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// The schema version of `payload` (after upcasting).
    pub event_version: u32,
    /// The event, as JSON.
    pub payload: Value,
    /// Metadata written with it (the trace context, the command's origin).
    pub metadata: Value,
    /// When it was recorded, in milliseconds since the Unix epoch.
    pub recorded_at: i64,
}

/// An aggregate as loaded: its state and the version the next append expects.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded<A> {
    /// The state.
    pub state: A,
    /// The number of events folded into it (0: none yet).
    pub version: u64,
    /// Whether a snapshot saved folding its older events.
    pub from_snapshot: bool,
}

/// Why [`EventStore::execute`] did not append.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Rejected(E),
    /// The store failed, or other writers kept getting there first.
    #[error(transparent)]
    Store(#[from] Error),
}

/// Turns the JSON of an event written at one schema version into the next version's.
pub type Upcaster = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// The event store on a [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct EventStore {
    store: Store,
    snapshot_every: u64,
    /// By (aggregate type, event type, from version).
    upcasters: Arc<HashMap<(String, String, u32), Upcaster>>,
    /// The binding each aggregate type's events are published through.
    publish: Arc<HashMap<String, String>>,
    conflict_retries: u32,
}

impl fmt::Debug for EventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStore")
            .field("store", &self.store)
            .field("snapshot_every", &self.snapshot_every)
            .field("upcasters", &self.upcasters.len())
            .field("publish", &self.publish)
            .finish_non_exhaustive()
    }
}

impl EventStore {
    /// The event store in `store`: no snapshots, no upcasters, nothing published, three
    /// retries of a command that meets a concurrent append.
    pub fn new(store: Store) -> EventStore {
        EventStore {
            store,
            snapshot_every: 0,
            upcasters: Arc::default(),
            publish: Arc::default(),
            conflict_retries: 3,
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Saves an aggregate's state every `every` events ([`execute`](Self::execute)), so
    /// that loading folds at most `every - 1` events after it; 0: never.
    pub fn snapshot_every(mut self, every: u64) -> EventStore {
        self.snapshot_every = every;
        self
    }

    /// How many times [`execute`](Self::execute) reloads and retries a command after a
    /// concurrent append.
    pub fn conflict_retries(mut self, retries: u32) -> EventStore {
        self.conflict_retries = retries;
        self
    }

    /// Upcasts `aggregate_type`'s `event_type` events written at schema `from_version`
    /// to `from_version + 1` with `upcast`. Chains: an event is upcast as long as there is
    /// an upcaster from its version.
    pub fn upcast(
        mut self,
        aggregate_type: &str,
        event_type: &str,
        from_version: u32,
        upcast: impl Fn(Value) -> Value + Send + Sync + 'static,
    ) -> EventStore {
        Arc::make_mut(&mut self.upcasters).insert(
            (
                aggregate_type.to_owned(),
                event_type.to_owned(),
                from_version,
            ),
            Arc::new(upcast),
        );
        self
    }

    /// Publishes `aggregate_type`'s new events through binding `binding`, by the outbox in
    /// the appending transaction: keyed by the aggregate id, with the
    /// [`AGGREGATE_TYPE`], [`AGGREGATE_ID`], [`EVENT_TYPE`] and [`SEQUENCE`] headers and
    /// the event id as the [`MESSAGE_ID`].
    pub fn publish(mut self, aggregate_type: &str, binding: &str) -> EventStore {
        Arc::make_mut(&mut self.publish).insert(aggregate_type.to_owned(), binding.to_owned());
        self
    }

    /// Loads aggregate `id`: its latest snapshot (of this `SNAPSHOT_VERSION`), then the
    /// events after it.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, Error> {
        let mut connection = self.store.pool().acquire().await?;
        self.load_on::<A>(&mut connection, id, true).await
    }

    /// Loads aggregate `id` by folding every one of its events, ignoring snapshots.
    pub async fn replay<A: Aggregate>(&self, id: &str) -> Result<Loaded<A>, Error> {
        let mut connection = self.store.pool().acquire().await?;
        self.load_on::<A>(&mut connection, id, false).await
    }

    async fn load_on<A: Aggregate>(
        &self,
        connection: &mut sqlx::AnyConnection,
        id: &str,
        snapshots: bool,
    ) -> Result<Loaded<A>, Error> {
        check_id(A::TYPE, id)?;
        let mut loaded = Loaded {
            state: A::default(),
            version: 0,
            from_snapshot: false,
        };
        if snapshots {
            let snapshot = sqlx::query(
                "SELECT version, state FROM msa_snapshots \
                 WHERE stream_type = $1 AND stream_id = $2 AND snapshot_version = $3",
            )
            .bind(A::TYPE)
            .bind(id)
            .bind(i64::from(A::SNAPSHOT_VERSION))
            .fetch_optional(&mut *connection)
            .await?;
            if let Some(row) = snapshot {
                let version: i64 = row.try_get(0)?;
                let state: String = row.try_get(1)?;
                match serde_json::from_str(&state) {
                    Ok(state) => {
                        loaded.state = state;
                        loaded.version = u64::try_from(version).unwrap_or(0);
                        loaded.from_snapshot = true;
                    }
                    Err(error) => tracing::warn!(
                        aggregate = A::TYPE,
                        id,
                        %error,
                        "a snapshot does not decode; folding the events instead"
                    ),
                }
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM msa_events \
             WHERE stream_type = $1 AND stream_id = $2 AND version > $3 ORDER BY version"
        ))
        .bind(A::TYPE)
        .bind(id)
        .bind(i64::try_from(loaded.version).unwrap_or(i64::MAX))
        .fetch_all(&mut *connection)
        .await?;
        for row in &rows {
            let recorded = self.recorded(row)?;
            let event: A::Event = decode_event(&recorded)?;
            loaded.state.apply(&event);
            loaded.version = recorded.version;
        }
        Ok(loaded)
    }

    /// Appends `events` to aggregate `id` if it is at `expected_version` (0: new), in a
    /// transaction of its own; returns the new version. [`Error::Conflict`] when another
    /// append got there first.
    pub async fn append<A: Aggregate>(
        &self,
        id: &str,
        expected_version: u64,
        events: &[A::Event],
    ) -> Result<u64, Error> {
        let mut tx = self.store.begin().await?;
        let version = self
            .append_in::<A>(&mut tx, id, expected_version, events, &Value::Null)
            .await?;
        tx.commit()
            .await
            .map_err(|e| self.conflict_of::<A>(e, id, expected_version))?;
        Ok(version)
    }

    /// [`append`](Self::append) in the caller's transaction, with `metadata` recorded on
    /// each event, so that the service's own rows commit with the events.
    pub async fn append_in<A: Aggregate>(
        &self,
        tx: &mut Tx,
        id: &str,
        expected_version: u64,
        events: &[A::Event],
        metadata: &Value,
    ) -> Result<u64, Error> {
        check_id(A::TYPE, id)?;
        let current: Option<i64> = sqlx::query(
            "SELECT MAX(version) FROM msa_events WHERE stream_type = $1 AND stream_id = $2",
        )
        .bind(A::TYPE)
        .bind(id)
        .fetch_one(tx.conn())
        .await?
        .try_get(0)?;
        let current = current.map_or(0, |v| u64::try_from(v).unwrap_or(0));
        if current != expected_version {
            return Err(Error::Conflict {
                stream: format!("{}/{id}", A::TYPE),
                expected: expected_version,
                actual: Some(current),
            });
        }
        let metadata = serde_json::to_string(metadata)
            .map_err(|e| Error::Invalid(format!("event metadata: {e}")))?;
        let mut version = expected_version;
        for event in events {
            version += 1;
            let payload = serde_json::to_value(event)
                .map_err(|e| Error::Invalid(format!("cannot encode a {} event: {e}", A::TYPE)))?;
            let event_type = A::event_type(&payload);
            let event_id = random_id();
            let inserted = sqlx::query(
                "INSERT INTO msa_events (stream_type, stream_id, version, event_id, event_type, \
                 event_version, payload, metadata, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(A::TYPE)
            .bind(id)
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .bind(&event_id)
            .bind(&event_type)
            .bind(i64::from(A::EVENT_VERSION))
            .bind(payload.to_string())
            .bind(&metadata)
            .bind(now_ms())
            .execute(tx.conn())
            .await;
            if let Err(error) = inserted {
                return Err(self.conflict_of::<A>(error.into(), id, expected_version));
            }
            if let Some(binding) = self.publish.get(A::TYPE) {
                let message = Message::new(payload)
                    .with_key(id)
                    .with_header(MESSAGE_ID, event_id)
                    .with_header(AGGREGATE_TYPE, A::TYPE)
                    .with_header(AGGREGATE_ID, id)
                    .with_header(EVENT_TYPE, event_type)
                    .with_header(SEQUENCE, version.to_string());
                let envelope = msa_stream::stream::encode(message, JSON)
                    .map_err(|reason| Error::Invalid(format!("event message: {reason}")))?;
                tx.send_envelope(binding, envelope).await?;
            }
        }
        tx.wrote_events();
        Ok(version)
    }

    /// A unique violation on `(stream_type, stream_id, version)` is a concurrent append:
    /// [`Error::Conflict`] with the version that append left.
    fn conflict_of<A: Aggregate>(&self, error: Error, id: &str, expected: u64) -> Error {
        match &error {
            Error::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                Error::Conflict {
                    stream: format!("{}/{id}", A::TYPE),
                    expected,
                    actual: None,
                }
            }
            _ => error,
        }
    }

    /// Runs `command` against aggregate `id`: loads it, asks it, appends the events it
    /// produced at the version it was loaded at (publishing them where configured), saves
    /// a snapshot when one is due, and returns the new state and version. On a concurrent
    /// append, reloads and asks again, up to the configured retries.
    pub async fn execute<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Loaded<A>, ExecuteError<A::Error>> {
        let mut attempt = 0;
        loop {
            let result = self.try_execute::<A>(id, command.clone()).await;
            match result {
                Err(ExecuteError::Store(Error::Conflict { .. }))
                    if attempt < self.conflict_retries =>
                {
                    attempt += 1;
                    // A random pause, growing with each attempt, so that racing writers
                    // spread out rather than collide again.
                    let pause = fastrand::u64(0..=u64::from(attempt) * 5);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                }
                other => return other,
            }
        }
    }

    async fn try_execute<A: Aggregate>(
        &self,
        id: &str,
        command: A::Command,
    ) -> Result<Loaded<A>, ExecuteError<A::Error>> {
        let mut tx = self.store.begin().await?;
        let mut loaded = self.load_on::<A>(tx.conn(), id, true).await?;
        let events = loaded
            .state
            .handle(command)
            .map_err(ExecuteError::Rejected)?;
        if events.is_empty() {
            tx.rollback().await?;
            return Ok(loaded);
        }
        let before = loaded.version;
        let version = self
            .append_in::<A>(&mut tx, id, before, &events, &Value::Null)
            .await?;
        for event in &events {
            loaded.state.apply(event);
        }
        loaded.version = version;
        if self.snapshot_every > 0 && version / self.snapshot_every > before / self.snapshot_every {
            save_snapshot(&mut tx, id, &loaded).await?;
        }
        tx.commit()
            .await
            .map_err(|e| self.conflict_of::<A>(e, id, before))?;
        Ok(loaded)
    }

    /// Saves aggregate `id`'s current state as its snapshot.
    pub async fn snapshot<A: Aggregate>(&self, id: &str) -> Result<u64, Error> {
        let mut tx = self.store.begin().await?;
        let loaded = self.load_on::<A>(tx.conn(), id, true).await?;
        save_snapshot(&mut tx, id, &loaded).await?;
        tx.commit().await?;
        Ok(loaded.version)
    }

    /// Aggregate `id`'s events, oldest first.
    pub async fn read_stream(
        &self,
        stream_type: &str,
        id: &str,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM msa_events WHERE stream_type = $1 AND stream_id = $2 \
             ORDER BY version"
        ))
        .bind(stream_type)
        .bind(id)
        .fetch_all(self.store.pool())
        .await?;
        rows.iter().map(|row| self.recorded(row)).collect()
    }

    /// At most `limit` events after `after` in the global order, on `connection`. On
    /// PostgreSQL only events of transactions older than every running one: an event
    /// committed later can never land before what this returned.
    pub async fn read_all(
        &self,
        connection: &mut sqlx::AnyConnection,
        after: Position,
        limit: u32,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let visible = match self.store.backend() {
            Backend::Postgres => "AND tx < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            Backend::Sqlite => "",
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM msa_events WHERE (tx > $1 OR (tx = $1 AND position > $2)) \
             {visible} ORDER BY tx, position LIMIT $3"
        ))
        .bind(after.tx)
        .bind(after.position)
        .bind(i64::from(limit))
        .fetch_all(connection)
        .await?;
        rows.iter().map(|row| self.recorded(row)).collect()
    }

    /// The newest position, for lag.
    pub(crate) async fn head(&self) -> Result<i64, Error> {
        let head: Option<i64> = sqlx::query("SELECT MAX(position) FROM msa_events")
            .fetch_one(self.store.pool())
            .await?
            .try_get(0)?;
        Ok(head.unwrap_or(0))
    }

    fn recorded(&self, row: &AnyRow) -> Result<RecordedEvent, Error> {
        let stream_type: String = row.try_get(2)?;
        let event_type: String = row.try_get(6)?;
        let mut event_version = u32::try_from(row.try_get::<i64, _>(7)?).unwrap_or(0);
        let payload: String = row.try_get(8)?;
        let metadata: String = row.try_get(9)?;
        let mut payload: Value = serde_json::from_str(&payload)
            .map_err(|e| Error::Invalid(format!("a stored {stream_type} event: {e}")))?;
        let mut key = (stream_type, event_type, event_version);
        while let Some(upcast) = self.upcasters.get(&key) {
            payload = upcast(payload);
            event_version += 1;
            key.2 = event_version;
        }
        let (stream_type, event_type, _) = key;
        Ok(RecordedEvent {
            position: Position {
                tx: row.try_get(1)?,
                position: row.try_get(0)?,
            },
            stream_type,
            stream_id: row.try_get(3)?,
            version: u64::try_from(row.try_get::<i64, _>(4)?).unwrap_or(0),
            event_id: row.try_get(5)?,
            event_type,
            event_version,
            payload,
            metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            recorded_at: row.try_get(10)?,
        })
    }
}

/// The columns [`EventStore::recorded`] reads, in its order.
const COLUMNS: &str = "position, tx, stream_type, stream_id, version, event_id, event_type, \
                       event_version, payload, metadata, recorded_at";

/// A recorded event as the aggregate's event type.
fn decode_event<E: serde::de::DeserializeOwned>(recorded: &RecordedEvent) -> Result<E, Error> {
    E::deserialize(&recorded.payload).map_err(|e| {
        Error::Invalid(format!(
            "{} event {} of {}/{} (schema {}) does not decode: {e}",
            recorded.event_type,
            recorded.version,
            recorded.stream_type,
            recorded.stream_id,
            recorded.event_version
        ))
    })
}

async fn save_snapshot<A: Aggregate>(
    tx: &mut Tx,
    id: &str,
    loaded: &Loaded<A>,
) -> Result<(), Error> {
    let state = serde_json::to_string(&loaded.state)
        .map_err(|e| Error::Invalid(format!("cannot encode a {} snapshot: {e}", A::TYPE)))?;
    sqlx::query(
        "INSERT INTO msa_snapshots (stream_type, stream_id, version, snapshot_version, state) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream_type, stream_id) DO UPDATE SET \
         version = excluded.version, snapshot_version = excluded.snapshot_version, \
         state = excluded.state",
    )
    .bind(A::TYPE)
    .bind(id)
    .bind(i64::try_from(loaded.version).unwrap_or(i64::MAX))
    .bind(i64::from(A::SNAPSHOT_VERSION))
    .bind(state)
    .execute(tx.conn())
    .await?;
    Ok(())
}

fn check_id(aggregate: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ID {
        return Err(Error::Invalid(format!(
            "{aggregate} id {:?}: 1 to {MAX_ID} bytes",
            id.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}
