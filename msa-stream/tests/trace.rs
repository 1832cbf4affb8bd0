//! The producer's trace crosses to the consumer: the consumer's span is a child of the
//! producer's, so its logs carry the producer's trace id. A binary of its own, because it
//! installs a tracing subscriber for its thread (callsite interest is process-wide).

use std::time::Duration;

use msa_stream::memory::MemoryBinder;
use msa_stream::message::Message;
use msa_stream::stream::StreamBuilder;
use serde_json::json;

#[tokio::test(flavor = "current_thread")]
async fn the_trace_crosses_from_producer_to_consumer() {
    let (dispatch, _guard) = msa_core::telemetry::Telemetry::new("stream-test")
        .writer(std::io::sink)
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);
    let binder = MemoryBinder::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = StreamBuilder::new(
        binder.clone(),
        serde_json::from_value(
            json!({ "bindings": { "in-in-0": { "destination": "events", "group": "g" } } }),
        )
        .unwrap(),
    )
    .consumer("in", move |_: Message<u32>| {
        let tx = tx.clone();
        async move {
            tx.send(msa_core::telemetry::current_trace_id())
                .map_err(|e| e.to_string())
        }
    })
    .start()
    .await
    .unwrap();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let parent = msa_core::telemetry::propagation::extract(&headers);
    let span = tracing::info_span!("produce");
    {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let _ = span.set_parent(parent);
    }
    {
        use tracing::Instrument as _;
        stream.send("events", 1u32).instrument(span).await.unwrap();
    }
    let consumed = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(consumed.as_deref(), Some(trace));
    stream.shutdown().await;
}
