//! notifications: what a customer would be emailed about their order, logged (a real
//! estate would hand it to a mail service). It reacts to the events orders publishes
//! (choreography), each once (its inbox in `notifications.db`), and keeps what an email
//! needs from `OrderPlaced`.

use msa::events::Store;
use msa::events::sqlx::{self, Row};
use msa::stream::message::Message;
use serde_json::Value;

use crate::common::{self, BoxError, ServiceArgs};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    summary  TEXT NOT NULL
);";

pub(crate) async fn run(args: ServiceArgs) -> Result<(), BoxError> {
    let mut app = common::app("notifications", &args);
    let store = common::database(&mut app, SCHEMA).await?;
    let running = app
        .stream(move |stream| {
            stream.consumer("notify", move |event: Message<Value>| {
                let store = store.clone();
                async move { notify(&store, event).await.map_err(|e| e.to_string()) }
            })
        })
        .start()
        .await?;
    common::serve(running, &args).await
}

async fn notify(store: &Store, event: Message<Value>) -> Result<(), BoxError> {
    let order_id = common::order_id(&event).ok_or("an order event without its order id")?;
    let message_id =
        msa::events::inbox::message_id(&event.headers).ok_or("an order event without its id")?;
    let payload = &event.payload;
    let mut tx = store.begin().await?;
    if !tx.receive_once("notifications", message_id).await? {
        return Ok(());
    }
    if payload["type"] == "OrderPlaced" {
        let summary = format!(
            "{} x {} for {} {}",
            payload["qty"],
            common::text(payload, "item", 64),
            payload["total"],
            common::text(payload, "currency", 8)
        );
        sqlx::query("INSERT INTO orders (order_id, summary) VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING")
            .bind(order_id)
            .bind(summary)
            .execute(tx.conn())
            .await?;
    }
    let summary: String = sqlx::query("SELECT summary FROM orders WHERE order_id = $1")
        .bind(order_id)
        .fetch_optional(tx.conn())
        .await?
        .and_then(|row| row.try_get(0).ok())
        .unwrap_or_else(|| "your order".to_owned());
    let email = match payload["type"].as_str() {
        Some("OrderConfirmed") => Some(format!("Order {order_id} confirmed: {summary}.")),
        Some("OrderRejected") => Some(format!(
            "Order {order_id} could not be completed ({}): {summary}. Nothing was charged.",
            Some(common::text(payload, "reason", 256))
                .filter(|reason| !reason.is_empty())
                .unwrap_or_else(|| "rejected".to_owned())
        )),
        Some("OrderHeld") => Some(format!(
            "Order {order_id} is on hold while payment is arranged: {summary}."
        )),
        _ => None,
    };
    tx.commit().await?;
    if let Some(email) = email {
        tracing::info!(order = %order_id, %email, "email to the customer");
    }
    Ok(())
}
