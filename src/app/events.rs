//! Data and events in an `App`: the service's database (`spring.datasource.*`) with
//! msa-events' tables, the outbox relay publishing through the app's stream, projections
//! and saga orchestrators running with the app, `/actuator/sagas`, and the `db` health
//! component.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use msa_core::actuator::{Actuator, Health};
use msa_core::settings::{Settings, SettingsError};
use msa_events::outbox::Relay;
use msa_events::projection::{AnyProjector, Projection, Projector};
use msa_events::saga::Orchestrator;
use msa_events::{Store, TaskHandle};

use super::{App, Error};

/// Starts a background loop of the app's; stopped before the listener drains.
type Spawn = Box<dyn FnOnce() -> TaskHandle + Send>;

/// What the app was given for msa-events.
#[derive(Default)]
pub(crate) struct Wiring {
    store: Option<Store>,
    loops: Vec<(String, Spawn)>,
    orchestrator: Option<Orchestrator>,
    projectors: Vec<Arc<dyn AnyProjector>>,
}

/// `msa.events`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct EventsKeys {
    relay: RelayKeys,
    inbox: InboxKeys,
    election: ElectionKeys,
}

/// `msa.events.election`: with `endpoints`, the outbox relay and the saga resumer run on
/// one replica of the app at a time, chosen by etcd's election API.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct ElectionKeys {
    /// `etcd://host:port[,host:port...]`.
    endpoints: Option<String>,
    /// How long leadership outlives a leader that stopped renewing it (10 s).
    #[serde(with = "msa_core::duration::option")]
    ttl: Option<Duration>,
}

/// Starts an elected loop: on one replica at a time when the app holds elections.
type Elect = Box<dyn Fn(&str, Arc<dyn Fn() -> TaskHandle + Send + Sync>) -> TaskHandle>;

/// How the app starts loops only one replica should run: campaigning in
/// `msa.events.election`'s etcd, or (without it) at once.
fn election(keys: &ElectionKeys, settings: &Settings, app: &str) -> Result<Elect, Error> {
    let Some(endpoints) = keys.endpoints.clone() else {
        return Ok(Box::new(|_, spawn| spawn()));
    };
    #[cfg(feature = "etcd")]
    {
        let client = msa_core::etcd::LazyClient::new(&endpoints).map_err(|e| {
            Error::Settings(SettingsError {
                key: "msa.events.election.endpoints".into(),
                origin: settings.origin("msa.events.election.endpoints"),
                message: e.to_string(),
            })
        })?;
        let ttl = keys.ttl.unwrap_or(Duration::from_secs(10));
        // Who leads, as etcd shows it: the app, its process and a random tag (replicas
        // of one app on one host differ).
        let value = format!(
            "{app}:{}:{}",
            std::process::id(),
            msa_stream::message::random_id()
        );
        let app = app.to_owned();
        Ok(Box::new(move |work, spawn| {
            let election = format!("{app}/{work}");
            let (client, value) = (client.clone(), value.clone());
            TaskHandle::spawn(move |stop| async move {
                let client = match client.get().await {
                    Ok(client) => client,
                    Err(error) => {
                        tracing::error!(%election, %error, "cannot reach etcd; not campaigning");
                        return;
                    }
                };
                msa_core::etcd::Election::new(client, election, value)
                    .ttl(ttl)
                    .lead(
                        |mut halt| {
                            let running = spawn();
                            async move {
                                let _ = halt.wait_for(|halt| *halt).await;
                                running.stop().await;
                            }
                        },
                        stop,
                    )
                    .await;
            })
        }))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (endpoints, app);
        Err(Error::Settings(SettingsError {
            key: "msa.events.election.endpoints".into(),
            origin: settings.origin("msa.events.election.endpoints"),
            message: "elections need msa's `etcd` feature".into(),
        }))
    }
}

/// `msa.events.inbox`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct InboxKeys {
    /// How long the inbox remembers a handled message (default 7 days); pruned hourly.
    #[serde(with = "msa_core::duration::option")]
    retention: Option<Duration>,
}

/// How long the inbox remembers handled messages unless `msa.events.inbox.retention` says.
const INBOX_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `msa.events.relay`: the outbox relay the app runs.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
struct RelayKeys {
    /// Whether the app runs one (default true).
    enabled: Option<bool>,
    /// Messages per batch (default 100).
    batch_size: Option<u32>,
    /// How often it looks when nothing wakes it.
    #[serde(with = "msa_core::duration::option")]
    poll_interval: Option<Duration>,
}

