//! inventory: stock per item, and reservations per order, in its own SQLite database
//! (`inventory.db`, shared by its instances). Reservations are idempotent per order, so a
//! caller may retry a reservation or a release after a lost answer.
//!
//! Two styles side by side: orders' saga calls `POST /reservations` and, to compensate,
//! `DELETE /reservations/{order_id}` (orchestration); and inventory itself reacts to the
//! `OrderRejected` events orders publishes by releasing what the order held
//! (choreography), recording each event in its inbox so that a redelivery releases
//! nothing twice. Whichever comes first releases; the other finds nothing left to do.
//!
//! - `POST /reservations` `{"order_id", "item", "qty"}`: 201 with the reservation, or 409
//!   when there is not enough stock.
//! - `DELETE /reservations/{order_id}`: puts the stock back; 204 (404: no reservation).
//! - `GET /stock` (available per item), `GET /stock/{item}` (available and reserved).

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use msa::events::sqlx::{self, Row};
use msa::events::{Store, Tx};
use msa::stream::message::Message;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::common::{self, BoxError, ServiceArgs, error, storage};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Settings {
    inventory: Section,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Section {
    #[serde(default)]
    initial_stock: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
struct Reservation {
    order_id: String,
    item: String,
    qty: i64,
    released: bool,
}

#[derive(Debug, Deserialize)]
struct Reserve {
    order_id: String,
    item: String,
    qty: u64,
}

#[derive(Clone)]
struct Inventory {
    store: Store,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stock (
    item      TEXT PRIMARY KEY,
    available BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id TEXT PRIMARY KEY,
    item     TEXT NOT NULL,
    qty      BIGINT NOT NULL,
    released BIGINT NOT NULL DEFAULT 0
);";

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("inventory", &args);
    let settings = app.live_config::<Settings>().await?;
    let store = common::database(&mut app, SCHEMA).await?;
    // The first instance to start fills the shelves.
    let mut tx = store.begin().await?;
    for (item, qty) in &settings.get().inventory.initial_stock {
        sqlx::query(
            "INSERT INTO stock (item, available) VALUES ($1, $2) ON CONFLICT (item) DO NOTHING",
        )
        .bind(item)
        .bind(i64::try_from(*qty)?)
        .execute(tx.conn())
        .await?;
    }
    tx.commit().await?;

    let inventory = Inventory { store };
    let router = Router::new()
        .route("/reservations", post(reserve))
        .route("/reservations/{order_id}", delete(release))
        .route("/stock", get(stock))
        .route("/stock/{item}", get(item_stock))
        .with_state(inventory.clone());
    let running = app
        .router(router)
        .stream(move |stream| {
            stream.consumer("released", move |event: Message<Value>| {
                let inventory = inventory.clone();
                async move { on_order_event(&inventory, event).await }
            })
        })
        .start()
        .await?;
    let _settings = settings; // kept live for as long as the service runs
    common::serve(running, &args).await
}

fn reservation(row: &msa::events::sqlx::any::AnyRow) -> Result<Reservation, sqlx::Error> {
    Ok(Reservation {
        order_id: row.try_get(0)?,
        item: row.try_get(1)?,
        qty: row.try_get(2)?,
        released: row.try_get::<i64, _>(3)? != 0,
    })
}

async fn reserve(State(inventory): State<Inventory>, Json(request): Json<Reserve>) -> Response {
    let qty = i64::try_from(request.qty).unwrap_or(0);
    if !common::valid_item(&request.item)
        || !(1..=1_000_000).contains(&qty)
        || !common::valid_order_id(&request.order_id)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "order_id, item and a positive qty are required",
        );
    }
    let outcome = async {
        let mut tx = inventory.store.begin().await?;
        let existing = sqlx::query(
            "SELECT order_id, item, qty, released FROM reservations WHERE order_id = $1",
        )
        .bind(&request.order_id)
        .fetch_optional(tx.conn())
        .await?;
        if let Some(row) = existing {
            return Ok(Ok(reservation(&row)?)); // a retry: the same answer
        }
        let taken = sqlx::query(
            "UPDATE stock SET available = available - $1 WHERE item = $2 AND available >= $1",
        )
        .bind(qty)
        .bind(&request.item)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if taken == 0 {
            let available: Option<i64> =
                sqlx::query_scalar("SELECT available FROM stock WHERE item = $1")
                    .bind(&request.item)
                    .fetch_optional(tx.conn())
                    .await?;
            return Ok(Err(available.unwrap_or(0)));
        }
        sqlx::query("INSERT INTO reservations (order_id, item, qty) VALUES ($1, $2, $3)")
            .bind(&request.order_id)
            .bind(&request.item)
            .bind(qty)
            .execute(tx.conn())
            .await?;
        tx.commit().await?;
        Ok::<_, msa::events::Error>(Ok(Reservation {
            order_id: request.order_id.clone(),
            item: request.item.clone(),
            qty,
            released: false,
        }))
    }
    .await;
    match outcome {
        Ok(Ok(reservation)) => {
            tracing::info!(order = %reservation.order_id, item = %reservation.item,
                qty = reservation.qty, "stock reserved");
            (StatusCode::CREATED, Json(reservation)).into_response()
        }
        Ok(Err(available)) => {
            tracing::info!(available, "not enough stock");
            error(
                StatusCode::CONFLICT,
                format!("out of stock: {available} left"),
            )
        }
        Err(e) => storage(e),
    }
}

