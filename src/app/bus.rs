//! Spring Cloud Bus in an `App`: `POST /actuator/busrefresh` and `/actuator/busenv` (each
//! with an optional `/{destination}` pattern such as `orders:**`) broadcast over the app's
//! stream; events from other instances (msa or Spring) refresh this one or set properties
//! on it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use axum::routing::post;
use msa_core::actuator::Refresher;
use msa_core::settings::{Layer, Settings};
use msa_stream::bus::{Bus, Listener, MAX_ID, RemoteEvent};

type Rebuild = Arc<dyn Fn() + Send + Sync>;

/// Properties set through the bus (`busenv`): above every other source, as Spring's
/// `EnvironmentManager` puts them. The app's live settings read them, and are rebuilt when
/// they change.
#[derive(Clone, Default)]
pub(crate) struct Overrides {
    values: Arc<Mutex<BTreeMap<String, String>>>,
    rebuilders: Arc<Mutex<Vec<Rebuild>>>,
}

impl Overrides {
    /// Adds the properties set so far to `settings`, over every other source, as the
    /// source `busenv`.
    pub(crate) fn add_to(&self, settings: &mut Settings) {
        let values = msa_core::sync::lock(&self.values).clone();
        if !values.is_empty() {
            settings.add_properties(
                Layer::Code,
                "busenv",
                values
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v))),
            );
        }
    }

    /// Runs `rebuild` whenever properties are set.
    pub(crate) fn on_change(&self, rebuild: impl Fn() + Send + Sync + 'static) {
        msa_core::sync::lock(&self.rebuilders).push(Arc::new(rebuild));
    }

    fn set(&self, values: BTreeMap<String, String>) {
        msa_core::sync::lock(&self.values).extend(values);
        let rebuilders = msa_core::sync::lock(&self.rebuilders).clone();
        for rebuild in rebuilders {
            rebuild();
        }
    }
}

/// What an instance does with an event meant for it: refresh (the hooks of
/// `POST /actuator/refresh`), or set properties.
pub(super) fn listener(refresher: Refresher, overrides: Overrides) -> Listener {
    Arc::new(move |event| {
        let (refresher, overrides) = (refresher.clone(), overrides.clone());
        Box::pin(async move {
            match event {
                RemoteEvent::RefreshRemoteApplicationEvent(_) => {
                    refresher.refresh().await;
                }
                RemoteEvent::EnvironmentChangeRemoteApplicationEvent { values, .. } => {
                    let keys: Vec<&String> = values.keys().collect();
                    tracing::info!(?keys, "properties set through the bus");
                    overrides.set(values);
                }
                _ => {}
            }
        })
    })
}

#[derive(Clone)]
struct Shared {
    bus: Bus,
    listener: Listener,
}

/// The bus's management operations.
pub(super) fn routes(bus: Bus, listener: Listener) -> Router {
    Router::new()
        .route("/actuator/busrefresh", post(refresh_all))
        .route("/actuator/busrefresh/{destination}", post(refresh))
        .route("/actuator/busenv", post(env_all))
        .route("/actuator/busenv/{destination}", post(env))
        .with_state(Shared { bus, listener })
}

/// Sends `event` to every instance and acts on it here when it is meant for this one too.
async fn broadcast(shared: &Shared, event: RemoteEvent) -> Response {
    let here = shared.bus.is_for_self(&event);
    if let Err(error) = shared.bus.publish(event.clone()).await {
        return msa_core::http::error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the bus cannot send: {error}"),
        );
    }
    if here {
        (shared.listener)(event).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The 400 for a destination past the bound, if it is.
fn too_long(destination: &str) -> Option<Response> {
    (destination.len() > MAX_ID).then(|| {
        msa_core::http::error_response(
            StatusCode::BAD_REQUEST,
            format!("a destination is at most {MAX_ID} bytes"),
        )
    })
}

async fn refresh_all(State(shared): State<Shared>) -> Response {
    broadcast(&shared, shared.bus.refresh_event("**")).await
}

async fn refresh(State(shared): State<Shared>, Path(destination): Path<String>) -> Response {
    if let Some(response) = too_long(&destination) {
        return response;
    }
    broadcast(&shared, shared.bus.refresh_event(&destination)).await
}

/// `{"name": "...", "value": "..."}`, as Spring Cloud Bus's `busenv` takes it.
#[derive(serde::Deserialize)]
struct Property {
    name: String,
    value: String,
}

async fn env_all(State(shared): State<Shared>, body: axum::body::Bytes) -> Response {
    set(&shared, "**", &body).await
}

async fn env(
    State(shared): State<Shared>,
    Path(destination): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(response) = too_long(&destination) {
        return response;
    }
    set(&shared, &destination, &body).await
}

async fn set(shared: &Shared, destination: &str, body: &[u8]) -> Response {
    let property: Property = match serde_json::from_slice(body) {
        Ok(property) => property,
        Err(error) => {
            return msa_core::http::error_response(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"name\": ..., \"value\": ...}}: {error}"),
            );
        }
    };
    if property.name.trim().is_empty() {
        return msa_core::http::error_response(StatusCode::BAD_REQUEST, "the name is empty");
    }
    let values = BTreeMap::from([(property.name, property.value)]);
    broadcast(shared, shared.bus.environment_event(destination, values)).await
}