/// Spring Boot's `spring.datasource.*`, as far as msa-events reads it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct DataSource {
    url: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The database URL the settings name: `spring.datasource.url` (a JDBC URL's `jdbc:` is
/// dropped: `jdbc:postgresql://…` and `jdbc:sqlite:orders.db` work as they are) with
/// `spring.datasource.username`/`password` when the URL has none.
fn database_url(settings: &Settings) -> Result<String, Error> {
    const KEY: &str = "spring.datasource.url";
    let source = settings
        .bind::<Option<DataSource>>("spring.datasource")?
        .unwrap_or_default();
    let invalid = |message: String| {
        Error::Settings(SettingsError {
            key: KEY.into(),
            origin: settings.origin(KEY),
            message,
        })
    };
    let Some(url) = source.url else {
        return Err(invalid(
            "not set: msa-events keeps its tables in the service's database \
             (sqlite://orders.db, postgres://host/orders)"
                .into(),
        ));
    };
    let url = url.strip_prefix("jdbc:").unwrap_or(&url);
    let url = match url.strip_prefix("postgresql:") {
        Some(rest) => format!("postgres:{rest}"),
        None => url.to_owned(),
    };
    if !url.starts_with("postgres:") {
        return Ok(url);
    }
    let mut parsed = reqwest::Url::parse(&url)
        .map_err(|e| invalid(format!("{}: {e}", msa_core::secrets::mask_url(&url))))?;
    if parsed.username().is_empty()
        && let Some(username) = &source.username
    {
        let _ = parsed.set_username(username);
    }
    if parsed.password().is_none()
        && let Some(password) = &source.password
    {
        let _ = parsed.set_password(Some(password));
    }
    Ok(parsed.into())
}

impl App {
    /// The service's database with msa-events' tables (migrated), from
    /// `spring.datasource.url` (`sqlite://orders.db`, `postgres://…`, or a JDBC URL) and
    /// `spring.datasource.username`/`password`; connected once. While the app runs, an
    /// outbox relay publishes what [`Tx::send`](msa_events::Tx::send) wrote through the
    /// app's stream (`msa.events.relay.*`; the in-memory binder unless the app binds a
    /// broker), and `/actuator/health` has a `db` component.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), msa::Error> {
    /// let mut app = msa::App::from_settings();
    /// let store = app.events_store().await?;
    /// let mut tx = store.begin().await?;
    /// tx.send("orders", msa::stream::message::Message::new("placed")).await?;
    /// tx.commit().await?;
    /// app.run().await
    /// # }
    /// ```
    pub async fn events_store(&mut self) -> Result<Store, Error> {
        if let Some(store) = &self.events.store {
            return Ok(store.clone());
        }
        let url = database_url(self.local()?)?;
        let store = Store::connect(&url).await?;
        self.events.store = Some(store.clone());
        if self.stream.is_none() {
            // The relay publishes through the app's stream: one with no bindings of its own.
            self.stream = Some(super::stream::Wiring::empty());
        }
        Ok(store)
    }

    /// Keeps `projector`'s read model current while the app runs. `GET
    /// /actuator/projections` (a management operation) lists each projection's checkpoint
    /// and lag; `POST /actuator/projections/{name}/rebuild` empties its read model and
    /// replays every event into it.
    pub fn projection<P: Projection>(mut self, projector: Projector<P>) -> Self {
        self.events.projectors.push(Arc::new(projector.clone()));
        let name = format!("projection {}", projector.projection().name());
        self.events
            .loops
            .push((name, Box::new(move || projector.spawn())));
        self
    }

    /// Runs `orchestrator`'s sagas with the app: sagas an instance left unfinished are
    /// resumed, and `GET /actuator/sagas` (a management operation) lists the running and
    /// failed ones (`?limit=`, at most 1,000; 100 by default) with counts by status.
    pub fn sagas(mut self, orchestrator: Orchestrator) -> Self {
        self.events.orchestrator = Some(orchestrator);
        self
    }

    /// Starts what the app was given for msa-events; before the stream starts, so that
    /// they stop before it does.
    pub(super) fn start_events(&mut self, settings: &Settings) -> Result<(), Error> {
        let keys = settings
            .bind::<Option<EventsKeys>>("msa.events")?
            .unwrap_or_default();
        let elect = election(&keys.election, settings, &self.name)?;
        let wiring = std::mem::take(&mut self.events);
        let mut loops = wiring.loops;
        if let Some(store) = wiring.store {
            if keys.relay.enabled.unwrap_or(true) {
                let mut relay = Relay::new(store.clone(), self.bridge.clone());
                if let Some(batch) = keys.relay.batch_size {
                    relay = relay.batch(batch);
                }
                if let Some(poll) = keys.relay.poll_interval {
                    relay = relay.poll(poll);
                }
                let relay = elect("outbox-relay", Arc::new(move || relay.clone().spawn()));
                loops.push(("outbox relay".into(), Box::new(move || relay)));
            }
            let retention = keys.inbox.retention.unwrap_or(INBOX_RETENTION);
            let pruned = store.clone();
            loops.push((
                "inbox pruning".into(),
                Box::new(move || {
                    TaskHandle::spawn(move |mut stop| async move {
                        loop {
                            match pruned.prune_inbox(retention).await {
                                Ok(0) => {}
                                Ok(n) => tracing::info!(records = n, "inbox records pruned"),
                                Err(error) => tracing::warn!(%error, "cannot prune the inbox"),
                            }
                            tokio::select! {
                                _ = stop.wait_for(|stop| *stop) => return,
                                () = tokio::time::sleep(Duration::from_secs(3600)) => {}
                            }
                        }
                    })
                }),
            ));
            let checked = store.clone();
            self.actuator = std::mem::replace(&mut self.actuator, Actuator::new(""))
                .health_indicator_in("db", &[], move || {
                    let store = checked.clone();
                    async move {
                        let database = match store.backend() {
                            msa_events::store::Backend::Sqlite => "SQLite",
                            msa_events::store::Backend::Postgres => "PostgreSQL",
                        };
                        let health = match store.check().await {
                            Ok(_) => Health::up(),
                            Err(error) => Health::down().with_detail(
                                "error",
                                msa_core::secrets::mask_url(&error.to_string()),
                            ),
                        };
                        health.with_detail("database", database.to_owned())
                    }
                });
        }
        if !wiring.projectors.is_empty() {
            self.actuator = std::mem::replace(&mut self.actuator, Actuator::new("")).operations(
                axum::Router::new()
                    .route("/actuator/projections", get(projections))
                    .route("/actuator/projections/{name}/rebuild", post(rebuild))
                    .with_state(Arc::new(wiring.projectors)),
            );
        }
        if let Some(orchestrator) = wiring.orchestrator {
            self.actuator = std::mem::replace(&mut self.actuator, Actuator::new("")).operations(
                axum::Router::new().route(
                    "/actuator/sagas",
                    get(sagas_report).with_state(orchestrator.clone()),
                ),
            );
            let resumer = elect("sagas", Arc::new(move || orchestrator.clone().spawn()));
            loops.push(("saga orchestrator".into(), Box::new(move || resumer)));
        }
        for (name, spawn) in loops {
            let handle = spawn();
            self.shutdown.before_drain(name, move || handle.stop());
        }
        Ok(())
    }
}

/// `?limit=` of `/actuator/sagas`.
#[derive(serde::Deserialize)]
struct Limit {
    limit: Option<u32>,
}

/// The most sagas `/actuator/sagas` lists.
const MAX_LISTED: u32 = 1000;

async fn sagas_report(
    State(orchestrator): State<Orchestrator>,
    Query(limit): Query<Limit>,
) -> Response {
    let limit = limit.limit.unwrap_or(100);
    if limit > MAX_LISTED {
        return msa_core::http::error_response(
            http::StatusCode::BAD_REQUEST,
            format!("limit {limit}: at most {MAX_LISTED}"),
        );
    }
    match orchestrator.report(limit).await {
        Ok(report) => Json(report).into_response(),
        // msa-events' errors mask URL credentials.
        Err(error) => msa_core::http::error_response(http::StatusCode::SERVICE_UNAVAILABLE, error),
    }
}

type Projectors = Arc<Vec<Arc<dyn AnyProjector>>>;

/// `GET /actuator/projections`: each projection's checkpoint and lag.
async fn projections(State(projectors): State<Projectors>) -> Response {
    let mut listed = Vec::with_capacity(projectors.len());
    for projector in projectors.iter() {
        match projector.status().await {
            Ok(status) => listed.push(status),
            Err(error) => {
                return msa_core::http::error_response(
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    error,
                );
            }
        }
    }
    Json(serde_json::json!({ "projections": listed })).into_response()
}

/// `POST /actuator/projections/{name}/rebuild`: empties the read model and replays every
/// event into it.
async fn rebuild(
    State(projectors): State<Projectors>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let Some(projector) = projectors.iter().find(|p| p.name() == name) else {
        let known: Vec<&str> = projectors.iter().map(|p| p.name()).collect();
        return msa_core::http::error_response(
            http::StatusCode::NOT_FOUND,
            format!(
                "no projection {:?}; the app has {known:?}",
                name.chars().take(64).collect::<String>()
            ),
        );
    };
    match projector.rebuild().await {
        Ok(applied) => {
            Json(serde_json::json!({ "name": name, "applied": applied })).into_response()
        }
        Err(error) => msa_core::http::error_response(http::StatusCode::SERVICE_UNAVAILABLE, error),
    }
}
