//! The database every part of msa-events keeps its tables in: a [`Store`] over SQLite (the
//! embedded default) or PostgreSQL, the same API on both, with the crate's schema migrated
//! on [`Store::connect`].
//!
//! A service writes its own rows and msa-events' rows (outgoing messages, the record of a
//! handled message, events) in one [`Tx`], so that both commit or neither does.

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row, Transaction};
use tokio::sync::watch;

use crate::Error;

/// Which database a [`Store`] is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite: one file, one writer at a time.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A migration the crate ships: its version, what it makes, and its SQL per backend.
struct Migration {
    version: i64,
    description: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

/// The crate's schema, oldest first. A released migration never changes: a new one follows.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "outbox, inbox, events, snapshots, checkpoints, leases",
        sqlite: include_str!("../migrations/sqlite/0001_outbox_inbox_events.sql"),
        postgres: include_str!("../migrations/postgres/0001_outbox_inbox_events.sql"),
    },
    Migration {
        version: 2,
        description: "sagas",
        sqlite: include_str!("../migrations/sqlite/0002_sagas.sql"),
        postgres: include_str!("../migrations/postgres/0002_sagas.sql"),
    },
    Migration {
        version: 3,
        description: "outbox messages set aside",
        sqlite: include_str!("../migrations/sqlite/0003_outbox_failed.sql"),
        postgres: include_str!("../migrations/postgres/0003_outbox_failed.sql"),
    },
    Migration {
        version: 4,
        description: "the trace a saga was started in",
        sqlite: include_str!("../migrations/sqlite/0004_saga_trace.sql"),
        postgres: include_str!("../migrations/postgres/0004_saga_trace.sql"),
    },
];

/// The key of the PostgreSQL advisory lock that serialises migrations (`"msa-evts"`).
const MIGRATION_LOCK: i64 = 0x6d73_612d_6576_7473;

