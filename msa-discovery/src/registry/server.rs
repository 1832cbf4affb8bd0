//! The registry's HTTP API: Eureka's REST resources under `/eureka/apps` and
//! `/eureka/v2/apps`.
//!
//! | request | answer |
//! |---|---|
//! | `POST /apps/{APP}` with `{"instance": {...}}` | 204; 400 with the reason for a body that does not read or lacks a required field |
//! | `PUT /apps/{APP}/{id}[?status=&lastDirtyTimestamp=]` | 200; 404 for an unknown instance or a newer client copy (the client registers again) |
//! | `DELETE /apps/{APP}/{id}` | 200; 404 |
//! | `PUT /apps/{APP}/{id}/status?value=S`, `DELETE .../status[?value=S]` | 200; 404 |
//! | `PUT /apps/{APP}/{id}/metadata?key=value` | 200; 404 |
//! | `GET /apps`, `GET /apps/delta`, `GET /apps/{APP}`, `GET /apps/{APP}/{id}`, `GET /instances/{id}`, `GET /vips/{vip}`, `GET /svips/{svip}` | 200 (404 for an unknown application or instance) |
//!
//! msa's own clients use the native API, a blocking query in Consul's manner:
//! `GET /msa/v1/services/{service}?index=N&wait=30s` answers at once when the service has
//! changed since index `N`, and otherwise as soon as it does (or with the same index when
//! the wait is over): `{"service", "index", "instances": [ServiceInstance]}`, the index
//! also in `X-Msa-Index`. An index ahead of the registry (a client that knew it before a
//! restart) is answered at once, as Consul does.
//!
//! With a token, registration, heartbeats, cancellation and status and metadata changes
//! need `Authorization: Bearer TOKEN`, or HTTP Basic with the token as its password (as
//! Spring's Eureka clients send credentials); reads stay open.
//!
//! Answers are XML unless the `Accept` header contains `json` (a client that sends none,
//! like py-eureka-client, gets XML, as from Eureka); registrations are read as XML or JSON
//! by `Content-Type`.
//!
//! A Eureka path with a trailing slash is the same resource as the one without, as Jersey
//! serves them in Eureka's server: Spring's Eureka client asks for `apps/`, and so do the
//! JavaScript and Python clients.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use msa_core::InstanceStatus;
use msa_core::actuator::{Actuator, Availability, Health};
use msa_core::http::{Authorization, ServerLayer, error_response};
use msa_core::management::Management;

use super::store::{MetadataError, NotFound, Store};
use crate::eureka::{
    Application, ApplicationEnvelope, Applications, ApplicationsEnvelope, InstanceEnvelope, xml,
};

/// How often expired leases are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The registry server; [`RegistryServer::router`] gives its axum router.
#[derive(Clone, Debug)]
pub struct RegistryServer {
    store: Store,
    #[cfg(feature = "etcd")]
    etcd: Option<super::EtcdStore>,
    token: Option<Authorization>,
    availability: Availability,
    management: Option<Management>,
}

impl RegistryServer {
    /// A server over `store`.
    pub fn new(store: Store) -> Self {
        RegistryServer {
            store,
            #[cfg(feature = "etcd")]
            etcd: None,
            token: None,
            availability: Availability::default(),
            management: None,
        }
    }

    /// Keeps the instances in etcd (see [`EtcdStore`](super::EtcdStore)): every write goes
    /// through to it, and this server's copy follows it from a task (call inside a tokio
    /// runtime). Leases expire in etcd: do not [`spawn_sweeper`](Self::spawn_sweeper).
    #[cfg(feature = "etcd")]
    pub fn etcd(mut self, etcd: super::EtcdStore) -> Self {
        etcd.follow(&self.store);
        etcd.preserve(&self.store);
        self.etcd = Some(etcd);
        self
    }

    /// Who may call `POST /actuator/refresh` (see
    /// [`Management`](msa_core::management::Management)).
    pub fn management(mut self, management: Management) -> Self {
        self.management = Some(management);
        self
    }

