//! orders: an event-sourced `Order` (its events are its state, in `orders.db`), published
//! through the outbox to the `orders` destination, and placed by a saga over inventory and
//! payments (orchestration):
//!
//! 0. `open` — nothing forward; its compensation, which runs last whenever the saga fails,
//!    records `OrderRejected` with the reason;
//! 1. `reserve` the stock (inventory) — not enough: the saga compensates, `REJECTED`;
//!    compensation: release the reservation (inventory also releases on `OrderRejected`,
//!    by choreography);
//! 2. `charge` the payment (payments) — declined: compensated, `REJECTED`. Payments
//!    unavailable (down, failing, its circuit breaker open): the order is `ON_HOLD`
//!    (`OrderHeld`), the stock stays reserved, and the step runs again every
//!    `orders.resume-every` until payments answers; compensation: refund;
//! 3. `confirm` — records `OrderConfirmed`.
//!
//! The order's first event and the saga's start commit in one transaction; the saga's
//! state is persisted after every step, so an instance killed mid-saga leaves it to the
//! other instance (or itself, restarted) to finish. Every call goes through the client
//! `App::client` builds: trace context propagated, balanced over the registry's instances,
//! guarded by the Resilience4j stack `orders.yml` names (retry to another instance,
//! circuit breaker, time limiter, bulkhead). Reservations and charges are idempotent per
//! order id, so retries and re-runs may resend them.
//!
//! - `POST /orders` `{"item": "widget", "qty": 2}`: 201 (`CONFIRMED` or `REJECTED`), 202
//!   (`ON_HOLD`, or still running), 400 for a bad order, 503 while `orders.accepting` is
//!   false or inventory is unavailable.
//! - `GET /orders/{id}` (the aggregate, folded from its events), `GET /orders` (a read
//!   model of the newest 100, kept by a projection of the event store).
//! - `GET /actuator/sagas`: running, held and failed sagas.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use msa::config::client::LiveConfig;
use msa::core::metrics::UriTemplate;
use msa::events::event_store::RecordedEvent;
use msa::events::projection::{Projection, Projector};
use msa::events::saga::{Orchestrator, Saga, StepContext, StepError};
use msa::events::sqlx::{self, Row};
use msa::events::{Aggregate, EventStore, Tx};
use reqwest_middleware::ClientWithMiddleware;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{self, BoxError, ServiceArgs, cents, error, storage};

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
enum Status {
    #[default]
    Pending,
    Confirmed,
    Rejected,
    OnHold,
}

/// The order: the fold of its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
}

/// What happens to an order: published to the `orders` destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum OrderEvent {
    #[serde(rename = "OrderPlaced")]
    Placed {
        id: String,
        item: String,
        qty: u64,
        unit_price: f64,
        total: f64,
        currency: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace_id: Option<String>,
    },
    #[serde(rename = "OrderHeld")]
    Held { reason: String },
    #[serde(rename = "OrderConfirmed")]
    Confirmed { total: f64 },
    #[serde(rename = "OrderRejected")]
    Rejected { reason: String },
}

