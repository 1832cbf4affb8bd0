//! orders: takes orders and runs each as a saga over inventory and payments.
//!
//! 1. reserve the stock (inventory) — not enough: the order is `REJECTED`;
//! 2. charge the payment (payments) — declined: the reservation is released (the
//!    compensating step) and the order is `REJECTED`; charged: `CONFIRMED`;
//! 3. payments unavailable (down, failing, or its circuit breaker open): the fallback
//!    keeps the stock reserved and puts the order `ON_HOLD`, answered at once with 202;
//!    a background task charges held orders when payments is back.
//!
//! Every call goes through the client `App::client` builds: trace context propagated,
//! balanced over the registry's instances, and guarded by the Resilience4j stack that
//! `orders.yml` names per service (retry to another instance, circuit breaker, time
//! limiter, bulkhead), live from the config server. Reservations and charges are
//! idempotent per order id, so the retry may resend them.
//!
//! - `POST /orders` `{"item": "widget", "qty": 2}`: 201 (`CONFIRMED` or `REJECTED`), 202
//!   (`ON_HOLD`), 400 for a bad order, 503 while `orders.accepting` is false.
//! - `GET /orders/{id}`, `GET /orders`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use msa::config::client::LiveConfig;
use msa::core::metrics::UriTemplate;
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::common::{self, BoxError, ServiceArgs, cents, error, storage};
use crate::store::{Store, blocking};

