//! `/actuator/env`: the app's settings by source, secrets masked, in Spring Boot's JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::AppState;
use crate::http::error_response;

fn no_settings() -> Response {
    error_response(StatusCode::NOT_FOUND, "this app has no settings to show")
}

/// `GET /actuator/env`: every source, highest precedence first.
pub(super) async fn all(State(state): AppState) -> Response {
    let Some(settings) = state.env.as_ref().map(|f| f()) else {
        return no_settings();
    };
    let sources: Vec<Value> = settings
        .property_sources()
        .into_iter()
        .map(|source| {
            let properties: Map<String, Value> = source
                .properties
                .into_iter()
                .map(|p| (p.key, json!({ "value": p.value, "origin": p.origin })))
                .collect();
            json!({ "name": source.name, "properties": properties })
        })
        .collect();
    Json(json!({
        "activeProfiles": settings.active_profiles(),
        "propertySources": sources,
    }))
    .into_response()
}

/// `GET /actuator/env/{key}`: the value in force and each source's, as Spring Boot writes
/// them; 404 when no source sets it.
pub(super) async fn one(State(state): AppState, Path(key): Path<String>) -> Response {
    let Some(settings) = state.env.as_ref().map(|f| f()) else {
        return no_settings();
    };
    let mut found = Vec::new();
    for source in settings.property_sources() {
        if let Some(p) = source.properties.into_iter().find(|p| p.key == key) {
            found.push(json!({
                "name": source.name,
                "property": { "value": p.value, "origin": p.origin },
            }));
        }
    }
    let Some(first) = found.first() else {
        return error_response(StatusCode::NOT_FOUND, format!("no source sets {key:?}"));
    };
    Json(json!({
        "property": { "source": first["name"], "value": first["property"]["value"] },
        "activeProfiles": settings.active_profiles(),
        "propertySources": found,
    }))
    .into_response()
}
