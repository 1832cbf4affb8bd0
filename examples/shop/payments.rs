//! payments: charges per order, idempotent (charging an order again answers the first
//! decision), declining amounts above the configured limit.
//!
//! - `POST /payments` `{"order_id", "amount", "currency"}`: 201 charged, or 402 declined.
//! - `GET /payments/{order_id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use msa::config::client::LiveConfig;
use serde::{Deserialize, Serialize};

use crate::common::{self, BoxError, ServiceArgs, cents, error, storage};
use crate::store::{Store, blocking};

#[derive(Debug, Clone, Deserialize)]
struct Settings {
    payments: Section,
}

#[derive(Debug, Clone, Deserialize)]
struct Section {
    /// Charges above this are declined.
    limit: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Payment {
    order_id: String,
    amount: f64,
    currency: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Charge {
    order_id: String,
    amount: f64,
    #[serde(default)]
    currency: String,
}

#[derive(Clone)]
struct Payments {
    store: Store,
    settings: LiveConfig<Settings>,
}

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("payments", &args);
    let settings = app.live_config::<Settings>().await?;
    let store = Store::open(args.data.join("payments"))?;
    let router = Router::new()
        .route("/payments", post(charge))
        .route("/payments/{order_id}", get(payment))
        .with_state(Payments { store, settings });
    let running = app.router(router).start().await?;
    common::announce(running.local_addr());
    if args.stop_on_eof {
        common::stop_on_eof(running.shutdown_handle());
    }
    Ok(running.wait().await?)
}

async fn charge(State(payments): State<Payments>, Json(request): Json<Charge>) -> Response {
    if !(request.amount.is_finite() && request.amount > 0.0) {
        return error(StatusCode::BAD_REQUEST, "amount must be positive");
    }
    let limit = payments.settings.get().payments.limit;
    let key = format!("payment-{}", request.order_id);
    let store = payments.store.clone();
    let outcome = blocking(move || {
        store.locked(|s| {
            if let Some(existing) = s.get::<Payment>(&key)? {
                return Ok(existing); // a retry: the first decision stands
            }
            let declined = cents(request.amount) > cents(limit);
            let payment = Payment {
                order_id: request.order_id,
                amount: request.amount,
                currency: request.currency,
                status: if declined { "DECLINED" } else { "CHARGED" }.to_owned(),
                reason: declined
                    .then(|| format!("{} is over the limit of {limit}", request.amount)),
            };
            s.put(&key, &payment)?;
            Ok(payment)
        })
    })
    .await;
    match outcome {
        Ok(payment) if payment.status == "CHARGED" => {
            tracing::info!(order = %payment.order_id, amount = payment.amount, "payment charged");
            (StatusCode::CREATED, Json(payment)).into_response()
        }
        Ok(payment) => {
            tracing::info!(order = %payment.order_id, amount = payment.amount, limit,
                "payment declined");
            (StatusCode::PAYMENT_REQUIRED, Json(payment)).into_response()
        }
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => storage(e),
    }
}

async fn payment(State(payments): State<Payments>, Path(order_id): Path<String>) -> Response {
    let store = payments.store.clone();
    let key = format!("payment-{order_id}");
    match blocking(move || store.get::<Payment>(&key)).await {
        Ok(Some(payment)) => Json(payment).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no payment for {order_id}")),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => storage(e),
    }
}