#[derive(Debug, Clone)]
enum Command {
    Hold(String),
    Confirm,
    Reject(String),
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} was never placed")]
struct NotPlaced(String);

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = Command;
    type Event = OrderEvent;
    type Error = NotPlaced;

    fn handle(&self, command: Command) -> Result<Vec<OrderEvent>, NotPlaced> {
        if self.id.is_empty() {
            return Err(NotPlaced(String::new()));
        }
        let open = matches!(self.status, Status::Pending | Status::OnHold);
        Ok(match command {
            // Repeats (a step run again) change nothing.
            Command::Hold(_) if self.status != Status::Pending => vec![],
            Command::Hold(reason) => vec![OrderEvent::Held { reason }],
            Command::Confirm if open => vec![OrderEvent::Confirmed { total: self.total }],
            Command::Reject(reason) if open => vec![OrderEvent::Rejected { reason }],
            Command::Confirm | Command::Reject(_) => vec![],
        })
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed {
                id,
                item,
                qty,
                unit_price,
                total,
                currency,
                trace_id,
            } => {
                *self = Order {
                    id: id.clone(),
                    item: item.clone(),
                    qty: *qty,
                    unit_price: *unit_price,
                    total: *total,
                    currency: currency.clone(),
                    status: Status::Pending,
                    reason: None,
                    trace_id: trace_id.clone(),
                };
            }
            OrderEvent::Held { reason } => {
                self.status = Status::OnHold;
                self.reason = Some(reason.clone());
            }
            OrderEvent::Confirmed { .. } => {
                self.status = Status::Confirmed;
                self.reason = None;
            }
            OrderEvent::Rejected { reason } => {
                self.status = Status::Rejected;
                self.reason = Some(reason.clone());
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    item: String,
    qty: u64,
}

/// What the saga carries from step to step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Placing {
    order_id: String,
    item: String,
    qty: u64,
    amount: f64,
    currency: String,
}

#[derive(Clone)]
struct Orders {
    events: EventStore,
    sagas: Orchestrator,
    settings: LiveConfig<Settings>,
}

/// A call's outcome, as a saga step sees it.
enum Call {
    Done,
    /// The service said no (4xx), with its reason.
    Refused(String),
    /// The service could not answer (down, 5xx, timeout, breaker open).
    Unavailable(String),
}

/// The reason of an order rejected because inventory could not be reached.
const UNAVAILABLE: &str = "inventory is unavailable";

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("orders", &args);
    let settings = app.live_config::<Settings>().await?;
    let store = common::database(&mut app, RECENT_SCHEMA).await?;
    let events = EventStore::new(store.clone())
        .snapshot_every(20)
        .publish(Order::TYPE, "order-events");
    let saga = place_order(app.client(), events.clone(), settings.clone());
    let sagas = Orchestrator::new(store)
        .saga(saga)
        .poll(Duration::from_millis(500))
        .lease(Duration::from_secs(5))
        .compensation_attempts(30);
    let orders = Orders {
        events: events.clone(),
        sagas: sagas.clone(),
        settings,
    };
    let router = Router::new()
        .route("/orders", get(list).post(place))
        .route("/orders/{id}", get(order))
        .with_state(orders);
    let recent = Projector::new(events, Recent)?;
    let running = app
        .router(router)
        .sagas(sagas)
        .projection(recent)
        .start()
        .await?;
    common::serve(running, &args).await
}

