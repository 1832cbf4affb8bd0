//! Spring Boot-style actuator endpoints as an axum [`Router`] mounted at `/actuator`.
//!
//! | endpoint | what it answers |
//! |---|---|
//! | `GET /actuator` | links to the endpoints below |
//! | `GET /actuator/health` | aggregate status and every component; 503 when `DOWN` or `OUT_OF_SERVICE` |
//! | `GET /actuator/health/liveness` | the liveness group (restart me when failing) |
//! | `GET /actuator/health/readiness` | the readiness group (send me no traffic when failing) |
//! | `GET /actuator/health/{component}` | one component |
//! | `GET /actuator/info` | name, version, build and git facts, custom entries |
//! | `GET /actuator/prometheus` | every metric in the Prometheus text format, process metrics included |
//! | `GET /actuator/metrics`, `/actuator/metrics/{name}?tag=k:v` | the same metrics under Micrometer's dotted names, with measurements and tags |
//! | `GET /actuator/loggers`, `/actuator/loggers/{name}` | log levels, configured and effective |
//! | `POST /actuator/loggers/{name}` | `{"configuredLevel": "DEBUG"}` changes a level at once (`null` inherits) |
//! | `GET /actuator/env`, `/actuator/env/{key}` | the settings by source, secrets masked |
//! | `POST /actuator/refresh` | runs the refresh hooks; answers the keys that changed |
//!
//! `loggers`, `env` and `refresh` are management operations: a management token or a
//! loopback listener ([`Actuator::management`]).
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::get};
//! use msa_core::actuator::{Actuator, Health};
//!
//! let app: Router = Router::new()
//!     .route("/hello", get(|| async { "hello" }))
//!     .merge(
//!         Actuator::new("orders")
//!             .version("1.0.0")
//!             .info("team", "checkout")
//!             .health_indicator("db", || async { Health::up() })
//!             .router(),
//!     );
//! ```

mod env;
mod health;
mod info;
mod loggers;
pub mod metrics;
mod refresh;

pub use self::health::{Availability, Group, Health, HealthIndicator, HealthReport, Status};
pub use self::info::BuildInfo;
pub use self::refresh::{RefreshFailure, RefreshHook, Refresher};
pub use crate::BoxError;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use self::health::Registered;

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one health check may take before it counts as `DOWN`.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the actuator endpoints; see the [module docs](self).
pub struct Actuator {
    name: String,
    version: Option<String>,
    build: Option<BuildInfo>,
    info: serde_json::Map<String, serde_json::Value>,
    indicators: Vec<Registered>,
    refresh: Vec<(String, Arc<dyn RefreshHook>)>,
    availability: Availability,
    health_timeout: Duration,
    management: Option<crate::management::Management>,
    loggers: Option<crate::telemetry::Loggers>,
    env: Option<EnvSource>,
    operations: Router,
}

/// What `/actuator/env` lists, made on each request.
type EnvSource = Arc<dyn Fn() -> crate::settings::Settings + Send + Sync>;

impl fmt::Debug for Actuator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Actuator")
            .field("name", &self.name)
            .field("version", &self.version)
            .field(
                "indicators",
                &self.indicators.iter().map(|r| &r.name).collect::<Vec<_>>(),
            )
            .field(
                "refresh",
                &self.refresh.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("availability", &self.availability)
            .finish_non_exhaustive()
    }
}

