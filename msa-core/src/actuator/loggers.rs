//! `/actuator/loggers`: read and change log levels at run time, in Spring Boot's JSON.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use crate::http::error_response;
use crate::telemetry::levels::LEVELS;

fn not_installed() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no log levels to show: the process's logging was not set up by msa's Telemetry",
    )
}

/// `GET /actuator/loggers`: the levels, and every logger with a level of its own.
pub(super) async fn all(State(state): AppState) -> Response {
    let Some(loggers) = state.loggers.as_ref() else {
        return not_installed();
    };
    Json(serde_json::json!({
        "levels": LEVELS,
        "loggers": loggers.all(),
        "groups": {},
    }))
    .into_response()
}

/// `GET /actuator/loggers/{name}`.
pub(super) async fn one(State(state): AppState, Path(name): Path<String>) -> Response {
    let Some(loggers) = state.loggers.as_ref() else {
        return not_installed();
    };
    match loggers.get(&name) {
        Ok(levels) => Json(levels).into_response(),
        Err(error) => error_response(StatusCode::BAD_REQUEST, error),
    }
}

/// The body of a level change: `{"configuredLevel": "DEBUG"}`, or `null` to inherit.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Change {
    configured_level: Option<String>,
}

/// `POST /actuator/loggers/{name}`: 204 once the level is in force.
pub(super) async fn set(
    State(state): AppState,
    Path(name): Path<String>,
    body: Result<Json<Change>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Some(loggers) = state.loggers.as_ref() else {
        return not_installed();
    };
    let Json(change) = match body {
        Ok(body) => body,
        Err(rejection) => {
            // 413 past the body limit, 400 for a body that is not the change.
            return error_response(
                rejection.status(),
                format!("the body must be {{\"configuredLevel\": \"DEBUG\"}}: {rejection}"),
            );
        }
    };
    match loggers.set(&name, change.configured_level.as_deref()) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error_response(StatusCode::BAD_REQUEST, error),
    }
}
