//! Span export over OTLP/HTTP to a receiver started inside the test.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use msa_core::http::{ClientLayer, ServerLayer};
use msa_core::telemetry::Telemetry;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message as _;
use tokio::sync::mpsc;
use tower::{Layer as _, ServiceExt as _};

const REMOTE_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const REMOTE_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: decodes each protobuf export request and passes it on.
async fn receiver() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let router = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(tx): State<mpsc::UnboundedSender<ExportTraceServiceRequest>>,
                 headers: http::HeaderMap,
                 body: Bytes| async move {
                    assert_eq!(headers["content-type"], "application/x-protobuf");
                    let request =
                        ExportTraceServiceRequest::decode(body).expect("valid OTLP protobuf");
                    let _ = tx.send(request);
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                },
            ),
        )
        .with_state(tx);
    (common::serve(router).await, rx)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attr(attributes, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attributes, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

async fn service_b() -> SocketAddr {
    let router = Router::new()
        .route(
            "/names/{id}",
            get(|Path(id): Path<String>| async move { format!("name-{id}") }),
        )
        .route(
            "/broken",
            get(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "broken") }),
        )
        .layer(ServerLayer::new());
    common::serve(router).await
}

async fn service_a(b: SocketAddr) -> SocketAddr {
    async fn greet(State(b): State<SocketAddr>, Path(path): Path<String>) -> String {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let request = http::Request::get(format!("http://{b}/{path}"))
            .body(Empty::new())
            .unwrap();
        let response = ClientLayer::new()
            .layer(client)
            .oneshot(request)
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        format!("{status} {}", String::from_utf8_lossy(&body))
    }
    let router = Router::new()
        .route("/greet/{*path}", get(greet))
        .with_state(b)
        .layer(ServerLayer::new());
    common::serve(router).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_with_names_links_and_attributes() {
    let (collector, mut exports) = receiver().await;
    let telemetry = Telemetry::new("otlp-test")
        .version("9.9.9")
        .otlp_endpoint(format!("http://{collector}"))
        .writer(std::io::sink)
        .init()
        .unwrap();

    let a = service_a(service_b().await).await;
    let client = reqwest::Client::new();
    let ok = client
        .get(format!("http://{a}/greet/names/7"))
        .header("traceparent", format!("00-{REMOTE_TRACE}-{REMOTE_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.text().await.unwrap(), "200 OK name-7");
    let broken = client
        .get(format!("http://{a}/greet/broken"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        broken.text().await.unwrap(),
        "500 Internal Server Error broken"
    );

    tokio::task::spawn_blocking(move || telemetry.flush())
        .await
        .unwrap();

    // Gather until both traces are complete (three spans each).
    let mut spans: Vec<Span> = Vec::new();
    let mut resources = Vec::new();
    while spans.len() < 6 {
        let export = tokio::time::timeout(Duration::from_secs(10), exports.recv())
            .await
            .expect("the exporter sent the spans")
            .unwrap();
        for resource_spans in export.resource_spans {
            resources.push(resource_spans.resource.unwrap_or_default());
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    assert_eq!(spans.len(), 6, "{spans:#?}");
    let resource = &resources[0].attributes;
    assert_eq!(
        string_attr(resource, "service.name").as_deref(),
        Some("otlp-test")
    );
    assert_eq!(
        string_attr(resource, "service.version").as_deref(),
        Some("9.9.9")
    );

    let by_trace: HashMap<String, Vec<&Span>> = spans.iter().fold(HashMap::new(), |mut m, s| {
        m.entry(hex(&s.trace_id)).or_default().push(s);
        m
    });
    assert_eq!(by_trace.len(), 2, "two requests, two traces");

    // The request that carried a traceparent continued the remote trace.
    let trace = &by_trace[REMOTE_TRACE];
    let find = |name: &str| -> &Span {
        trace
            .iter()
            .copied()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span named {name:?} in {trace:#?}"))
    };
    let a_server = find("GET /greet/{*path}");
    let a_client = find("GET");
    let b_server = find("GET /names/{id}");

    assert_eq!(a_server.kind, SpanKind::Server as i32);
    assert_eq!(a_client.kind, SpanKind::Client as i32);
    assert_eq!(b_server.kind, SpanKind::Server as i32);
    assert_eq!(
        hex(&a_server.parent_span_id),
        REMOTE_SPAN,
        "A continues the caller's span"
    );
    assert_eq!(
        a_client.parent_span_id, a_server.span_id,
        "the client span is A's child"
    );
    assert_eq!(
        b_server.parent_span_id, a_client.span_id,
        "B's span is the client span's child"
    );

    assert_eq!(
        string_attr(&a_server.attributes, "http.route").as_deref(),
        Some("/greet/{*path}")
    );
    assert_eq!(
        string_attr(&a_server.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        string_attr(&a_server.attributes, "url.path").as_deref(),
        Some("/greet/names/7")
    );
    assert_eq!(
        int_attr(&a_server.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        string_attr(&b_server.attributes, "http.route").as_deref(),
        Some("/names/{id}")
    );
    assert_eq!(
        int_attr(&b_server.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        string_attr(&a_client.attributes, "server.address").as_deref(),
        Some("127.0.0.1")
    );
    assert!(int_attr(&a_client.attributes, "server.port").is_some());
    assert_eq!(
        int_attr(&a_client.attributes, "http.response.status_code"),
        Some(200)
    );
    for span in [a_server, a_client, b_server] {
        let status = span.status.clone().unwrap_or_default();
        assert_ne!(
            status.code,
            StatusCode::Error as i32,
            "{} succeeded",
            span.name
        );
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    }

    // The failing request: a new trace, whose 500 marks B's span and the client span failed.
    let (_, failed) = by_trace.iter().find(|(id, _)| *id != REMOTE_TRACE).unwrap();
    let b_failed = failed.iter().find(|s| s.name == "GET /broken").unwrap();
    assert_eq!(
        int_attr(&b_failed.attributes, "http.response.status_code"),
        Some(500)
    );
    assert_eq!(
        b_failed.status.clone().unwrap_or_default().code,
        StatusCode::Error as i32
    );
    let client_failed = failed.iter().find(|s| s.name == "GET").unwrap();
    assert_eq!(
        client_failed.status.clone().unwrap_or_default().code,
        StatusCode::Error as i32
    );
    let a_root = failed
        .iter()
        .find(|s| s.name == "GET /greet/{*path}")
        .unwrap();
    assert!(
        a_root.parent_span_id.is_empty(),
        "a request without traceparent starts a root span"
    );
    // A answered 200 (it relayed the failure in its body), so its own span is not failed.
    assert_ne!(
        a_root.status.clone().unwrap_or_default().code,
        StatusCode::Error as i32
    );
}
