//! The admin's pages and JSON API: one page shell with its script and style compiled into
//! the binary (no CDN, works offline), the estate's JSON, its live updates as server-sent
//! events, and the calls the pages make to instances through the admin (loggers,
//! environment, gateway routes, config server applications).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::Stream;
use http::{HeaderMap, StatusCode, header};
use msa_core::http::Authorization;
use serde_json::{Value, json};

use crate::estate::Estate;
use crate::otlp::Collector;

const PAGE: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

/// Log levels a page may set.
const LEVELS: &[&str] = &["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"];

#[derive(Clone)]
struct AppState {
    estate: Estate,
}

/// The pages and the API over `estate` and `collector`. With `login`, every request needs
/// it (HTTP Basic or Bearer); without, only requests for a loopback host are answered.
pub(crate) fn router(
    estate: Estate,
    collector: &Collector,
    login: Option<Authorization>,
) -> Router {
    let pages = Router::new()
        .route("/", get(page))
        .route("/graph", get(page))
        .route("/config", get(page))
        .route("/traces", get(page))
        .route("/traces/{trace_id}", get(page))
        .route("/logs/{trace_id}", get(page))
        .route("/instances/{service}/{id}", get(page))
        .route("/assets/app.js", get(script))
        .route("/assets/app.css", get(style));
    let api = Router::new()
        .route("/api/estate", get(overview))
        .route("/api/estate/events", get(events))
        .route("/api/graph", get(graph))
        .route("/api/routes", get(routes))
        .route("/api/config", get(config))
        .route("/api/instances/{service}/{id}", get(instance))
        .route("/api/instances/{service}/{id}/env", get(env))
        .route("/api/instances/{service}/{id}/loggers", get(loggers))
        .route(
            "/api/instances/{service}/{id}/loggers/{name}",
            post(set_logger),
        )
        .with_state(AppState { estate });
    let app = pages.merge(api).merge(collector.api());
    let app = match login {
        // Without a login the pages are for this machine only: a page of another site
        // whose name resolves to 127.0.0.1 (DNS rebinding) must not reach them.
        None => app.layer(axum::middleware::from_fn(loopback_host)),
        Some(login) => app.layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let login = login.clone();
                async move {
                    if login.allows(request.headers()) {
                        next.run(request).await
                    } else {
                        login.challenge()
                    }
                }
            },
        )),
    };
    app.layer(axum::middleware::from_fn(security_headers))
}

/// Refuses (421) a request whose `Host` is not a loopback name or address.
async fn loopback_host(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        next.run(request).await
    } else {
        error(
            StatusCode::MISDIRECTED_REQUEST,
            "without a login, msa-admin answers only requests for localhost or a loopback address",
        )
    }
}

/// No framing by other sites, no sniffing, scripts and styles from the admin only.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

use msa_core::http::error_response as error;

async fn overview(State(state): State<AppState>) -> Response {
    Json(json!({ "services": state.estate.overview() })).into_response()
}