#[derive(Debug, Clone, Deserialize)]
struct Settings {
    orders: Section,
    shop: Shop,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Section {
    /// The feature flag: false pauses new orders.
    accepting: bool,
    max_quantity: u64,
    #[serde(with = "msa::core::duration")]
    resume_every: Duration,
}

#[derive(Debug, Clone, Deserialize)]
struct Shop {
    currency: String,
    prices: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Status {
    Pending,
    Confirmed,
    Rejected,
    OnHold,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Order {
    id: String,
    item: String,
    qty: u64,
    unit_price: f64,
    total: f64,
    currency: String,
    status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    /// Milliseconds since the epoch of the last change.
    updated_ms: u64,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    item: String,
    qty: u64,
}

#[derive(Clone)]
struct Orders {
    store: Store,
    settings: LiveConfig<Settings>,
    client: ClientWithMiddleware,
}

/// A call's outcome, as the saga sees it.
enum Call {
    Done,
    /// The service said no (4xx), with its reason.
    Refused(String),
    /// The service could not answer (down, 5xx, timeout, breaker open).
    Unavailable(String),
}

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("orders", &args);
    let orders = Orders {
        store: Store::open(args.data.join("orders"))?,
        settings: app.live_config::<Settings>().await?,
        client: app.client(),
    };
    let router = Router::new()
        .route("/orders", get(list).post(place))
        .route("/orders/{id}", get(order))
        .with_state(orders.clone());
    let running = app.router(router).start().await?;
    common::announce(running.local_addr());
    if args.stop_on_eof {
        common::stop_on_eof(running.shutdown_handle());
    }
    let resumer = tokio::spawn(resume(orders));
    let result = running.wait().await;
    resumer.abort();
    Ok(result?)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn save(store: &Store, mut order: Order) -> std::io::Result<Order> {
    order.updated_ms = now_ms();
    let store = store.clone();
    blocking(move || {
        store.put(&order.id, &order)?;
        Ok(order)
    })
    .await
}

async fn place(State(orders): State<Orders>, Json(request): Json<NewOrder>) -> Response {
    let settings = orders.settings.get();
    if !settings.orders.accepting {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "orders are paused (orders.accepting is false)",
        );
    }
    let Some(&price) = settings.shop.prices.get(&request.item) else {
        let known: Vec<&String> = settings.shop.prices.keys().collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown item {:?}; the shop sells {known:?}", request.item),
        );
    };
    if request.qty == 0 || request.qty > settings.orders.max_quantity {
        return error(
            StatusCode::BAD_REQUEST,
            format!("qty must be between 1 and {}", settings.orders.max_quantity),
        );
    }
    let total = i64::try_from(request.qty)
        .ok()
        .and_then(|qty| cents(price).checked_mul(qty));
    let Some(total) = total else {
        return error(StatusCode::BAD_REQUEST, "the order's total is too large");
    };
    let order = Order {
        id: format!("{:016x}", fastrand::u64(..)),
        item: request.item,
        qty: request.qty,
        unit_price: price,
        total: total as f64 / 100.0,
        currency: settings.shop.currency.clone(),
        status: Status::Pending,
        reason: None,
        trace_id: msa::telemetry::current_trace_id(),
        updated_ms: 0,
    };
    tracing::info!(order = %order.id, item = %order.item, qty = order.qty, total = order.total,
        "order received");
    let order = match save(&orders.store, order).await {
        Ok(order) => order,
        Err(e) => return storage(e),
    };
    let order = saga(&orders, order).await;
    let status = match order.status {
        Status::Confirmed | Status::Rejected if order.reason.as_deref() != Some(UNAVAILABLE) => {
            StatusCode::CREATED
        }
        Status::OnHold => StatusCode::ACCEPTED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    match save(&orders.store, order).await {
        Ok(order) => (status, Json(order)).into_response(),
        Err(e) => storage(e),
    }
}

const UNAVAILABLE: &str = "inventory is unavailable";

/// Runs (or resumes) an order's saga; the result is the order's new state.
async fn saga(orders: &Orders, mut order: Order) -> Order {
    if order.status == Status::Pending {
        let reservation = json!({ "order_id": order.id, "item": order.item, "qty": order.qty });
        match call(
            orders,
            reqwest::Method::POST,
            "/reservations",
            "inventory/reservations",
            Some(reservation),
        )
        .await
        {
            Call::Done => {}
            Call::Refused(reason) => {
                tracing::info!(order = %order.id, %reason, "order rejected");
                order.status = Status::Rejected;
                order.reason = Some(reason);
                return order;
            }
            Call::Unavailable(reason) => {
                tracing::warn!(order = %order.id, %reason, "inventory unavailable");
                order.status = Status::Rejected;
                order.reason = Some(UNAVAILABLE.to_owned());
                return order;
            }
        }
    }
    let charge = json!({ "order_id": order.id, "amount": order.total, "currency": order.currency });
    match call(
        orders,
        reqwest::Method::POST,
        "/payments",
        "payments/payments",
        Some(charge),
    )
    .await
    {
        Call::Done => {
            tracing::info!(order = %order.id, "order confirmed");
            order.status = Status::Confirmed;
            order.reason = None;
        }
        Call::Refused(reason) => {
            // The compensating step: put the stock back.
            let release = format!("inventory/reservations/{}", order.id);
            let uri = "/reservations/{order_id}";
            match call(orders, reqwest::Method::DELETE, uri, &release, None).await {
                Call::Done | Call::Refused(_) => {
                    tracing::info!(order = %order.id, %reason, "payment declined; stock released");
                    order.status = Status::Rejected;
                    order.reason = Some(format!("payment declined: {reason}"));
                }
                Call::Unavailable(why) => {
                    // Held: the resumer charges again (declined again) and releases then.
                    tracing::warn!(order = %order.id, %why, "stock not yet released");
                    order.status = Status::OnHold;
                    order.reason = Some(format!("payment declined; releasing the stock: {why}"));
                }
            }
        }
        Call::Unavailable(reason) => {
            // The fallback: keep the reservation, answer now, charge later.
            tracing::warn!(order = %order.id, %reason, "payments unavailable; order on hold");
            order.status = Status::OnHold;
            order.reason = Some(format!(
                "payments is unavailable ({reason}); the order will be charged when it is back"
            ));
        }
    }
    order
}

/// Calls a service (`uri` is the path template its metrics are labelled with).
async fn call(
    orders: &Orders,
    method: reqwest::Method,
    uri: &'static str,
    path: &str,
    body: Option<Value>,
) -> Call {
    let url = format!("http://{path}");
    let mut request = orders
        .client
        .request(method, &url)
        .with_extension(UriTemplate(uri));
    if let Some(body) = &body {
        request = request.json(body);
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Call::Done,
        Ok(response) if response.status().is_client_error() => {
            let status = response.status();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            let reason = answer
                .get("reason")
                .or_else(|| answer.get("error"))
                .and_then(Value::as_str)
                .map_or_else(|| status.to_string(), str::to_owned);
            Call::Refused(reason)
        }
        Ok(response) => Call::Unavailable(format!("{url} answered {}", response.status())),
        Err(e) => Call::Unavailable(format!("{url}: {e}")),
    }
}

/// Charges held orders again, and finishes orders an instance left half-way (it was
/// killed mid-saga), every `orders.resume-every`.
async fn resume(orders: Orders) {
    loop {
        let every = orders
            .settings
            .get()
            .orders
            .resume_every
            .max(Duration::from_millis(100));
        tokio::time::sleep(every).await;
        let store = orders.store.clone();
        let Ok(all) = blocking(move || store.all::<Order>()).await else {
            continue;
        };
        let stale = now_ms().saturating_sub(10_000);
        for order in all {
            let due = order.status == Status::OnHold
                || (order.status == Status::Pending && order.updated_ms < stale);
            if !due {
                continue;
            }
            let span = tracing::info_span!("resume", order = %order.id);
            let before = order.status;
            let order = saga(&orders, order).instrument(span.clone()).await;
            if order.status != before {
                span.in_scope(|| {
                    tracing::info!(order = %order.id, status = ?order.status, "held order resumed");
                });
            }
            if let Err(e) = save(&orders.store, order).await {
                tracing::error!(error = %e, "saving a resumed order failed");
            }
        }
    }
}

async fn order(State(orders): State<Orders>, Path(id): Path<String>) -> Response {
    let store = orders.store.clone();
    let key = id.clone();
    match blocking(move || store.get::<Order>(&key)).await {
        Ok(Some(order)) => Json(order).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no order {id}")),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => storage(e),
    }
}

async fn list(State(orders): State<Orders>) -> Response {
    let store = orders.store.clone();
    match blocking(move || store.all::<Order>()).await {
        Ok(mut all) => {
            all.sort_by_key(|o| std::cmp::Reverse(o.updated_ms));
            all.truncate(100);
            Json(all).into_response()
        }
        Err(e) => storage(e),
    }
}