/// The saga that places an order: see the module.
fn place_order(
    client: ClientWithMiddleware,
    events: EventStore,
    settings: LiveConfig<Settings>,
) -> Saga<Placing> {
    let (reserve_client, release_client) = (client.clone(), client.clone());
    let (charge_client, refund_client) = (client.clone(), client);
    let (reject_events, hold_events, confirm_events) = (events.clone(), events.clone(), events);
    Saga::<Placing>::new("place-order")
        .step("open", |_, placing| async move { Ok::<_, String>(placing) })
        .compensate(move |context: StepContext, placing: Placing| {
            let events = reject_events.clone();
            async move {
                // "<step>: <reason>" → the reason.
                let error = context.error.unwrap_or_default();
                let reason = error.split_once(": ").map_or(error.as_str(), |(_, r)| r);
                execute(&events, &placing.order_id, Command::Reject(reason.to_owned())).await?;
                tracing::info!(order = %placing.order_id, %reason, "order rejected");
                Ok::<_, String>(placing)
            }
        })
        .step("reserve", move |_, placing: Placing| {
            let client = reserve_client.clone();
            async move {
                let body = json!({ "order_id": placing.order_id, "item": placing.item, "qty": placing.qty });
                match call(&client, reqwest::Method::POST, "/reservations", "inventory/reservations", Some(body)).await {
                    Call::Done => Ok(placing),
                    Call::Refused(reason) => Err(StepError::failed(reason)),
                    Call::Unavailable(reason) => {
                        tracing::warn!(order = %placing.order_id, %reason, "inventory unavailable");
                        Err(StepError::failed(UNAVAILABLE))
                    }
                }
            }
        })
        .timeout(Duration::from_secs(10))
        .compensate(move |_, placing: Placing| {
            let client = release_client.clone();
            async move {
                let path = format!("inventory/reservations/{}", placing.order_id);
                undo(&client, "/reservations/{order_id}", &path).await.map_err(|reason| format!("releasing the stock: {reason}"))?;
                Ok::<_, String>(placing)
            }
        })
        .step("charge", move |_, placing: Placing| {
            let (client, events, settings) = (charge_client.clone(), hold_events.clone(), settings.clone());
            async move {
                let body = json!({ "order_id": placing.order_id, "amount": placing.amount, "currency": placing.currency });
                match call(&client, reqwest::Method::POST, "/payments", "payments/payments", Some(body)).await {
                    Call::Done => Ok(placing),
                    Call::Refused(reason) => Err(StepError::failed(format!("payment declined: {reason}"))),
                    Call::Unavailable(reason) => {
                        // The fallback: keep the reservation, answer now, charge later.
                        let reason = format!(
                            "payments is unavailable ({reason}); the order will be charged when it is back"
                        );
                        execute(&events, &placing.order_id, Command::Hold(reason.clone())).await?;
                        tracing::warn!(order = %placing.order_id, "payments unavailable; order on hold");
                        let every = settings.get().orders.resume_every.max(Duration::from_millis(100));
                        Err(StepError::retry_later(reason, every))
                    }
                }
            }
        })
        .timeout(Duration::from_secs(15))
        .compensate(move |_, placing: Placing| {
            let client = refund_client.clone();
            async move {
                let path = format!("payments/payments/{}", placing.order_id);
                undo(&client, "/payments/{order_id}", &path).await.map_err(|reason| format!("refunding: {reason}"))?;
                Ok::<_, String>(placing)
            }
        })
        .step("confirm", move |_, placing: Placing| {
            let events = confirm_events.clone();
            async move {
                execute(&events, &placing.order_id, Command::Confirm).await?;
                tracing::info!(order = %placing.order_id, "order confirmed");
                Ok::<_, String>(placing)
            }
        })
}

