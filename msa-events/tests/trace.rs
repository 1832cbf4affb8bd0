//! A saga continues the trace it was started in: while the request that started it runs,
//! and when another orchestrator resumes it later with no request around (as after a
//! crash). A binary of its own: it installs a tracing subscriber for its thread.

use std::time::Duration;

use msa_events::Store;
use msa_events::saga::{Orchestrator, Saga, Status};
use tokio::sync::mpsc;
use tracing::Instrument as _;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A saga whose one step reports the trace it runs in.
fn reporting(seen: mpsc::UnboundedSender<Option<String>>) -> Saga<u32> {
    Saga::<u32>::new("report").step("report", move |_, n: u32| {
        let seen = seen.clone();
        async move {
            seen.send(msa_core::telemetry::current_trace_id())
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(n)
        }
    })
}

/// A span whose parent is the remote trace [`TRACE`], as a request carrying it has.
fn request_span() -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        format!("00-{TRACE}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    let span = tracing::info_span!("request");
    let _ = span.set_parent(msa_core::telemetry::propagation::extract(&headers));
    span
}

#[tokio::test(flavor = "current_thread")]
async fn a_saga_continues_the_trace_it_was_started_in_even_when_resumed_elsewhere() {
    let (dispatch, _guard) = msa_core::telemetry::Telemetry::new("events-test")
        .writer(std::io::sink)
        .build()
        .unwrap();
    let _default = tracing::dispatcher::set_default(&dispatch);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/trace.db", dir.path().display()))
        .await
        .unwrap();
    let (seen, mut saw) = mpsc::unbounded_channel();

    // Started and run by the request.
    let live = Orchestrator::new(store.clone()).saga(reporting(seen.clone()));
    live.start("report", "live", 1)
        .instrument(request_span())
        .await
        .unwrap();
    assert_eq!(
        live.wait("live", Duration::from_secs(5))
            .await
            .unwrap()
            .status,
        Status::Completed
    );
    assert_eq!(saw.recv().await.unwrap().as_deref(), Some(TRACE));

    // Recorded by the request, which ends before anything runs it (the process dies)...
    async {
        let mut tx = store.begin().await.unwrap();
        assert!(
            live.start_in(&mut tx, "report", "resumed", 2)
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
    }
    .instrument(request_span())
    .await;
    // ...and resumed by another orchestrator, outside any request.
    let other = Orchestrator::new(store).saga(reporting(seen));
    assert_eq!(other.resume_due().await.unwrap(), 1);
    let done = other.wait("resumed", Duration::from_secs(5)).await.unwrap();
    assert_eq!(done.status, Status::Completed);
    assert_eq!(saw.recv().await.unwrap().as_deref(), Some(TRACE));
}
