//! What the gateway tells: the trace through its span, and the access log.

use std::time::Duration;

use crate::support::{GatewayProcess, client, json_of, raw, upstream};

/// Two routes, one for each way through the gateway: header lines as they came (`/traced`),
/// and a header map (`/headers`, which a filter needs).
fn traced_routes(a: std::net::SocketAddr) -> String {
    format!(
        "routes:\n  - id: traced\n    uri: http://{a}\n    predicates: [ 'Path=/traced/**' ]\n\
         \x20 - id: traced-with-headers\n    uri: http://{a}\n    predicates: [ 'Path=/headers/**' ]\n\
         \x20   filters: [ 'AddRequestHeader=X-Via, gateway' ]\n"
    )
}

/// The `traceparent` the upstream saw, checked to be the only one and a child of `incoming`
/// (32 hex digits of the same trace, another parent, still sampled): its parent span id.
async fn continued(gateway: &GatewayProcess, path: &str, incoming: &str) -> String {
    let response = client()
        .get(gateway.url(path))
        .header("traceparent", incoming)
        .send()
        .await
        .unwrap();
    let echo = json_of(response).await;
    assert_eq!(echo["repeated"], serde_json::json!([]), "{path}: {echo}");
    let upstream_sees = echo["headers"]["traceparent"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = upstream_sees.split('-').collect();
    assert_eq!(parts.len(), 4, "{upstream_sees}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[1], &incoming[3..35], "same trace");
    assert_ne!(
        parts[2],
        &incoming[36..52],
        "the gateway's span is the upstream's parent"
    );
    assert_eq!(parts[3], &incoming[53..], "the caller's sampling goes on");
    // W3C: no `tracestate` at all when there is no state to send.
    assert_eq!(echo["headers"].get("tracestate"), None, "{path}: {echo}");
    parts[2].to_owned()
}

/// What both modes show: the trace continued through the gateway (one `traceparent`, the
/// gateway's span its parent), the caller's state passed on, a trace started when none came.
/// Returns the parent span ids the upstream saw on `/traced` and `/headers`.
async fn trace_goes_through(gateway: &GatewayProcess) -> Vec<String> {
    let mut parents = Vec::new();
    for path in ["/traced/x", "/headers/x"] {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        parents.push(continued(gateway, path, incoming).await);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        continued(gateway, path, unsampled).await;

        // A state and baggage that came in go on, once each.
        let response = client()
            .get(gateway.url(path))
            .header("traceparent", incoming)
            .header("tracestate", "vendor=abc")
            .header("baggage", "tenant=acme")
            .send()
            .await
            .unwrap();
        let echo = json_of(response).await;
        assert_eq!(echo["headers"]["tracestate"], "vendor=abc", "{path}");
        assert_eq!(echo["headers"]["baggage"], "tenant=acme", "{path}");
        assert_eq!(echo["repeated"], serde_json::json!([]), "{path}: {echo}");

        // Without one (or with one that is not valid, and its state), the gateway starts
        // a trace, sampled, with no state.
        for sent in [
            None,
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        ] {
            let mut request = client().get(gateway.url(path));
            if let Some(sent) = sent {
                request = request
                    .header("traceparent", sent)
                    .header("tracestate", "vendor=abc");
            }
            let echo = json_of(request.send().await.unwrap()).await;
            let started = echo["headers"]["traceparent"].as_str().unwrap();
            assert_eq!(started.len(), 55, "{started}");
            assert!(
                started.starts_with("00-") && started.ends_with("-01"),
                "{started}"
            );
            assert_ne!(&started[3..35], "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(echo["headers"].get("tracestate"), None, "{path}: {echo}");
            assert_eq!(echo["repeated"], serde_json::json!([]), "{path}: {echo}");
        }
    }
    parents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_trace_exporter_the_trace_context_goes_through() {
    // No exporter: the gateway makes no spans on its header-lines path, only the context.
    let a = upstream("a").await;
    let gateway = GatewayProcess::start(&traced_routes(a)).await;
    trace_goes_through(&gateway).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_trace_exporter_the_gateway_span_is_the_upstream_parent() {
    use std::sync::{Arc, Mutex};
    // An OTLP/HTTP JSON receiver the gateway exports its spans to.
    let spans: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let received = spans.clone();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| async move {
            let export: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut spans = received.lock().unwrap();
            for resource in export["resourceSpans"].as_array().into_iter().flatten() {
                for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                    spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
                }
            }
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let a = upstream("a").await;
    let endpoint = format!("http://{otlp}");
    let gateway = GatewayProcess::start_with_env(
        &traced_routes(a),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ],
    )
    .await;
    let parents = trace_goes_through(&gateway).await;
    // Each parent the upstream saw is a span the gateway exported, in the caller's trace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for parent in parents {
        loop {
            let found = spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s["spanId"] == parent)
                .cloned();
            if let Some(span) = found {
                assert_eq!(
                    span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736",
                    "{span}"
                );
                assert_eq!(span["parentSpanId"], "00f067aa0ba902b7", "{span}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "span {parent} never exported"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn the_access_log_is_off_by_default_and_buffered_to_its_file_when_on() {
    use msa_gateway::GatewayConfig;
    // Off unless the file says, as in Spring Cloud Gateway; Spring's key turns it on.
    let plain = GatewayConfig::parse("g.yaml", "routes: []\n").unwrap();
    assert!(!plain.access_log.enabled);
    let spring = "reactor:\n  netty:\n    http:\n      server:\n        accessLogEnabled: true\n\
                  spring:\n  cloud:\n    gateway:\n      routes: []\n";
    assert!(
        GatewayConfig::parse("g.yaml", spring)
            .unwrap()
            .access_log
            .enabled
    );
    let bad =
        "msa:\n  gateway:\n    access-log:\n      enabled: true\n      flush-interval: soon\n";
    let error = GatewayConfig::parse("g.yaml", bad).unwrap_err().to_string();
    assert!(
        error.starts_with("g.yaml:5: msa.gateway.access-log.flush-interval:"),
        "{error}"
    );

    let a = upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "msa:\n  gateway:\n    access-log:\n      enabled: true\n      path: {}\n      flush-interval: 50ms\n\
         routes:\n  - id: echo\n    uri: http://{a}\n    predicates: [ 'Path=/echo/**' ]\n",
        log.display()
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    http.get(gateway.url("/echo/1?x=1"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    // A target a log reader would act on is escaped: one request, one line.
    raw(&gateway, "/echo/\"quoted").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = lines
        .iter()
        .find(|l| l.contains("/echo/1"))
        .expect("the traced request");
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(
        first.contains("] \"GET /echo/1?x=1 HTTP/1.1\" 200 - "),
        "{first}"
    );
    assert!(
        first.ends_with(" echo 4bf92f3577b34da6a3ce929d0e0e4736"),
        "{first}"
    );
    let escaped = lines
        .iter()
        .find(|l| l.contains("quoted"))
        .expect("escaped");
    assert!(
        escaped.contains("\"GET /echo/\\x22quoted HTTP/1.1\""),
        "{escaped}"
    );
}
