//! payments: charges per order in its own SQLite database (`payments.db`), idempotent
//! (charging an order again answers the first decision: no order is charged twice),
//! declining amounts above the configured limit.
//!
//! - `POST /payments` `{"order_id", "amount", "currency"}`: 201 charged, or 402 declined.
//! - `DELETE /payments/{order_id}`: refunds a charge (the saga's compensation when the
//!   charge's answer was lost); 204.
//! - `GET /payments/{order_id}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use msa::config::client::LiveConfig;
use msa::events::Store;
use msa::events::sqlx::{self, Row};
use serde::{Deserialize, Serialize};

use crate::common::{self, BoxError, ServiceArgs, cents, error, storage};

#[derive(Debug, Clone, Deserialize)]
struct Settings {
    payments: Section,
}

#[derive(Debug, Clone, Deserialize)]
struct Section {
    /// Charges above this are declined.
    limit: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Payment {
    order_id: String,
    amount: f64,
    currency: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS payments (
    order_id     TEXT PRIMARY KEY,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL,
    reason       TEXT
);";

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("payments", &args);
    let settings = app.live_config::<Settings>().await?;
    let store = common::database(&mut app, SCHEMA).await?;
    let router = Router::new()
        .route("/payments", post(charge))
        .route("/payments/{order_id}", get(payment).delete(refund))
        .with_state(Payments { store, settings });
    let running = app.router(router).start().await?;
    common::serve(running, &args).await
}

fn payment_of(row: &msa::events::sqlx::any::AnyRow) -> Result<Payment, sqlx::Error> {
    Ok(Payment {
        order_id: row.try_get(0)?,
        amount: row.try_get::<i64, _>(1)? as f64 / 100.0,
        currency: row.try_get(2)?,
        status: row.try_get(3)?,
        reason: row.try_get(4)?,
    })
}

const COLUMNS: &str = "order_id, amount_cents, currency, status, reason";

async fn charge(State(payments): State<Payments>, Json(request): Json<Charge>) -> Response {
    if !(request.amount.is_finite() && request.amount > 0.0 && request.amount < 1e12) {
        return error(StatusCode::BAD_REQUEST, "amount must be positive");
    }
    if !common::valid_order_id(&request.order_id) || request.currency.len() > 8 {
        return error(
            StatusCode::BAD_REQUEST,
            "a valid order_id and currency are required",
        );
    }
    let limit = payments.settings.get().payments.limit;
    let declined = cents(request.amount) > cents(limit);
    let reason = declined.then(|| format!("{} is over the limit of {limit}", request.amount));
    let outcome = async {
        let mut tx = payments.store.begin().await?;
        // The first decision stands: a retried charge inserts nothing.
        sqlx::query(
            "INSERT INTO payments (order_id, amount_cents, currency, status, reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(&request.order_id)
        .bind(cents(request.amount))
        .bind(&request.currency)
        .bind(if declined { "DECLINED" } else { "CHARGED" })
        .bind(reason)
        .execute(tx.conn())
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
        ))
        .bind(&request.order_id)
        .fetch_one(tx.conn())
        .await?;
        tx.commit().await?;
        Ok::<_, msa::events::Error>(payment_of(&row)?)
    }
    .await;
    match outcome {
        Ok(payment) if payment.status == "CHARGED" => {
            tracing::info!(order = %payment.order_id, amount = payment.amount, "payment charged");
            (StatusCode::CREATED, Json(payment)).into_response()
        }
        Ok(payment) => {
            tracing::info!(order = %payment.order_id, amount = payment.amount, limit,
                status = %payment.status, "payment declined");
            (StatusCode::PAYMENT_REQUIRED, Json(payment)).into_response()
        }
        Err(e) => storage(e),
    }
}

async fn refund(State(payments): State<Payments>, Path(order_id): Path<String>) -> Response {
    let refunded = sqlx::query(
        "UPDATE payments SET status = 'REFUNDED' WHERE order_id = $1 AND status = 'CHARGED'",
    )
    .bind(&order_id)
    .execute(payments.store.pool())
    .await;
    match refunded {
        Ok(done) => {
            if done.rows_affected() == 1 {
                tracing::info!(order = %order_id, "payment refunded");
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => storage(e),
    }
}

async fn payment(State(payments): State<Payments>, Path(order_id): Path<String>) -> Response {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM payments WHERE order_id = $1"
    ))
    .bind(&order_id)
    .fetch_optional(payments.store.pool())
    .await;
    match row {
        Ok(Some(row)) => match payment_of(&row) {
            Ok(payment) => Json(payment).into_response(),
            Err(e) => storage(e),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no payment for {order_id}")),
        Err(e) => storage(e),
    }
}