/// Releases `order_id`'s reservation in `tx`: whether there was one (released now or
/// before).
async fn release_in(tx: &mut Tx, order_id: &str) -> Result<bool, msa::events::Error> {
    let row = sqlx::query("SELECT item, qty, released FROM reservations WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(tx.conn())
        .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    if row.try_get::<i64, _>(2)? == 0 {
        let (item, qty): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        sqlx::query("UPDATE reservations SET released = 1 WHERE order_id = $1")
            .bind(order_id)
            .execute(tx.conn())
            .await?;
        sqlx::query("UPDATE stock SET available = available + $1 WHERE item = $2")
            .bind(qty)
            .bind(&item)
            .execute(tx.conn())
            .await?;
        tracing::info!(order = %order_id, %item, qty, "reservation released");
    }
    Ok(true)
}

async fn release(State(inventory): State<Inventory>, Path(order_id): Path<String>) -> Response {
    let outcome = async {
        let mut tx = inventory.store.begin().await?;
        let found = release_in(&mut tx, &order_id).await?;
        tx.commit().await?;
        Ok::<_, msa::events::Error>(found)
    }
    .await;
    match outcome {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no reservation for {order_id}"),
        ),
        Err(e) => storage(e),
    }
}

/// Choreography: an order rejected elsewhere releases its reservation here, once.
async fn on_order_event(inventory: &Inventory, event: Message<Value>) -> Result<(), String> {
    if event.payload["type"] != "OrderRejected" {
        return Ok(());
    }
    let (Some(order_id), Some(message_id)) = (
        common::order_id(&event),
        msa::events::inbox::message_id(&event.headers),
    ) else {
        return Err("an order event without its ids".into());
    };
    let handled = async {
        let mut tx = inventory.store.begin().await?;
        if tx.receive_once("inventory", message_id).await? {
            release_in(&mut tx, order_id).await?;
        }
        tx.commit().await
    }
    .await;
    handled.map_err(|e| e.to_string())
}

async fn stock(State(inventory): State<Inventory>) -> Response {
    let rows = sqlx::query("SELECT item, available FROM stock ORDER BY item")
        .fetch_all(inventory.store.pool())
        .await;
    match rows {
        Ok(rows) => {
            let stock: BTreeMap<String, i64> = rows
                .iter()
                .filter_map(|row| Some((row.try_get(0).ok()?, row.try_get(1).ok()?)))
                .collect();
            Json(stock).into_response()
        }
        Err(e) => storage(e),
    }
}

async fn item_stock(State(inventory): State<Inventory>, Path(item): Path<String>) -> Response {
    let row = sqlx::query(
        "SELECT s.available, COALESCE((SELECT SUM(qty) FROM reservations r \
         WHERE r.item = s.item AND r.released = 0), 0) FROM stock s WHERE s.item = $1",
    )
    .bind(&item)
    .fetch_optional(inventory.store.pool())
    .await;
    match row {
        Ok(Some(row)) => {
            let available: i64 = row.try_get(0).unwrap_or_default();
            let reserved: i64 = row.try_get(1).unwrap_or_default();
            Json(json!({ "item": item, "available": available, "reserved": reserved }))
                .into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no item {item:?}")),
        Err(e) => storage(e),
    }
}
