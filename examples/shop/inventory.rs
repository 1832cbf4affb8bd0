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

/// Everything inventory keeps, in one document so that a reservation and the stock it
/// takes are written together (a process killed between two writes would otherwise
/// leave one without the other).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Shelves {
    stock: Stock,
    reservations: BTreeMap<String, Reservation>,
}

const SHELVES: &str = "shelves";

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
            if s.get::<Shelves>(SHELVES)?.is_none() {
                let reservations = BTreeMap::new();
                let stock = initial;
                s.put(
                    SHELVES,
                    &Shelves {
                        stock,
                        reservations,
                    },
                )?;
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

/// An order id as orders makes them (checked so a bad one cannot grow the document).
fn valid_order_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

async fn reserve(State(inventory): State<Inventory>, Json(request): Json<Reserve>) -> Response {
    if !common::valid_item(&request.item) || request.qty == 0 || !valid_order_id(&request.order_id)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "order_id, item and a positive qty are required",
        );
    }
    let store = inventory.store.clone();
    let Reserve {
        order_id,
        item,
        qty,
    } = request;
    let outcome = blocking(move || {
        store.locked(|s| {
            let mut shelves: Shelves = s.get(SHELVES)?.unwrap_or_default();
            if let Some(existing) = shelves.reservations.get(&order_id) {
                return Ok(Ok(existing.clone())); // a retry: the same answer
            }
            let available = shelves.stock.get(&item).copied().unwrap_or(0);
            if available < qty {
                return Ok(Err(available));
            }
            shelves.stock.insert(item.clone(), available - qty);
            let reservation = Reservation {
                order_id: order_id.clone(),
                item,
                qty,
                released: false,
            };
            shelves.reservations.insert(order_id, reservation.clone());
            s.put(SHELVES, &shelves)?;
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
        Err(e) => storage(e),
    }
}

async fn release(State(inventory): State<Inventory>, Path(order_id): Path<String>) -> Response {
    let store = inventory.store.clone();
    let id = order_id.clone();
    let outcome = blocking(move || {
        store.locked(|s| {
            let mut shelves: Shelves = s.get(SHELVES)?.unwrap_or_default();
            let Some(reservation) = shelves.reservations.get_mut(&id) else {
                return Ok(false);
            };
            if !reservation.released {
                reservation.released = true;
                let (item, qty) = (reservation.item.clone(), reservation.qty);
                let shelf = shelves.stock.entry(item).or_default();
                *shelf = shelf.saturating_add(qty);
                s.put(SHELVES, &shelves)?;
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
        Err(e) => storage(e),
    }
}

async fn stock(State(inventory): State<Inventory>) -> Response {
    let store = inventory.store.clone();
    match blocking(move || store.get::<Shelves>(SHELVES)).await {
        Ok(shelves) => Json(shelves.unwrap_or_default().stock).into_response(),
        Err(e) => storage(e),
    }
}

async fn item_stock(State(inventory): State<Inventory>, Path(item): Path<String>) -> Response {
    let store = inventory.store.clone();
    match blocking(move || store.get::<Shelves>(SHELVES)).await {
        Ok(shelves) => match shelves.unwrap_or_default().stock.get(&item) {
            Some(available) => {
                Json(serde_json::json!({ "item": item, "available": available })).into_response()
            }
            None => error(StatusCode::NOT_FOUND, format!("no item {item:?}")),
        },
        Err(e) => storage(e),
    }
}