impl Actuator {
    /// Endpoints for the application `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Actuator {
            name: name.into(),
            version: None,
            build: None,
            info: serde_json::Map::new(),
            indicators: Vec::new(),
            refresh: Vec::new(),
            availability: Availability::default(),
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
            management: None,
            loggers: None,
            env: None,
            operations: Router::new(),
        }
    }

    /// The log levels `/actuator/loggers` shows and changes (default: those of the
    /// process's subscriber, when [`Telemetry::init`](crate::telemetry::Telemetry::init)
    /// installed it).
    pub fn loggers(mut self, loggers: crate::telemetry::Loggers) -> Self {
        self.loggers = Some(loggers);
        self
    }

    /// The settings `/actuator/env` lists (secrets masked); without them it answers 404.
    pub fn env(self, settings: crate::settings::Settings) -> Self {
        self.env_with(move || settings.clone())
    }

    /// As [`env`](Self::env), with the settings made on each request by `settings`: for
    /// sources that change while the app runs (properties set through a bus).
    pub fn env_with(
        mut self,
        settings: impl Fn() -> crate::settings::Settings + Send + Sync + 'static,
    ) -> Self {
        self.env = Some(Arc::new(settings));
        self
    }

    /// The application's version, shown in `info.app.version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Build and git facts, shown in `info.build` and `info.git`; see
    /// [`build_info!`](crate::build_info).
    pub fn build_info(mut self, build: BuildInfo) -> Self {
        self.build = Some(build);
        self
    }

    /// A custom `info` entry. A value that does not serialize is shown as its error.
    pub fn info(mut self, key: impl Into<String>, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value)
            .unwrap_or_else(|e| serde_json::Value::String(format!("<unserializable: {e}>")));
        self.info.insert(key.into(), value);
        self
    }

    /// Adds a health indicator to the overall health and the readiness group.
    pub fn health_indicator(
        self,
        name: impl Into<String>,
        indicator: impl HealthIndicator,
    ) -> Self {
        self.health_indicator_in(name, &[Group::Readiness], indicator)
    }

    /// Adds a health indicator to the overall health and to `groups`.
    pub fn health_indicator_in(
        mut self,
        name: impl Into<String>,
        groups: &[Group],
        indicator: impl HealthIndicator,
    ) -> Self {
        let name = name.into();
        self.indicators.retain(|r| r.name != name);
        self.indicators.push(Registered {
            name,
            groups: groups.to_vec(),
            indicator: Arc::new(indicator),
        });
        self
    }

    /// How long one health check may take before it counts as `DOWN`; 10 s by default.
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Guards `POST /actuator/refresh` with the management token, or serves it only on a
    /// loopback listener (see [`Management`](crate::management::Management)). Without
    /// this, refresh is served to any caller.
    pub fn management(mut self, management: crate::management::Management) -> Self {
        self.management = Some(management);
        self
    }

    /// Adds a hook that `POST /actuator/refresh` runs, in the order added.
    pub fn on_refresh(mut self, name: impl Into<String>, hook: impl RefreshHook) -> Self {
        self.refresh.push((name.into(), Arc::new(hook)));
        self
    }

    /// Runs the refresh hooks added so far, for callers other than `POST /actuator/refresh`.
    pub fn refresher(&self) -> Refresher {
        Refresher::new(&self.refresh)
    }

    /// Adds management operations (routes under `/actuator/`, such as Spring Cloud Bus's
    /// `busrefresh`), guarded as `refresh` is and with its 4 KiB body limit.
    pub fn operations(mut self, routes: Router) -> Self {
        self.operations = std::mem::take(&mut self.operations).merge(routes);
        self
    }

    /// Reports `availability` (shared with whoever changes it) as the application's own
    /// liveness and readiness.
    pub fn with_availability(mut self, availability: Availability) -> Self {
        self.availability = availability;
        self
    }

    /// A handle on the application's own liveness and readiness.
    pub fn availability(&self) -> Availability {
        self.availability.clone()
    }

    /// Runs the health indicators registered so far outside the endpoints, to act on the
    /// app's health (msa's `App` reports it to the registry as the instance's status).
    pub fn health_check(&self) -> HealthCheck {
        HealthCheck {
            indicators: Arc::from(self.indicators.clone()),
            availability: self.availability.clone(),
            timeout: self.health_timeout,
        }
    }

    /// The endpoints, as a router to merge into the application's.
    pub fn router(self) -> Router {
        let mut info = serde_json::Map::new();
        info.insert(
            "app".into(),
            serde_json::json!({ "name": self.name, "version": self.version }),
        );
        if let Some(build) = &self.build {
            build.write_into(&mut info);
        }
        info.extend(self.info);
        let state = Arc::new(Shared {
            info: serde_json::Value::Object(info),
            indicators: self.indicators,
            refresh: self.refresh,
            availability: self.availability,
            health_timeout: self.health_timeout,
            loggers: self.loggers.or_else(crate::telemetry::loggers),
            env: self.env,
        });
        let refresh = Router::new()
            .route("/actuator/refresh", post(refresh))
            .route("/actuator/loggers", get(loggers::all))
            .route(
                "/actuator/loggers/{name}",
                get(loggers::one).post(loggers::set),
            )
            .route("/actuator/env", get(env::all))
            .route("/actuator/env/{key}", get(env::one))
            .with_state(state.clone())
            .merge(self.operations)
            .layer(axum::extract::DefaultBodyLimit::max(4 * 1024));
        let refresh = match &self.management {
            Some(management) => management.guard(refresh),
            None => refresh,
        };
        Router::new()
            .route("/actuator", get(links))
            .route("/actuator/health", get(health))
            .route("/actuator/health/liveness", get(liveness))
            .route("/actuator/health/readiness", get(readiness))
            .route("/actuator/health/{component}", get(component))
            .route("/actuator/info", get(info_endpoint))
            .route("/actuator/prometheus", get(prometheus))
            .route("/actuator/metrics", get(metrics::names))
            .route("/actuator/metrics/{name}", get(metrics::one))
            .with_state(state)
            .merge(refresh)
    }
}