    /// The server's liveness and readiness, as `/actuator/health` reports them.
    pub fn availability(&self) -> Availability {
        self.availability.clone()
    }

    /// Requires the token on every write: as `Authorization: Bearer <token>`, or as the
    /// password of HTTP Basic (any user), which Spring's Eureka clients send from a
    /// `defaultZone` of `http://user:token@host:8761/eureka`.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(Authorization::token(token, "msa-registry"));
        self
    }

    /// Sweeps expired leases every second, from a task (call inside a tokio runtime); the
    /// task stops when every clone of the store is gone.
    pub fn spawn_sweeper(&self) {
        let store = self.store.downgrade();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                ticker.tick().await;
                let Some(store) = store.upgrade() else { return };
                store.evict();
            }
        });
    }

    /// Eureka's resources under both base paths, the native watch, msa's actuator, and the
    /// tracing layer.
    pub fn router(self) -> Router {
        let store = self.store.clone();
        let actuator = Actuator::new("msa-registry")
            .version(env!("CARGO_PKG_VERSION"))
            .with_availability(self.availability.clone())
            .health_indicator("registry", move || {
                let apps = store.applications();
                let instances: usize = apps.application.iter().map(|a| a.instance.len()).sum();
                let preserving = store.self_preservation_active();
                async move {
                    Health::up()
                        .with_detail("applications", apps.application.len())
                        .with_detail("instances", instances)
                        .with_detail(
                            "selfPreservation",
                            if preserving { "ENGAGED" } else { "OFF" },
                        )
                }
            });
        let actuator = match self.management.clone() {
            Some(management) => actuator.management(management),
            None => actuator,
        };
        let token = self.token.clone();
        let native = Router::new()
            .route("/msa/v1/services", get(watch_all))
            .route("/msa/v1/services/{service}", get(watch_service))
            .with_state(self.clone());
        let eureka = Router::new()
            .route("/apps", get(all_apps))
            .route("/apps/delta", get(delta))
            .route("/apps/{app}", get(one_app).post(register))
            .route(
                "/apps/{app}/{id}",
                get(one_instance).put(heartbeat).delete(cancel),
            )
            .route(
                "/apps/{app}/{id}/status",
                put(set_override).delete(remove_override),
            )
            .route("/apps/{app}/{id}/metadata", put(set_metadata))
            .route("/instances/{id}", get(instance_by_id))
            .route("/vips/{vip}", get(by_vip))
            .route("/svips/{svip}", get(by_secure_vip))
            .with_state(self);
        let eureka = match token {
            Some(auth) => eureka.layer(middleware::from_fn(move |req: Request, next: Next| {
                let auth = auth.clone();
                async move {
                    // Reads stay open; every change needs the token.
                    let read = matches!(*req.method(), Method::GET | Method::HEAD);
                    if read || auth.allows(req.headers()) {
                        next.run(req).await
                    } else {
                        auth.challenge()
                    }
                }
            })),
            None => eureka,
        };
        let routes = Router::new()
            .merge(native)
            .nest("/eureka", eureka.clone())
            .nest("/eureka/v2", eureka)
            .merge(actuator.router())
            .layer(ServerLayer::new());
        // Before routing, which a layer on `routes` would come after.
        Router::new().fallback_service(tower::util::MapRequest::new(routes, eureka_path))
    }
}