/// How long a connection waits for SQLite's write lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pool of connections to the service's database, with msa-events' tables in it. Cheap
/// to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    /// The URL, kept for PostgreSQL's `LISTEN` connections; never shown (it may hold a
    /// password).
    url: String,
    /// Counts the transactions in this process that committed outbox rows.
    outbox: watch::Sender<u64>,
    /// Counts the transactions in this process that committed events.
    events: watch::Sender<u64>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("url", &msa_core::secrets::mask_url(&self.inner.url))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to `url` and migrates msa-events' tables to this version's schema.
    ///
    /// `sqlite://path/to/file.db` (created when missing; WAL journal) or
    /// `postgres://user:password@host:port/database`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), msa_events::Error> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = msa_events::Store::connect(&format!("sqlite://{}/orders.db", dir.path().display())).await?;
    /// assert_eq!(store.backend(), msa_events::store::Backend::Sqlite);
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Store, Error> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let (backend, url) = if url.starts_with("sqlite:") {
            let url = if url.contains("mode=") {
                url.to_owned()
            } else if url.contains('?') {
                format!("{url}&mode=rwc")
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(Error::Invalid(format!(
                "database URL {}: msa-events stores in sqlite:// or postgres:// databases",
                msa_core::secrets::mask_url(url)
            )));
        };
        let options: AnyConnectOptions = url.parse().map_err(|e: sqlx::Error| {
            Error::Invalid(format!(
                "database URL {}: {}",
                msa_core::secrets::mask_url(&url),
                msa_core::secrets::mask_url(&e.to_string())
            ))
        })?;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer: more connections only queue on its lock.
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        connection
                            .execute(
                                format!(
                                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                     PRAGMA busy_timeout = {}",
                                    SQLITE_BUSY_TIMEOUT.as_millis()
                                )
                                .as_str(),
                            )
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store {
            inner: Arc::new(Inner {
                pool,
                backend,
                url,
                outbox: watch::Sender::new(0),
                events: watch::Sender::new(0),
            }),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Whether the database answers, for `/actuator/health`.
    pub async fn check(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.inner.pool).await?;
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The connection pool, for the service's own queries outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.inner.pool
    }

    /// Begins a transaction for the service's rows and msa-events' rows together. On
    /// SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so that transactions
    /// queue for it rather than fail when two upgrade from reading to writing.
    pub async fn begin(&self) -> Result<Tx, Error> {
        let tx = match self.inner.backend {
            Backend::Sqlite => self.inner.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.inner.pool.begin().await?,
        };
        Ok(Tx {
            tx,
            store: self.clone(),
            wrote_outbox: false,
            wrote_events: false,
        })
    }

    /// Migrates msa-events' tables: the migrations this version ships that the database
    /// has not had, each in its own transaction, recorded in `msa_events_migrations`.
    /// Several processes may start at once: one migrates, the others wait for it.
    async fn migrate(&self) -> Result<(), Error> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS msa_events_migrations (\
             version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.inner.pool)
        .await?;
        for migration in MIGRATIONS {
            let mut tx = self.begin().await?;
            if self.inner.backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(MIGRATION_LOCK)
                    .execute(tx.conn())
                    .await?;
            }
            let applied: Option<i64> =
                sqlx::query("SELECT version FROM msa_events_migrations WHERE version = $1")
                    .bind(migration.version)
                    .fetch_optional(tx.conn())
                    .await?
                    .map(|row| row.get(0));
            if applied.is_some() {
                tx.rollback().await?;
                continue;
            }
            let sql = match self.inner.backend {
                Backend::Sqlite => migration.sqlite,
                Backend::Postgres => migration.postgres,
            };
            sqlx::raw_sql(sql).execute(tx.conn()).await.map_err(|e| {
                Error::Invalid(format!(
                    "msa-events migration {} ({}): {e}",
                    migration.version, migration.description
                ))
            })?;
            sqlx::query(
                "INSERT INTO msa_events_migrations (version, description, applied_at) \
                 VALUES ($1, $2, $3)",
            )
            .bind(migration.version)
            .bind(migration.description)
            .bind(now_ms())
            .execute(tx.conn())
            .await?;
            tx.commit().await?;
            tracing::info!(
                version = migration.version,
                description = migration.description,
                "msa-events migrated the database"
            );
        }
        Ok(())
    }

    /// Changes when a transaction in this process commits outbox rows.
    pub(crate) fn outbox_commits(&self) -> watch::Receiver<u64> {
        self.inner.outbox.subscribe()
    }

    /// Changes when a transaction in this process commits events.
    pub(crate) fn event_commits(&self) -> watch::Receiver<u64> {
        self.inner.events.subscribe()
    }

    /// A `LISTEN` connection on `channel` (PostgreSQL), which the outbox and event triggers
    /// notify at commit.
    pub(crate) async fn listen(
        &self,
        channel: &str,
    ) -> Result<Option<sqlx::postgres::PgListener>, Error> {
        if self.inner.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.inner.url).await?;
        listener.listen(channel).await?;
        Ok(Some(listener))
    }
}

/// A transaction on a [`Store`]: the service's queries run on [`conn`](Self::conn), and
/// msa-events' writes ([`send`](Self::send) to the outbox,
/// [`receive_once`](Self::receive_once) in the inbox, event appends) take the `Tx`.
/// Dropped without [`commit`](Self::commit), it rolls back.
pub struct Tx {
    tx: Transaction<'static, Any>,
    store: Store,
    wrote_outbox: bool,
    wrote_events: bool,
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("backend", &self.store.inner.backend)
            .finish_non_exhaustive()
    }
}

impl Tx {
    /// The transaction's connection, for the service's own queries:
    /// `sqlx::query("…").execute(tx.conn())`.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// The store this transaction is on.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Commits, then wakes this process's relays and projections if the transaction
    /// wrote what they wait for.
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        if self.wrote_outbox {
            self.store
                .inner
                .outbox
                .send_modify(|n| *n = n.wrapping_add(1));
        }
        if self.wrote_events {
            self.store
                .inner
                .events
                .send_modify(|n| *n = n.wrapping_add(1));
        }
        Ok(())
    }

    /// Rolls back.
    pub async fn rollback(self) -> Result<(), Error> {
        Ok(self.tx.rollback().await?)
    }

    pub(crate) fn wrote_outbox(&mut self) {
        self.wrote_outbox = true;
    }

    pub(crate) fn wrote_events(&mut self) {
        self.wrote_events = true;
    }
}

/// Milliseconds since the Unix epoch, as msa-events records times.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
