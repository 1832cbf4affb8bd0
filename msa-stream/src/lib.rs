//! msa-stream: event-driven messaging with Spring Cloud Stream's model.
//!
//! Services publish events to destinations and others consume them in groups, so that a
//! failure in one does not cascade and each scales on its own. The model is Spring Cloud
//! Stream's, in Rust terms:
//!
//! - a [`Binder`](binder::Binder) connects the app to one broker; [`MemoryBinder`](memory::MemoryBinder)
//!   is the in-process default, `NatsBinder` (feature `nats`) binds to NATS JetStream,
//!   `RabbitBinder` (feature `rabbit`) to RabbitMQ with Spring Cloud Stream's topology;
//! - bindings come from the settings ([`StreamSettings`](config::StreamSettings):
//!   destination, group, content type, retries, partitions), named as Spring names them
//!   (`<fn>-in-0`, `<fn>-out-0`);
//! - handlers are `async` closures over serde types, registered by name as consumers or
//!   functions ([`StreamBuilder`](stream::StreamBuilder)); [`Stream::send`](stream::Stream::send)
//!   and [`send_message`](stream::Stream::send_message) send imperatively (Spring's
//!   `StreamBridge`).
//!
//! Delivery is at least once: a message is acknowledged only after its handler succeeds,
//! retried with backoff (`max-attempts`, `back-off-*`) in the consuming instance, then sent
//! to the dead-letter destination with the reason in its headers; a payload that does not
//! decode goes there at once. Messages with one key keep their order within a group when
//! the input is partitioned and at any concurrency. The producer's trace context travels
//! in the message's headers, so the consumer's span continues the producer's trace.
//!
//! # Examples
//!
//! ```
//! use msa_stream::config::StreamSettings;
//! use msa_stream::memory::MemoryBinder;
//! use msa_stream::message::Message;
//! use msa_stream::stream::StreamBuilder;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct OrderPlaced { id: u64 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let settings: StreamSettings = serde_json::from_value(serde_json::json!({
//!     "bindings": { "billing-in-0": { "destination": "orders", "group": "billing" } }
//! }))?;
//! let (seen, mut saw) = tokio::sync::mpsc::unbounded_channel();
//! let stream = StreamBuilder::new(MemoryBinder::new(), settings)
//!     .consumer("billing", move |order: Message<OrderPlaced>| {
//!         let seen = seen.clone();
//!         async move { seen.send(order.payload.id).map_err(|e| e.to_string()) }
//!     })
//!     .start()
//!     .await?;
//! stream.send_message("orders", Message::new(OrderPlaced { id: 7 }).with_key("7")).await?;
//! assert_eq!(saw.recv().await, Some(7));
//! stream.shutdown().await;
//! # Ok(()) }
//! ```

pub mod binder;
pub mod bus;
pub mod config;
pub mod memory;
pub mod message;
mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbit")]
pub mod rabbit;
pub mod stream;