/// `/eureka/apps/` as `/eureka/apps`: one trailing slash on a Eureka path is dropped.
fn eureka_path(mut request: Request) -> Request {
    let path = request.uri().path();
    if path.len() > "/eureka/".len() && path.starts_with("/eureka/") && path.ends_with('/') {
        let trimmed = &path[..path.len() - 1];
        let target = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(target) = target.parse::<http::uri::PathAndQuery>() {
            let mut parts = request.uri().clone().into_parts();
            parts.path_and_query = Some(target);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}

/// JSON when the client accepts it, XML otherwise (Eureka's rule).
fn respond<T: serde::Serialize>(headers: &HeaderMap, value: &T) -> Response {
    let json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("json"));
    if json {
        return axum::Json(value).into_response();
    }
    match xml::to_string(value) {
        Ok(text) => ([(header::CONTENT_TYPE, "application/xml")], text).into_response(),
        Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

fn not_found(error: NotFound) -> Response {
    error_response(StatusCode::NOT_FOUND, error)
}

fn bad_request(reason: impl std::fmt::Display) -> Response {
    error_response(StatusCode::BAD_REQUEST, reason)
}

async fn all_apps(State(server): State<RegistryServer>, headers: HeaderMap) -> Response {
    respond(
        &headers,
        &ApplicationsEnvelope {
            applications: server.store.applications(),
        },
    )
}

async fn delta(State(server): State<RegistryServer>, headers: HeaderMap) -> Response {
    respond(
        &headers,
        &ApplicationsEnvelope {
            applications: server.store.delta(),
        },
    )
}

async fn one_app(
    State(server): State<RegistryServer>,
    Path(app): Path<String>,
    headers: HeaderMap,
) -> Response {
    match server.store.application(&app) {
        Some(application) => respond(&headers, &ApplicationEnvelope { application }),
        None => (
            StatusCode::NOT_FOUND,
            format!("no application {}", app.to_ascii_uppercase()),
        )
            .into_response(),
    }
}

async fn register(
    State(server): State<RegistryServer>,
    Path(app): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let envelope: Result<InstanceEnvelope, String> = if content_type.contains("xml") {
        std::str::from_utf8(&body)
            .map_err(|_| "the body is not UTF-8".to_owned())
            .and_then(|text| xml::from_str(text).map_err(|e| e.to_string()))
            .map_err(|e| format!("the body is not <instance>...</instance>: {e}"))
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| format!("the body is not {{\"instance\": {{...}}}}: {e}"))
    };
    let envelope = match envelope {
        Ok(envelope) => envelope,
        Err(reason) => return bad_request(reason),
    };
    let id = envelope.instance.instance_id.clone();
    if let Err(error) = server.store.register(&app, envelope.instance) {
        return bad_request(error);
    }
    if let Err(refused) = shared::register(&server, &app, &id).await {
        return refused;
    }
    StatusCode::NO_CONTENT.into_response()
}

fn status_param(
    query: &HashMap<String, String>,
    key: &str,
) -> Result<Option<InstanceStatus>, msa_core::ParseStatusError> {
    query.get(key).map(|v| v.parse()).transpose()
}

async fn heartbeat(
    State(server): State<RegistryServer>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let dirty = match query.get("lastDirtyTimestamp").map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return bad_request("lastDirtyTimestamp is not a number"),
    };
    let status = match status_param(&query, "status") {
        Ok(status) => status,
        Err(error) => return bad_request(error),
    };
    if let Err(refused) = shared::renew(&server, &app, &id).await {
        return refused;
    }
    let changed = match server.store.renew_reporting(&app, &id, dirty, status) {
        Ok(changed) => changed,
        Err(error) => return not_found(error),
    };
    if changed && let Err(refused) = shared::write_through(&server, &app, &id).await {
        return refused;
    }
    StatusCode::OK.into_response()
}

async fn cancel(
    State(server): State<RegistryServer>,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    let shared = match shared::cancel(&server, &app, &id).await {
        Ok(found) => found,
        Err(refused) => return refused,
    };
    match server.store.cancel(&app, &id) {
        Ok(()) => StatusCode::OK.into_response(),
        // Gone here already (the watch was quicker), but it was in the shared store.
        Err(_) if shared => StatusCode::OK.into_response(),
        Err(error) => not_found(error),
    }
}

async fn set_override(
    State(server): State<RegistryServer>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let status = match status_param(&query, "value") {
        Ok(Some(status)) => status,
        Ok(None) => {
            return bad_request("value= is required (UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN)");
        }
        Err(error) => return bad_request(error),
    };
    match server.store.set_override(&app, &id, status) {
        Ok(()) => written(&server, &app, &id).await,
        Err(error) => not_found(error),
    }
}

/// 200 once a changed record is in the shared store too.
async fn written(server: &RegistryServer, app: &str, id: &str) -> Response {
    match shared::write_through(server, app, id).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(refused) => refused,
    }
}

