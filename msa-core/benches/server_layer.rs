//! Per-request cost of `ServerLayer` against a bare axum handler, side by side.
//!
//! Run with: cargo bench -p msa-core --bench server_layer
//!
//! Three routers answer the same `GET /orders/{id}` in memory (no sockets, so only the
//! layer's own work differs):
//!
//! - `bare`: the handler alone;
//! - `layer/no-subscriber`: with `ServerLayer`, no tracing subscriber installed (spans are
//!   disabled; metrics and routing labels still run);
//! - `layer/telemetry`: with `ServerLayer` and msa's full telemetry installed (log layer,
//!   OpenTelemetry tracer building a real span per request, W3C extraction of an incoming
//!   `traceparent`), exporting nowhere;
//! - `layer/telemetry-new-trace`: the same for a request without `traceparent`, which
//!   starts a trace.

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use msa_core::http::ServerLayer;
use msa_core::telemetry::Telemetry;
use tower::ServiceExt;

fn router() -> Router {
    Router::new().route("/orders/{id}", get(|| async { "an order" }))
}

fn request(traceparent: bool) -> Request<Body> {
    let mut request = Request::get("/orders/42");
    if traceparent {
        request = request.header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }
    request.body(Body::empty()).unwrap()
}

/// One request through a clone of `router` (cloning a router is an `Arc` bump, the same in
/// every variant).
async fn call(router: Router) {
    call_with(router, true).await
}

async fn call_with(router: Router, traceparent: bool) {
    let response = ServiceExt::<Request<Body>>::oneshot(router, request(traceparent))
        .await
        .unwrap();
    assert!(response.status().is_success());
}

fn server_layer(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("server_layer");

    let bare = router();
    group.bench_function("bare", |b| b.to_async(&rt).iter(|| call(bare.clone())));

    let layered = router().layer(ServerLayer::new());
    group.bench_function("layer/no-subscriber", |b| {
        b.to_async(&rt).iter(|| call(layered.clone()))
    });

    let (dispatch, _guard) = Telemetry::new("bench")
        .filter("info")
        .writer(std::io::sink)
        .build()
        .unwrap();
    tracing::dispatcher::with_default(&dispatch, || {
        group.bench_function("layer/telemetry", |b| {
            b.to_async(&rt).iter(|| call(layered.clone()))
        });
        group.bench_function("layer/telemetry-new-trace", |b| {
            b.to_async(&rt).iter(|| call_with(layered.clone(), false))
        });
    });
    group.finish();
}

criterion_group!(benches, server_layer);
criterion_main!(benches);