/// The app's health, computed on demand; from [`Actuator::health_check`].
#[derive(Clone)]
pub struct HealthCheck {
    indicators: Arc<[Registered]>,
    availability: Availability,
    timeout: Duration,
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthCheck")
            .field("indicators", &self.indicators.len())
            .finish_non_exhaustive()
    }
}

impl HealthCheck {
    /// Every indicator's health and the aggregate, as `GET /actuator/health` answers.
    pub async fn report(&self) -> HealthReport {
        health::report(&self.indicators, &self.availability, None, self.timeout).await
    }

    /// The app's liveness and readiness.
    pub fn availability(&self) -> &Availability {
        &self.availability
    }
}

struct Shared {
    info: serde_json::Value,
    indicators: Vec<Registered>,
    refresh: Vec<(String, Arc<dyn RefreshHook>)>,
    availability: Availability,
    health_timeout: Duration,
    loggers: Option<crate::telemetry::Loggers>,
    env: Option<EnvSource>,
}

type AppState = State<Arc<Shared>>;

async fn links() -> Json<serde_json::Value> {
    let link =
        |path: &str| serde_json::json!({ "href": format!("/actuator{path}"), "templated": false });
    Json(serde_json::json!({
        "_links": {
            "self": link(""),
            "health": link("/health"),
            "health-liveness": link("/health/liveness"),
            "health-readiness": link("/health/readiness"),
            "info": link("/info"),
            "prometheus": link("/prometheus"),
            "metrics": link("/metrics"),
            "loggers": link("/loggers"),
            "env": link("/env"),
            "refresh": link("/refresh"),
        }
    }))
}

async fn group_report(state: &Shared, group: Option<Group>) -> Response {
    let report = health::report(
        &state.indicators,
        &state.availability,
        group,
        state.health_timeout,
    )
    .await;
    (report.status.http_status(), Json(report)).into_response()
}

async fn health(State(state): AppState) -> Response {
    group_report(&state, None).await
}

async fn liveness(State(state): AppState) -> Response {
    group_report(&state, Some(Group::Liveness)).await
}

async fn readiness(State(state): AppState) -> Response {
    group_report(&state, Some(Group::Readiness)).await
}

async fn component(State(state): AppState, Path(name): Path<String>) -> Response {
    let report = health::report(
        &state.indicators,
        &state.availability,
        None,
        state.health_timeout,
    )
    .await;
    match report.components.get(&name) {
        Some(health) => (health.status.http_status(), Json(health)).into_response(),
        None => crate::http::error_response(
            StatusCode::NOT_FOUND,
            format!("no health component named {name:?}"),
        ),
    }
}

async fn info_endpoint(State(state): AppState) -> Json<serde_json::Value> {
    Json(state.info.clone())
}

async fn prometheus() -> Response {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
        crate::metrics::render(),
    )
        .into_response()
}

async fn refresh(State(state): AppState) -> Response {
    let (changed, errors) = Refresher::new(&state.refresh).refresh().await;
    if errors.is_empty() {
        Json(changed).into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "changed": changed, "errors": errors })),
        )
            .into_response()
    }
}