async fn remove_override(
    State(server): State<RegistryServer>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let status = match status_param(&query, "value") {
        Ok(status) => status,
        Err(error) => return bad_request(error),
    };
    match server.store.remove_override(&app, &id, status) {
        Ok(()) => written(&server, &app, &id).await,
        Err(error) => not_found(error),
    }
}

async fn set_metadata(
    State(server): State<RegistryServer>,
    Path((app, id)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let entries: Vec<(String, String)> = query.into_iter().collect();
    match server.store.set_metadata(&app, &id, &entries) {
        Ok(()) => written(&server, &app, &id).await,
        Err(MetadataError::NotFound(error)) => not_found(error),
        Err(too_large) => bad_request(too_large),
    }
}

async fn one_instance(
    State(server): State<RegistryServer>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match server.store.instance(&app, &id) {
        Some(instance) => respond(&headers, &InstanceEnvelope { instance }),
        None => not_found(NotFound {
            app: app.to_ascii_uppercase(),
            id,
        }),
    }
}

async fn instance_by_id(
    State(server): State<RegistryServer>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    match server.store.find(&id) {
        Some(instance) => respond(&headers, &InstanceEnvelope { instance }),
        None => error_response(StatusCode::NOT_FOUND, format!("no instance {id:?}")),
    }
}

fn by_address(
    server: &RegistryServer,
    headers: &HeaderMap,
    address: &str,
    secure: bool,
) -> Response {
    let mut apps = server.store.applications();
    for app in &mut apps.application {
        app.instance.retain(|i| {
            let vip = if secure {
                &i.secure_vip_address
            } else {
                &i.vip_address
            };
            vip.as_deref()
                .is_some_and(|v| v.split(',').any(|v| v.trim().eq_ignore_ascii_case(address)))
        });
    }
    apps.application
        .retain(|a: &Application| !a.instance.is_empty());
    respond(
        headers,
        &ApplicationsEnvelope {
            applications: Applications {
                apps_hashcode: apps.hashcode(),
                ..apps
            },
        },
    )
}

async fn by_vip(
    State(server): State<RegistryServer>,
    Path(vip): Path<String>,
    headers: HeaderMap,
) -> Response {
    by_address(&server, &headers, &vip, false)
}

async fn by_secure_vip(
    State(server): State<RegistryServer>,
    Path(svip): Path<String>,
    headers: HeaderMap,
) -> Response {
    by_address(&server, &headers, &svip, true)
}

/// The longest a native watch may wait.
pub const MAX_WATCH: Duration = msa_core::wait::MAX_WAIT;

#[derive(Debug, serde::Deserialize)]
struct WatchQuery {
    index: Option<u64>,
    wait: Option<String>,
}

#[derive(serde::Serialize)]
struct ServiceAnswer {
    service: String,
    index: u64,
    instances: Vec<msa_core::ServiceInstance>,
}

#[derive(serde::Serialize)]
struct CatalogAnswer {
    index: u64,
    services: BTreeMap<String, Vec<msa_core::ServiceInstance>>,
}

/// The whole registry, answered when its version passes `index` (or at once without one,
/// or after `wait`): what msa-admin follows.
/// A watch's long poll: returns at once without an index or when `answer_now` holds, else
/// when the registry changes so that it does, or after the query's wait; a 400 for a
/// wait that is not one.
async fn long_poll(
    server: &RegistryServer,
    query: &WatchQuery,
    answer_now: impl Fn(&Store) -> bool,
) -> Result<(), Response> {
    let wait = msa_core::wait::parse_wait(query.wait.as_deref()).map_err(bad_request)?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut versions = server.store.subscribe();
    loop {
        versions.mark_unchanged();
        if query.index.is_none() || answer_now(&server.store) {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, versions.changed())
            .await
            .is_err()
        {
            return Ok(());
        }
    }
}

async fn watch_all(
    State(server): State<RegistryServer>,
    Query(query): Query<WatchQuery>,
) -> Response {
    let known = query.index.unwrap_or(0);
    if let Err(refused) = long_poll(&server, &query, |store| store.version() != known).await {
        return refused;
    }
    let index = server.store.version();
    let services = server
        .store
        .applications()
        .application
        .into_iter()
        .map(|app| {
            let instances = app
                .instance
                .iter()
                .map(crate::eureka::InstanceInfo::to_service_instance)
                .collect();
            (app.name.to_ascii_lowercase(), instances)
        })
        .collect();
    (
        [("x-msa-index", index.to_string())],
        axum::Json(CatalogAnswer { index, services }),
    )
        .into_response()
}

async fn watch_service(
    State(server): State<RegistryServer>,
    Path(service): Path<String>,
    Query(query): Query<WatchQuery>,
) -> Response {
    let known = query.index.unwrap_or(0);
    // A client ahead of the registry saw an earlier life of it (a restart): answer now.
    let answer_now = |store: &Store| store.index(&service) > known || known > store.version();
    if let Err(refused) = long_poll(&server, &query, answer_now).await {
        return refused;
    }
    let answer = ServiceAnswer {
        index: server.store.index(&service),
        instances: server.store.instances(&service),
        service: service.to_ascii_lowercase(),
    };
    (
        [("x-msa-index", answer.index.to_string())],
        axum::Json(answer),
    )
        .into_response()
}

/// Writing through to the shared store (etcd), when the server has one; without the
/// `etcd` feature, nothing to do.
mod shared {
    use axum::response::Response;

    use super::RegistryServer;

    #[cfg(feature = "etcd")]
    fn unavailable(error: msa_core::etcd::EtcdError) -> Response {
        use axum::response::IntoResponse as _;
        tracing::warn!(%error, "the registry's etcd store refused a write");
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("the registry's store is unavailable: {error}"),
        )
            .into_response()
    }

    #[cfg(feature = "etcd")]
    fn gone(app: &str, id: &str) -> Response {
        super::not_found(super::NotFound {
            app: app.to_ascii_uppercase(),
            id: id.to_owned(),
        })
    }

    /// Puts a just-registered record under a new lease; on failure the registration is
    /// undone here too.
    pub(super) async fn register(
        server: &RegistryServer,
        app: &str,
        id: &str,
    ) -> Result<(), Response> {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &server.etcd
            && let Some((record, duration)) = server.store.record(app, id)
            && let Err(error) = etcd.register(&record, duration).await
        {
            let _ = server.store.cancel(app, id);
            return Err(unavailable(error));
        }
        let _ = (server, app, id);
        Ok(())
    }

    /// Renews the record's lease in the shared store; 404 when it has none.
    pub(super) async fn renew(
        server: &RegistryServer,
        app: &str,
        id: &str,
    ) -> Result<(), Response> {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &server.etcd {
            return match etcd.renew(app, id).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(gone(app, id)),
                Err(error) => Err(unavailable(error)),
            };
        }
        let _ = (server, app, id);
        Ok(())
    }

    /// Deletes the record from the shared store; whether it was there.
    pub(super) async fn cancel(
        server: &RegistryServer,
        app: &str,
        id: &str,
    ) -> Result<bool, Response> {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &server.etcd {
            return etcd.cancel(app, id).await.map_err(unavailable);
        }
        let _ = (server, app, id);
        Ok(false)
    }

    /// Puts a changed record in the shared store under its lease; 404 when it has none.
    pub(super) async fn write_through(
        server: &RegistryServer,
        app: &str,
        id: &str,
    ) -> Result<(), Response> {
        #[cfg(feature = "etcd")]
        if let Some(etcd) = &server.etcd
            && let Some((record, _)) = server.store.record(app, id)
        {
            return match etcd.update(&record).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(gone(app, id)),
                Err(error) => Err(unavailable(error)),
            };
        }
        let _ = (server, app, id);
        Ok(())
    }
}
