//! Two services over real HTTP: A calls B through msa's client layers; B's logs and spans
//! share A's trace.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use msa_core::http::{ClientLayer, ServerLayer, TraceMiddleware};
use msa_core::telemetry::{LogFormat, Telemetry, TelemetryGuard};
use tower::ServiceExt;

use common::Captured;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn logs() -> &'static Captured {
    static LOGS: OnceLock<(Captured, TelemetryGuard)> = OnceLock::new();
    &LOGS
        .get_or_init(|| {
            let logs = Captured::default();
            let guard = Telemetry::new("two-hop")
                .log_format(LogFormat::Json)
                .filter("info")
                .writer(logs.clone())
                .init()
                .unwrap();
            (logs, guard)
        })
        .0
}

/// Service B: answers a name, logging while it does.
async fn service_b() -> SocketAddr {
    let router = Router::new()
        .route(
            "/names/{id}",
            get(|Path(id): Path<String>| async move {
                tracing::info!(%id, "b: looking up name");
                format!("name-{id}")
            }),
        )
        .layer(ServerLayer::new());
    common::serve(router).await
}

#[derive(Clone)]
struct A {
    b: SocketAddr,
}

/// Service A: calls B through hyper-util's client under `ClientLayer`, or through reqwest
/// under `TraceMiddleware`.
async fn service_a(b: SocketAddr) -> SocketAddr {
    async fn via_hyper(State(a): State<A>, Path(id): Path<String>) -> String {
        tracing::info!(%id, "a: calling b with hyper");
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let request = http::Request::get(format!("http://{}/names/{id}", a.b))
            .body(Empty::new())
            .unwrap();
        let response = ClientLayer::new()
            .layer(client)
            .oneshot(request)
            .await
            .unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        format!("hello {}", String::from_utf8_lossy(&body))
    }
    async fn via_reqwest(State(a): State<A>, Path(id): Path<String>) -> String {
        tracing::info!(%id, "a: calling b with reqwest");
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(TraceMiddleware::new())
            .build();
        let body = client
            .get(format!("http://{}/names/{id}", a.b))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        format!("hello {body}")
    }
    use tower::Layer as _;
    let router = Router::new()
        .route("/greet/{id}", get(via_hyper))
        .route("/greet-reqwest/{id}", get(via_reqwest))
        .with_state(A { b })
        .layer(ServerLayer::new());
    common::serve(router).await
}

/// The log lines whose message is `message` and whose `id` field is `id`.
fn lines(message: &str, id: &str) -> Vec<serde_json::Value> {
    logs()
        .json_lines()
        .into_iter()
        .filter(|l| l["message"] == message && l["id"] == id)
        .collect()
}

fn one_line(message: &str, id: &str) -> serde_json::Value {
    let found = lines(message, id);
    assert_eq!(
        found.len(),
        1,
        "expected one {message:?} line for id {id}: {found:#?}"
    );
    found.into_iter().next().unwrap()
}

async fn call(a: SocketAddr, path: &str, traceparent: Option<&str>) -> String {
    let mut request = reqwest::Client::new().get(format!("http://{a}{path}"));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

fn assert_one_trace(a_message: &str, id: &str, expected_trace: Option<&str>) -> String {
    let a = one_line(a_message, id);
    let b = one_line("b: looking up name", id);
    let trace = a["trace_id"]
        .as_str()
        .expect("A's line has a trace id")
        .to_owned();
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "0".repeat(32));
    assert_eq!(b["trace_id"], trace, "B's line shares A's trace id");
    assert_ne!(
        a["span_id"], b["span_id"],
        "each service logs in its own span"
    );
    assert_eq!(a["service"], "two-hop");
    if let Some(expected) = expected_trace {
        assert_eq!(trace, expected);
    }
    trace
}

#[tokio::test]
async fn b_logs_with_a_trace_through_the_client_layer() {
    logs();
    let a = service_a(service_b().await).await;
    assert_eq!(call(a, "/greet/hyper-1", None).await, "hello name-hyper-1");
    let first = assert_one_trace("a: calling b with hyper", "hyper-1", None);

    // A second request without traceparent starts another trace.
    call(a, "/greet/hyper-2", None).await;
    let second = assert_one_trace("a: calling b with hyper", "hyper-2", None);
    assert_ne!(first, second);
}

#[tokio::test]
async fn b_logs_with_a_trace_through_reqwest_middleware() {
    logs();
    let a = service_a(service_b().await).await;
    assert_eq!(
        call(a, "/greet-reqwest/rq-1", None).await,
        "hello name-rq-1"
    );
    assert_one_trace("a: calling b with reqwest", "rq-1", None);
}

#[tokio::test]
async fn an_incoming_traceparent_is_continued_across_both_hops() {
    logs();
    let a = service_a(service_b().await).await;
    call(a, "/greet/continued", Some(TRACEPARENT)).await;
    assert_one_trace("a: calling b with hyper", "continued", Some(TRACE_ID));
    // The incoming span id is A's parent, never A's own span.
    let a_line = one_line("a: calling b with hyper", "continued");
    assert_ne!(a_line["span_id"], "00f067aa0ba902b7");
}

#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace() {
    logs();
    let a = service_a(service_b().await).await;
    call(a, "/greet/malformed", Some("00-not-a-trace-01")).await;
    let trace = assert_one_trace("a: calling b with hyper", "malformed", None);
    assert_ne!(trace, TRACE_ID);
}

#[tokio::test]
async fn lines_outside_a_request_carry_no_trace_id() {
    logs();
    tracing::info!(id = "outside", "no request here");
    let line = one_line("no request here", "outside");
    assert!(line.get("trace_id").is_none(), "{line}");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["target"], "trace_propagation");
}
