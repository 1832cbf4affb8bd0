//! inventory: stock per item, and reservations per order (idempotent, so a caller may
//! retry a reservation or a release after a lost answer).
//!
//! - `POST /reservations` `{"order_id", "item", "qty"}`: 201 with the reservation, or 409
//!   when there is not enough stock.
//! - `DELETE /reservations/{order_id}`: puts the stock back (the saga's compensation); 204.
//! - `GET /stock`, `GET /stock/{item}`: what is on the shelves.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::common::{self, BoxError, ServiceArgs, error, storage};
use crate::store::{Store, blocking};

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reservation {
    order_id: String,
    item: String,
    qty: u64,
    released: bool,
}

#[derive(Debug, Deserialize)]
struct Reserve {
    order_id: String,
    item: String,
    qty: u64,
}

type Stock = BTreeMap<String, u64>;

#[derive(Clone)]
struct Inventory {
    store: Store,
}

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("inventory", &args);
    let settings = app.live_config::<Settings>().await?;
    let store = Store::open(args.data.join("inventory"))?;
    // The first instance to start fills the shelves.
    let initial = settings.get().inventory.initial_stock.clone();
    let shelves = store.clone();
    blocking(move || {
        shelves.locked(|s| {
            if s.get::<Stock>("stock")?.is_none() {
                s.put("stock", &initial)?;
            }
            Ok(())
        })
    })
    .await?;

    let router = Router::new()
        .route("/reservations", post(reserve))
        .route("/reservations/{order_id}", delete(release))
        .route("/stock", get(stock))
        .route("/stock/{item}", get(item_stock))
        .with_state(Inventory { store });
    let running = app.router(router).start().await?;
    common::announce(running.local_addr());
    if args.stop_on_eof {
        common::stop_on_eof(running.shutdown_handle());
    }
    let _settings = settings; // kept live for as long as the service runs
    Ok(running.wait().await?)
}

async fn reserve(State(inventory): State<Inventory>, Json(request): Json<Reserve>) -> Response {
    if !common::valid_item(&request.item) || request.qty == 0 {
        return error(
            StatusCode::BAD_REQUEST,
            "item and a positive qty are required",
        );
    }
    let key = format!("reservation-{}", request.order_id);
    let store = inventory.store.clone();
    let Reserve {
        order_id,
        item,
        qty,
    } = request;
    let outcome = blocking(move || {
        store.locked(|s| {
            if let Some(existing) = s.get::<Reservation>(&key)? {
                return Ok(Ok(existing)); // a retry: the same answer
            }
            let mut stock: Stock = s.get("stock")?.unwrap_or_default();
            let available = stock.get(&item).copied().unwrap_or(0);
            if available < qty {
                return Ok(Err(available));
            }
            stock.insert(item.clone(), available - qty);
            let reservation = Reservation {
                order_id,
                item,
                qty,
                released: false,
            };
            s.put("stock", &stock)?;
            s.put(&key, &reservation)?;
            Ok(Ok(reservation))
        })
    })
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
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => storage(e),
    }
}

async fn release(State(inventory): State<Inventory>, Path(order_id): Path<String>) -> Response {
    let key = format!("reservation-{order_id}");
    let store = inventory.store.clone();
    let outcome = blocking(move || {
        store.locked(|s| {
            let Some(mut reservation) = s.get::<Reservation>(&key)? else {
                return Ok(false);
            };
            if !reservation.released {
                let mut stock: Stock = s.get("stock")?.unwrap_or_default();
                *stock.entry(reservation.item.clone()).or_default() += reservation.qty;
                reservation.released = true;
                s.put("stock", &stock)?;
                s.put(&key, &reservation)?;
            }
            Ok(true)
        })
    })
    .await;
    match outcome {
        Ok(true) => {
            tracing::info!(order = %order_id, "reservation released");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("no reservation for {order_id}"),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => storage(e),
    }
}

async fn stock(State(inventory): State<Inventory>) -> Response {
    let store = inventory.store.clone();
    match blocking(move || store.get::<Stock>("stock")).await {
        Ok(stock) => Json(stock.unwrap_or_default()).into_response(),
        Err(e) => storage(e),
    }
}

async fn item_stock(State(inventory): State<Inventory>, Path(item): Path<String>) -> Response {
    let store = inventory.store.clone();
    match blocking(move || store.get::<Stock>("stock")).await {
        Ok(stock) => match stock.unwrap_or_default().get(&item) {
            Some(available) => {
                Json(serde_json::json!({ "item": item, "available": available })).into_response()
            }
            None => error(StatusCode::NOT_FOUND, format!("no item {item:?}")),
        },
        Err(e) => storage(e),
    }
}
