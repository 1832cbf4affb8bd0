//! order-history: the shop's orders as customers look them up, answered from its own read
//! model (CQRS) in its own database (`order-history.db`), fed by the events orders
//! publishes (choreography: orders does not know it exists). Each event is applied once
//! (the inbox) and in order (an event older than what the row shows is ignored), so
//! redeliveries and restarts leave the model as the events say.
//!
//! - `GET /history` (`?limit=`, newest first, at most 500), `GET /history/{order_id}`;
//!   through the gateway: `GET /api/orders/history`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use msa::events::Store;
use msa::events::sqlx::{self, Row};
use msa::stream::message::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::common::{self, BoxError, ServiceArgs, error, now_ms, storage};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS history (
    order_id   TEXT PRIMARY KEY,
    item       TEXT NOT NULL DEFAULT '',
    qty        BIGINT NOT NULL DEFAULT 0,
    total      TEXT NOT NULL DEFAULT '0',
    currency   TEXT NOT NULL DEFAULT '',
    status     TEXT NOT NULL,
    reason     TEXT,
    version    BIGINT NOT NULL,
    placed_at  BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);";

#[derive(Debug, Serialize)]
struct Entry {
    order_id: String,
    item: String,
    qty: i64,
    total: f64,
    currency: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    placed_at: i64,
    updated_at: i64,
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<u32>,
}

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("order-history", &args);
    let store = common::database(&mut app, SCHEMA).await?;
    let router = Router::new()
        .route("/history", get(list))
        .route("/history/{order_id}", get(one))
        .with_state(store.clone());
    let running = app
        .router(router)
        .stream(move |stream| {
            stream.consumer("history", move |event: Message<Value>| {
                let store = store.clone();
                async move { record(&store, event).await.map_err(|e| e.to_string()) }
            })
        })
        .start()
        .await?;
    common::serve(running, &args).await
}

/// Applies one order event to the read model, once.
async fn record(store: &Store, event: Message<Value>) -> Result<(), BoxError> {
    let order_id = common::order_id(&event).ok_or("an order event without its order id")?;
    let message_id =
        msa::events::inbox::message_id(&event.headers).ok_or("an order event without its id")?;
    let version: i64 = event
        .headers
        .get(msa::events::event_store::SEQUENCE)
        .and_then(|v| v.parse().ok())
        .ok_or("an order event without its sequence")?;
    let payload = &event.payload;
    let now = now_ms();
    let mut tx = store.begin().await?;
    if !tx.receive_once("order-history", message_id).await? {
        return Ok(()); // seen before
    }
    let reason = || Some(common::text(payload, "reason", 1024));
    let (status, reason) = match payload["type"].as_str() {
        Some("OrderPlaced") => ("PENDING", None),
        Some("OrderHeld") => ("ON_HOLD", reason()),
        Some("OrderConfirmed") => ("CONFIRMED", None),
        Some("OrderRejected") => ("REJECTED", reason()),
        _ => {
            tx.commit().await?;
            return Ok(());
        }
    };
    // Every event creates the row (an OrderPlaced may arrive after a later event of the
    // same order only if published out of order, which the outbox does not do; the row
    // is made either way), and an event updates it only if newer than what it shows.
    sqlx::query(
        "INSERT INTO history (order_id, status, reason, version, placed_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) \
         ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
         version = excluded.version, updated_at = excluded.updated_at \
         WHERE history.version < excluded.version",
    )
    .bind(order_id)
    .bind(status)
    .bind(reason)
    .bind(version)
    .bind(now)
    .execute(tx.conn())
    .await?;
    if payload["type"] == "OrderPlaced" {
        sqlx::query(
            "UPDATE history SET item = $1, qty = $2, total = $3, currency = $4, placed_at = $5 \
             WHERE order_id = $6",
        )
        .bind(common::text(payload, "item", 64))
        .bind(payload["qty"].as_i64().unwrap_or_default())
        .bind(payload["total"].as_f64().unwrap_or_default().to_string())
        .bind(common::text(payload, "currency", 8))
        .bind(now)
        .bind(order_id)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;
    tracing::info!(order = %order_id, status, "history updated");
    Ok(())
}

const COLUMNS: &str = "order_id, item, qty, total, currency, status, reason, placed_at, updated_at";

fn entry(row: &msa::events::sqlx::any::AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        order_id: row.try_get(0)?,
        item: row.try_get(1)?,
        qty: row.try_get(2)?,
        total: row.try_get::<String, _>(3)?.parse().unwrap_or_default(),
        currency: row.try_get(4)?,
        status: row.try_get(5)?,
        reason: row.try_get(6)?,
        placed_at: row.try_get(7)?,
        updated_at: row.try_get(8)?,
    })
}

async fn list(State(store): State<Store>, Query(limit): Query<Limit>) -> Response {
    let limit = limit.limit.unwrap_or(100);
    if limit > 500 {
        return error(StatusCode::BAD_REQUEST, "limit: at most 500");
    }
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM history ORDER BY placed_at DESC, order_id LIMIT $1"
    ))
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await;
    match rows.map(|rows| rows.iter().map(entry).collect::<Result<Vec<_>, _>>()) {
        Ok(Ok(entries)) => Json(entries).into_response(),
        Ok(Err(e)) | Err(e) => storage(e),
    }
}

async fn one(State(store): State<Store>, Path(order_id): Path<String>) -> Response {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM history WHERE order_id = $1"
    ))
    .bind(&order_id)
    .fetch_optional(store.pool())
    .await;
    match row {
        Ok(Some(row)) => match entry(&row) {
            Ok(entry) => Json(entry).into_response(),
            Err(e) => storage(e),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no order {order_id}")),
        Err(e) => storage(e),
    }
}