/// Runs `command` against order `id`.
async fn execute(events: &EventStore, id: &str, command: Command) -> Result<Order, String> {
    events
        .execute::<Order>(id, command)
        .await
        .map(|loaded| loaded.state)
        .map_err(|e| e.to_string())
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
    let id = format!("{:016x}", fastrand::u64(..));
    let total = total as f64 / 100.0;
    tracing::info!(order = %id, item = %request.item, qty = request.qty, total, "order received");
    let placed = OrderEvent::Placed {
        id: id.clone(),
        item: request.item.clone(),
        qty: request.qty,
        unit_price: price,
        total,
        currency: settings.shop.currency.clone(),
        trace_id: msa::telemetry::current_trace_id(),
    };
    let placing = Placing {
        order_id: id.clone(),
        item: request.item,
        qty: request.qty,
        amount: total,
        currency: settings.shop.currency.clone(),
    };
    // The order's first event and its saga, together.
    let started = async {
        let store = orders.events.store();
        let mut tx = store.begin().await?;
        orders
            .events
            .append_in::<Order>(&mut tx, &id, 0, &[placed], &Value::Null)
            .await?;
        orders
            .sagas
            .start_in(&mut tx, "place-order", &id, placing)
            .await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = started {
        return storage(e);
    }
    orders.sagas.resume(&id);
    // Answer once the saga has finished, or the order is held.
    let waited = orders
        .sagas
        .wait_for(&id, Duration::from_secs(20), |saga| saga.attempts > 0)
        .await;
    if let Err(e) = waited {
        return storage(e);
    }
    let order = match orders.events.load::<Order>(&id).await {
        Ok(loaded) => loaded.state,
        Err(e) => return storage(e),
    };
    let status = match order.status {
        Status::Rejected if order.reason.as_deref() == Some(UNAVAILABLE) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Status::Confirmed | Status::Rejected => StatusCode::CREATED,
        Status::OnHold | Status::Pending => StatusCode::ACCEPTED,
    };
    (status, Json(order)).into_response()
}

async fn order(State(orders): State<Orders>, Path(id): Path<String>) -> Response {
    if id.is_empty() || id.len() > 64 {
        return error(StatusCode::BAD_REQUEST, "an order id is 1 to 64 characters");
    }
    match orders.events.load::<Order>(&id).await {
        Ok(loaded) if loaded.version > 0 => Json(loaded.state).into_response(),
        Ok(_) => error(StatusCode::NOT_FOUND, format!("no order {id}")),
        Err(e) => storage(e),
    }
}

/// The read model behind `GET /orders`: one row per order, kept by [`Recent`].
const RECENT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS recent_orders (
    id         TEXT PRIMARY KEY,
    body       TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);";

/// Folds order events into `recent_orders`.
struct Recent;

#[async_trait::async_trait]
impl Projection for Recent {
    fn name(&self) -> &str {
        "recent-orders"
    }

    async fn apply(&self, tx: &mut Tx, event: &RecordedEvent) -> Result<(), msa::events::Error> {
        if event.stream_type != Order::TYPE {
            return Ok(());
        }
        let Ok(event_of) = serde_json::from_value::<OrderEvent>(event.payload.clone()) else {
            return Ok(());
        };
        let row = sqlx::query("SELECT body FROM recent_orders WHERE id = $1")
            .bind(&event.stream_id)
            .fetch_optional(tx.conn())
            .await?;
        let mut order: Order = row
            .and_then(|row| row.try_get::<String, _>(0).ok())
            .and_then(|body| serde_json::from_str(&body).ok())
            .unwrap_or_default();
        order.apply(&event_of);
        sqlx::query(
            "INSERT INTO recent_orders (id, body, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
        )
        .bind(&event.stream_id)
        .bind(serde_json::to_string(&order).unwrap_or_default())
        .bind(event.recorded_at)
        .execute(tx.conn())
        .await?;
        Ok(())
    }

    async fn reset(&self, tx: &mut Tx) -> Result<(), msa::events::Error> {
        sqlx::query("DELETE FROM recent_orders")
            .execute(tx.conn())
            .await?;
        Ok(())
    }
}

async fn list(State(orders): State<Orders>) -> Response {
    let rows = sqlx::query("SELECT body FROM recent_orders ORDER BY updated_at DESC LIMIT 100")
        .fetch_all(orders.events.store().pool())
        .await;
    match rows {
        Ok(rows) => {
            let all: Vec<Value> = rows
                .iter()
                .filter_map(|row| row.try_get::<String, _>(0).ok())
                .filter_map(|body| serde_json::from_str(&body).ok())
                .collect();
            Json(all).into_response()
        }
        Err(e) => storage(e),
    }
}

/// Undoes what a step did at `path` with a `DELETE` (`uri`: its template): done when the
/// service answers, or says there is nothing to undo (4xx); why not when it cannot answer.
async fn undo(client: &ClientWithMiddleware, uri: &'static str, path: &str) -> Result<(), String> {
    match call(client, reqwest::Method::DELETE, uri, path, None).await {
        Call::Done | Call::Refused(_) => Ok(()),
        Call::Unavailable(reason) => Err(reason),
    }
}

/// Calls a service (`uri` is the path template its metrics are labelled with).
async fn call(
    client: &ClientWithMiddleware,
    method: reqwest::Method,
    uri: &'static str,
    path: &str,
    body: Option<Value>,
) -> Call {
    let url = format!("http://{path}");
    let mut request = client
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
