//! The producer's trace crosses to the consumer on every binder (`suite/`). A binary of its
//! own, because it installs a tracing subscriber for its thread (callsite interest is
//! process-wide).

mod suite;

use msa_stream::memory::MemoryBinder;

#[tokio::test(flavor = "current_thread")]
async fn the_trace_crosses_from_producer_to_consumer_in_process() {
    suite::the_trace_crosses_from_producer_to_consumer(&MemoryBinder::new()).await;
}

#[cfg(feature = "nats")]
#[path = "../../tests/support/nats.rs"]
mod nats_server;

#[cfg(feature = "nats")]
#[tokio::test(flavor = "current_thread")]
async fn the_trace_crosses_from_producer_to_consumer_over_nats() {
    let store = tempfile::tempdir().unwrap();
    let server = nats_server::Server::start(store.path(), nats_server::free_port());
    suite::the_trace_crosses_from_producer_to_consumer(&server.binder().await).await;
}

#[cfg(feature = "rabbit")]
#[path = "../../tests/support/rabbit.rs"]
mod rabbit_server;

#[cfg(feature = "rabbit")]
#[tokio::test(flavor = "current_thread")]
async fn the_trace_crosses_from_producer_to_consumer_over_rabbitmq() {
    let broker = rabbit_server::shared();
    let binder = broker.binder(&rabbit_server::vhost()).await;
    suite::the_trace_crosses_from_producer_to_consumer(&binder).await;
}