/// The estate as server-sent events: the whole overview at once, then again after each
/// change (at most twice a second).
async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let estate = state.estate;
    let changes = estate.changes();
    let stream = futures_util::stream::unfold(
        (estate, changes, true),
        |(estate, mut changes, first)| async move {
            if !first {
                changes.changed().await.ok()?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            changes.mark_unchanged();
            let data = json!({ "services": estate.overview() }).to_string();
            let event = Event::default().event("estate").data(data);
            Some((Ok(event), (estate, changes, false)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

async fn graph(State(state): State<AppState>) -> Response {
    Json(state.estate.graph()).into_response()
}

async fn instance(
    State(state): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    match state.estate.instance(&service, &id) {
        Some(detail) => Json(detail).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no instance {service}/{id}")),
    }
}

/// An instance's environment, with every secret masked (again: the instance masks too).
async fn env(
    State(state): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    let Some((base, _)) = state.estate.base(&service, &id) else {
        return error(StatusCode::NOT_FOUND, format!("no instance {service}/{id}"));
    };
    match state.estate.get_json(&base, "/actuator/env").await {
        Ok(mut doc) => {
            mask(&mut doc, None);
            Json(doc).into_response()
        }
        Err(reason) => error(StatusCode::BAD_GATEWAY, reason),
    }
}

/// Masks every value under a key that names a secret, and credentials in URLs.
pub(crate) fn mask(value: &mut Value, key: Option<&str>) {
    match value {
        Value::Object(map) => {
            for (name, inner) in map.iter_mut() {
                // `{"spring.datasource.password": {"value": "..."}}`: the key names it.
                let named = if name == "value" {
                    key
                } else {
                    Some(name.as_str())
                };
                mask(inner, named);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| mask(item, key)),
        Value::String(text) => {
            if key.is_some_and(msa_core::secrets::is_secret_name) {
                *text = msa_core::secrets::MASK.to_owned();
            } else if msa_core::secrets::has_url_credentials(text) {
                *text = msa_core::secrets::mask_url(text);
            }
        }
        Value::Number(_) | Value::Bool(_) if key.is_some_and(msa_core::secrets::is_secret_name) => {
            *value = Value::String(msa_core::secrets::MASK.to_owned());
        }
        _ => {}
    }
}

async fn loggers(
    State(state): State<AppState>,
    Path((service, id)): Path<(String, String)>,
) -> Response {
    let Some((base, _)) = state.estate.base(&service, &id) else {
        return error(StatusCode::NOT_FOUND, format!("no instance {service}/{id}"));
    };
    match state.estate.get_json(&base, "/actuator/loggers").await {
        Ok(doc) => Json(doc).into_response(),
        Err(reason) => error(StatusCode::BAD_GATEWAY, reason),
    }
}

/// Sets a logger's level on an instance. Only JSON bodies (a cross-site form cannot send
/// one), and only a known level.
async fn set_logger(
    State(state): State<AppState>,
    Path((service, id, name)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send {\"configuredLevel\": \"DEBUG\"} as application/json",
        );
    }
    let level = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|doc| doc.get("configuredLevel").cloned());
    let level = match level {
        Some(Value::Null) => Value::Null,
        Some(Value::String(level)) if LEVELS.contains(&level.to_ascii_uppercase().as_str()) => {
            Value::String(level.to_ascii_uppercase())
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("configuredLevel must be one of {LEVELS:?} or null"),
            );
        }
    };
    if name.is_empty()
        || name.len() > 256
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'))
    {
        return error(StatusCode::BAD_REQUEST, "not a logger name");
    }
    let Some((base, _)) = state.estate.base(&service, &id) else {
        return error(StatusCode::NOT_FOUND, format!("no instance {service}/{id}"));
    };
    let path = format!("/actuator/loggers/{name}");
    match state
        .estate
        .post_json(&base, &path, &json!({ "configuredLevel": level }))
        .await
    {
        Ok((status, _)) if status.is_success() => {
            tracing::info!(%service, %id, logger = %name, level = %level, "log level set");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok((status, text)) => error(
            StatusCode::BAD_GATEWAY,
            format!("the instance answered {status}: {text}"),
        ),
        Err(reason) => error(StatusCode::BAD_GATEWAY, reason),
    }
}

/// Every gateway's routes (`/actuator/gateway/routes`).
async fn routes(State(state): State<AppState>) -> Response {
    let mut gateways = Vec::new();
    for base in state.estate.servers("gateway") {
        let answer = state
            .estate
            .get_json(&base, "/actuator/gateway/routes")
            .await;
        let mut entry = json!({ "gateway": msa_core::secrets::mask_url(&base) });
        match answer {
            Ok(mut routes) => {
                mask(&mut routes, None);
                entry["routes"] = routes;
            }
            Err(reason) => entry["error"] = reason.into(),
        }
        gateways.push(entry);
    }
    Json(json!({ "gateways": gateways })).into_response()
}

/// Every config server's view of each registered service: the version and the property
/// sources it serves (names only, never values), through Spring Cloud Config's own API.
async fn config(State(state): State<AppState>) -> Response {
    let services = state.estate.registered_services();
    let mut servers = Vec::new();
    for base in state.estate.servers("config-server") {
        let mut applications = Vec::new();
        let health = state.estate.get_json(&base, "/actuator/health").await.ok();
        for service in services.iter().map(String::as_str).chain(["application"]) {
            let path = format!("/{service}/default");
            match state.estate.get_json(&base, &path).await {
                Ok(doc) => {
                    let sources: Vec<Value> = doc["propertySources"]
                        .as_array()
                        .map(|list| {
                            list.iter()
                                .filter_map(|s| s["name"].as_str())
                                .map(|name| msa_core::secrets::mask_url(name).into())
                                .collect()
                        })
                        .unwrap_or_default();
                    applications.push(json!({
                        "application": service,
                        "profiles": doc["profiles"],
                        "label": doc["label"],
                        "version": doc["version"],
                        "propertySources": sources,
                    }));
                }
                Err(reason) => applications.push(json!({
                    "application": service,
                    "error": reason,
                })),
            }
        }
        let mut repository = health
            .as_ref()
            .and_then(|h| h.pointer("/components/repository/details").cloned())
            .unwrap_or(Value::Null);
        mask(&mut repository, None);
        servers.push(json!({
            "server": msa_core::secrets::mask_url(&base),
            "repository": repository,
            "applications": applications,
        }));
    }
    Json(json!({ "servers": servers })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_wherever_they_sit() {
        let mut doc = json!({
            "propertySources": [{
                "name": "file:orders.yml",
                "properties": {
                    "spring.datasource.password": { "value": "hunter2" },
                    "orders.api-key": { "value": 1234 },
                    "spring.datasource.url": { "value": "postgres://app:hunter2@db/orders" },
                    "server.port": { "value": 8081 }
                }
            }]
        });
        mask(&mut doc, None);
        let text = doc.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("1234"), "{text}");
        assert_eq!(
            doc["propertySources"][0]["properties"]["server.port"]["value"],
            8081
        );
    }
}
