//! The OTLP/HTTP receiver against OpenTelemetry's own exporters (msa-core's telemetry,
//! spans and log records in protobuf), an OTLP/JSON document as the specification writes them, hostile requests,
//! and memory that stays within its budget after 1,000,000 spans.

use std::net::SocketAddr;
use std::time::Duration;

use msa_admin::otlp::{Collector, Limits, TraceQuery};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

async fn serve(collector: &Collector) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = collector.receiver().merge(collector.api());
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_opentelemetrys_exporter_are_kept_as_a_waterfall() {
    let collector = Collector::default();
    let addr = serve(&collector).await;
    let (dispatch, guard) = msa_core::telemetry::Telemetry::new("orders")
        .otlp_endpoint(format!("http://{addr}"))
        .writer(std::io::sink)
        .build()
        .unwrap();
    let trace_id = tracing::dispatcher::with_default(&dispatch, || {
        let request = tracing::info_span!("POST /orders");
        let _request = request.enter();
        let trace_id = msa_core::telemetry::current_trace_id().unwrap();
        {
            let call = tracing::info_span!("POST inventory", otel.kind = "client");
            let _call = call.enter();
            let failing = tracing::info_span!("charge", otel.status_code = "ERROR");
            let _failing = failing.enter();
            tracing::warn!(amount = 25.0, "card declined");
        }
        tracing::debug!("below the filter: neither written nor exported");
        trace_id
    });
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .unwrap();

    let spans = collector.trace(&trace_id).expect("the trace is kept");
    let shape: Vec<(&str, usize, &str)> = spans
        .iter()
        .map(|s| (s.name.as_str(), s.depth, &*s.service))
        .collect();
    assert_eq!(
        shape,
        [
            ("POST /orders", 0, "orders"),
            ("POST inventory", 1, "orders"),
            ("charge", 2, "orders")
        ]
    );
    assert_eq!(spans[1].kind, "client");
    // The log event, exported as an OTLP log record in the span it was logged in.
    let logs = collector.logs(&trace_id);
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(&*logs[0].service, "orders");
    assert_eq!(logs[0].severity, "WARN");
    assert_eq!(logs[0].body, "card declined");
    assert_eq!(logs[0].span_id.as_ref(), Some(&spans[2].span_id));
    assert!(spans[2].error, "{:?}", spans[2]);
    let found = collector.traces(&TraceQuery {
        service: Some("orders".into()),
        error: Some(true),
        ..TraceQuery::default()
    });
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].trace_id, trace_id);
    assert_eq!(found[0].root, "orders: POST /orders");
    assert!(
        collector
            .traces(&TraceQuery {
                service: Some("payments".into()),
                ..TraceQuery::default()
            })
            .is_empty()
    );

    // The same through the JSON API, as the pages read it.
    let http = reqwest::Client::new();
    let trace: serde_json::Value = http
        .get(format!("http://{addr}/api/traces/{trace_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(trace["spans"].as_array().unwrap().len(), 3);
    let bad = http
        .get(format!("http://{addr}/api/traces/nothex"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

/// OTLP/JSON as the specification's examples write it: hex ids, string-encoded 64-bit
/// integers, camelCase fields.
const TRACES_JSON: &str = r#"{
  "resourceSpans": [{
    "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "payments" } }] },
    "scopeSpans": [{
      "scope": { "name": "manual" },
      "spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "eee19b7ec3c1b173",
        "name": "POST /payments",
        "startTimeUnixNano": "1544712660000000000",
        "endTimeUnixNano": "1544712661000000000",
        "kind": 2,
        "attributes": [{ "key": "http.response.status_code", "value": { "intValue": "402" } }],
        "status": { "code": 2, "message": "declined" }
      }]
    }]
  }]
}"#;

const LOGS_JSON: &str = r#"{
  "resourceLogs": [{
    "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "payments" } }] },
    "scopeLogs": [{
      "scope": {},
      "logRecords": [{
        "timeUnixNano": "1544712660300000000",
        "severityText": "INFO",
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "body": { "stringValue": "payment declined" }
      }]
    }]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_json_is_taken_and_hostile_requests_are_refused_with_reasons() {
    let collector = Collector::new(Limits {
        body: 64 << 10,
        ..Limits::default()
    });
    let addr = serve(&collector).await;
    let http = reqwest::Client::new();
    let post = |path: &str, content_type: &str, body: Vec<u8>| {
        http.post(format!("http://{addr}{path}"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let ok = post("/v1/traces", "application/json", TRACES_JSON.into())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = post(
        "/v1/logs",
        "Application/JSON; charset=utf-8",
        LOGS_JSON.into(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    let spans = collector.trace("5b8efff798038103d269b633813fc60c").unwrap();
    assert_eq!(spans[0].service.as_ref(), "payments");
    assert_eq!(spans[0].duration_ns, 1_000_000_000);
    assert_eq!(spans[0].status_message.as_deref(), Some("declined"));
    assert_eq!(
        spans[0].attributes,
        [("http.response.status_code".to_owned(), "402".to_owned())]
    );
    let logs = collector.logs("5b8efff798038103d269b633813fc60c");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].body, "payment declined");

    for (content_type, body, status, reason) in [
        (
            "text/plain",
            b"hi".to_vec(),
            415,
            "application/x-protobuf or application/json",
        ),
        (
            "application/x-protobuf",
            vec![0xff; 64],
            400,
            "does not decode",
        ),
        (
            "application/json",
            b"{\"resourceSpans\": 7}".to_vec(),
            400,
            "does not decode",
        ),
        ("application/json", vec![b' '; 65 << 10], 413, ""),
    ] {
        let refused = post("/v1/traces", content_type, body).await.unwrap();
        assert_eq!(refused.status(), status, "{content_type}");
        let text = refused.text().await.unwrap();
        assert!(text.contains(reason), "{content_type}: {text}");
    }
    let gzip = http
        .post(format!("http://{addr}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.status(), 415);
}

fn request(trace: u64, spans: usize, service: &str) -> ExportTraceServiceRequest {
    let mut trace_id = [0u8; 16];
    trace_id[8..].copy_from_slice(&trace.to_be_bytes());
    let spans = (0..spans as u64)
        .map(|n| Span {
            trace_id: trace_id.to_vec(),
            span_id: (n + 1).to_be_bytes().to_vec(),
            parent_span_id: if n == 0 {
                Vec::new()
            } else {
                n.to_be_bytes().to_vec()
            },
            name: format!("span {n} of a request that did something"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + trace * 1000 + n,
            end_time_unix_nano: 1_700_000_000_000_000_000 + trace * 1000 + n + 500,
            attributes: vec![KeyValue {
                key: "http.route".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("/orders/{id}".into())),
                }),
                ..KeyValue::default()
            }],
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// 1,000,000 spans (100,000 traces of 10) sent over HTTP to a collector with an 8 MiB
/// budget: it keeps the newest traces within the budget, drops the oldest, and answers
/// searches throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_spans_stay_within_the_memory_budget() {
    let budget = 8 << 20;
    let collector = Collector::new(Limits {
        span_bytes: budget,
        ..Limits::default()
    });
    let addr = serve(&collector).await;
    let http = reqwest::Client::new();
    for batch in 0..1000u64 {
        // 100 traces of 10 spans per request.
        let mut body = request(batch * 100, 10, "orders");
        for trace in 1..100 {
            let more = request(batch * 100 + trace, 10, "orders");
            body.resource_spans.extend(more.resource_spans);
        }
        let response = http
            .post(format!("http://{addr}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body.encode_to_vec())
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let stats = collector.stats();
        assert!(stats.span_bytes <= budget, "{stats:?}");
    }
    let stats = collector.stats();
    assert_eq!(stats.spans_received, 1_000_000);
    assert_eq!(stats.spans + stats.spans_dropped as usize, 1_000_000);
    assert!(stats.spans > 10_000, "keeps the newest it can: {stats:?}");
    println!("after 1,000,000 spans: {stats:?}");
    // The newest trace is kept, the oldest evicted.
    let newest = format!("{:032x}", 99_999u64);
    let oldest = format!("{:032x}", 0u64);
    assert_eq!(collector.trace(&newest).unwrap().len(), 10);
    assert!(collector.trace(&oldest).is_none());
    assert_eq!(collector.traces(&TraceQuery::default()).len(), 100);
}

/// The peak resident memory of process `pid`, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// The memory budgets the admin process is tested with (MiB): spans, log records, and
/// the process itself (the runtime, requests being decoded, allocator slack).
const BUDGETS: (u64, u64, u64) = (16, 8, 48);
/// Log records sent in batches of 2,000.
const LOG_BATCHES: u64 = 100;

/// The msa-admin binary, sent 1,000,000 spans and 200,000 log records over OTLP/HTTP with
/// a 16 MiB span budget and an 8 MiB log budget: its peak resident memory stays under the
/// budgets plus a stated 48 MiB for the process itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_process_stays_under_its_memory_cap_after_a_million_spans() {
    let port = |listener: std::net::TcpListener| listener.local_addr().unwrap().port();
    let otlp = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let pages = port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let (span_budget, log_budget, process) = (BUDGETS.0 << 20, BUDGETS.1 << 20, BUDGETS.2 << 20);
    let mut admin = tokio::process::Command::new(env!("CARGO_BIN_EXE_msa-admin"))
        .args(["--registry", "http://127.0.0.1:1", "--bind"])
        .arg(format!("127.0.0.1:{pages}"))
        .arg("--otlp-bind")
        .arg(format!("127.0.0.1:{otlp}"))
        .arg("--max-span-bytes")
        .arg(span_budget.to_string())
        .arg("--max-log-bytes")
        .arg(log_budget.to_string())
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = admin.id().unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{otlp}/v1/traces");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http.post(&url).send().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "msa-admin did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for batch in 0..1000u64 {
        let mut body = request(batch * 100, 10, "orders");
        for trace in 1..100 {
            body.resource_spans
                .extend(request(batch * 100 + trace, 10, "orders").resource_spans);
        }
        let response = http
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let logs_url = format!("http://127.0.0.1:{otlp}/v1/logs");
    for batch in 0..LOG_BATCHES {
        let records = (0..2000u64)
            .map(|n| LogRecord {
                trace_id: u128::from(batch * 2000 + n).to_be_bytes().to_vec(),
                span_id: n.to_be_bytes().to_vec(),
                time_unix_nano: 1_700_000_000_000_000_000 + n,
                severity_text: "INFO".into(),
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!(
                        "order {n} confirmed: 2 x widget for 25.0 EUR"
                    ))),
                }),
                ..LogRecord::default()
            })
            .collect();
        let body = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        };
        let response = http
            .post(&logs_url)
            .header("content-type", "application/x-protobuf")
            .body(body.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let stats: serde_json::Value = http
        .get(format!("http://127.0.0.1:{pages}/api/collector"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["stats"]["spansReceived"], 1_000_000, "{stats}");
    assert_eq!(
        stats["stats"]["logsReceived"],
        LOG_BATCHES * 2000,
        "{stats}"
    );
    let peak = peak_rss(pid);
    println!(
        "msa-admin after 1,000,000 spans: peak RSS {:.1} MiB (cap {} MiB); {stats}",
        peak as f64 / 1048576.0,
        (span_budget + log_budget + process) >> 20
    );
    assert!(
        peak <= span_budget + log_budget + process,
        "peak RSS {peak} B over the cap"
    );
    admin.kill().await.unwrap();
}
