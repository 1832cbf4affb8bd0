//! `/actuator/gateway`: the routes as the gateway runs them, and a refresh. Both are
//! guarded by the gateway's management settings, and the routes are listed with their
//! secrets masked (`******`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use msa_core::http::error_response;
use serde_json::{Value, json};

use crate::config::Definition;
use crate::gateway::Gateway;
use crate::route::Route;

pub(crate) fn router(gateway: Gateway) -> axum::Router {
    let management = gateway.management();
    let routes = axum::Router::new()
        .route("/actuator/gateway/routes", get(routes))
        .route("/actuator/gateway/routes/{id}", get(route))
        .route("/actuator/gateway/refresh", post(refresh))
        .with_state(gateway);
    management.guard(routes)
}

fn definition(d: &Definition) -> Value {
    json!(format!("{}", d.masked()))
}

fn describe(route: &Route) -> Value {
    let def = &route.definition;
    json!({
        "route_id": route.id,
        "uri": crate::config::mask_url(&def.uri),
        "order": route.order,
        "predicates": def.predicates.iter().map(definition).collect::<Vec<_>>(),
        "filters": def.filters.iter().map(definition).collect::<Vec<_>>(),
        "metadata": crate::config::masked_map(&def.metadata),
    })
}

async fn routes(State(gateway): State<Gateway>) -> Json<Vec<Value>> {
    Json(gateway.table().routes.iter().map(|r| describe(r)).collect())
}

async fn route(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    match gateway.table().routes.iter().find(|r| r.id == id) {
        Some(route) => Json(describe(route)).into_response(),
        None => error_response(StatusCode::NOT_FOUND, format!("no route {id:?}")),
    }
}

async fn refresh(State(gateway): State<Gateway>) -> Response {
    match gateway.reload_file() {
        Ok(count) => {
            tracing::info!(routes = count, "routes refreshed");
            Json(json!({"routes": count})).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "refresh rejected; keeping the current routes");
            let message = format!("{error} (the current routes are kept)");
            error_response(StatusCode::BAD_REQUEST, message)
        }
    }
}
