//! An OTLP/HTTP receiver (`POST /v1/traces`, `POST /v1/logs`; protobuf or JSON, as
//! OpenTelemetry's exporters send them) keeping recent spans and log records in a
//! [`Collector`] whose memory is bounded: spans and logs are counted in bytes as they are
//! kept, and the oldest traces (and log records) go once their budget is spent.
//!
//! What the collector keeps is searched through [`Collector::traces`] (by service,
//! duration and error), [`Collector::trace`] (one trace's spans in start order, each with
//! its depth: a waterfall) and [`Collector::logs`] (every log record of a trace, across
//! services), and served as JSON by [`Collector::api`].

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use serde::{Deserialize, Serialize};

/// How much the collector keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of spans kept, at most (64 MiB): the oldest traces go first.
    pub span_bytes: usize,
    /// Bytes of log records kept, at most (32 MiB): the oldest go first.
    pub log_bytes: usize,
    /// Spans kept per trace, at most (10,000): more are counted and dropped.
    pub spans_per_trace: usize,
    /// Attributes kept per span or log record (32).
    pub attributes: usize,
    /// Characters kept of a name, attribute value or log body (1,024).
    pub text: usize,
    /// Services told apart (1,000); spans of more are filed under `other`.
    pub services: usize,
    /// The largest request body the receiver takes (4 MiB): 413 beyond.
    pub body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            span_bytes: 64 << 20,
            log_bytes: 32 << 20,
            spans_per_trace: 10_000,
            attributes: 32,
            text: 1024,
            services: 1000,
            body: 4 << 20,
        }
    }
}

/// A span as kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanRecord {
    /// Its trace, as 32 hex digits.
    pub trace_id: String,
    /// Its id, as 16 hex digits.
    pub span_id: String,
    /// Its parent's id, if it has one.
    pub parent_span_id: Option<String>,
    /// The service that recorded it (`service.name`).
    pub service: Arc<str>,
    /// Its name.
    pub name: String,
    /// Its kind (`server`, `client`, `producer`, `consumer`, `internal`).
    pub kind: &'static str,
    /// When it started, in nanoseconds since the Unix epoch.
    pub start_ns: u64,
    /// How long it took, in nanoseconds.
    pub duration_ns: u64,
    /// Whether its status is an error.
    pub error: bool,
    /// Its status message, if any.
    pub status_message: Option<String>,
    /// Its attributes (the first [`Limits::attributes`]), as text.
    pub attributes: Vec<(String, String)>,
    /// Its depth in the trace's tree (0 for a root), in [`Collector::trace`].
    pub depth: usize,
}

/// A log record as kept.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogRecord {
    /// Its trace, if it was logged in one.
    pub trace_id: Option<String>,
    /// Its span, if any.
    pub span_id: Option<String>,
    /// The service that logged it.
    pub service: Arc<str>,
    /// When, in nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Its severity (`INFO`, `WARN`…).
    pub severity: String,
    /// The message.
    pub body: String,
    /// Its attributes, as text.
    pub attributes: Vec<(String, String)>,
}

/// One trace as the search lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceSummary {
    /// Its id.
    pub trace_id: String,
    /// Its root span's service and name (the earliest span's when the root is missing).
    pub root: String,
    /// The services it went through.
    pub services: Vec<Arc<str>>,
    /// When it started (ns since the epoch).
    pub start_ns: u64,
    /// From its first start to its last end, in nanoseconds.
    pub duration_ns: u64,
    /// Spans kept.
    pub spans: usize,
    /// Whether any span is an error.
    pub error: bool,
}

/// What [`Collector::traces`] looks for.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TraceQuery {
    /// Only traces through this service.
    pub service: Option<String>,
    /// Only traces at least this long, in milliseconds.
    pub min_duration_ms: Option<u64>,
    /// Only traces with an error.
    pub error: Option<bool>,
    /// At most this many, the newest to arrive first (100; at most 1,000).
    pub limit: Option<usize>,
}

impl TraceQuery {
    fn min_duration_ns(&self) -> u64 {
        self.min_duration_ms.unwrap_or(0).saturating_mul(1_000_000)
    }
}

/// What the collector holds, for its own page and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Traces kept.
    pub traces: usize,
    /// Spans kept.
    pub spans: usize,
    /// Bytes of spans kept (counted as kept).
    pub span_bytes: usize,
    /// Log records kept.
    pub logs: usize,
    /// Bytes of log records kept.
    pub log_bytes: usize,
    /// Spans received since start.
    pub spans_received: u64,
    /// Spans dropped (a trace over its limit, or evicted with its trace).
    pub spans_dropped: u64,
    /// Log records received since start.
    pub logs_received: u64,
}

/// What a trace costs beyond its spans' vector: its slot in the map (whose table is up to
/// half empty), and its place in the eviction order.
const TRACE_OVERHEAD: usize = 2 * (16 + std::mem::size_of::<Trace>()) + 2 * 16;

/// The memory an allocation of `bytes` takes from the allocator: its header, rounded up to
/// 16 bytes, at least 32 (glibc's malloc); nothing for an empty one.
fn heap(bytes: usize) -> usize {
    if bytes == 0 {
        0
    } else {
        ((bytes + 8 + 15) & !15).max(32)
    }
}

/// Bytes the attributes take: the vector's slots and each text's allocation.
fn attributes_size(attributes: &Vec<(String, String)>) -> usize {
    heap(attributes.capacity() * std::mem::size_of::<(String, String)>())
        + attributes
            .iter()
            .map(|(k, v)| heap(k.capacity()) + heap(v.capacity()))
            .sum::<usize>()
}

impl SpanRecord {
    /// The bytes this span's allocations hold (its slot in the trace's vector is counted
    /// with the vector).
    fn size(&self) -> usize {
        heap(self.trace_id.capacity())
            + heap(self.span_id.capacity())
            + self
                .parent_span_id
                .as_ref()
                .map_or(0, |p| heap(p.capacity()))
            + heap(self.name.capacity())
            + self
                .status_message
                .as_ref()
                .map_or(0, |m| heap(m.capacity()))
            + attributes_size(&self.attributes)
    }
}

impl LogRecord {
    /// The bytes this record holds: its slot in the queue (twice: a queue grows by
    /// doubling) and every allocation it owns.
    fn size(&self) -> usize {
        2 * std::mem::size_of::<(LogRecord, usize)>()
            + self.trace_id.as_ref().map_or(0, |t| heap(t.capacity()))
            + self.span_id.as_ref().map_or(0, |t| heap(t.capacity()))
            + heap(self.severity.capacity())
            + heap(self.body.capacity())
            + attributes_size(&self.attributes)
    }
}

#[derive(Default)]
struct Trace {
    spans: Vec<SpanRecord>,
    bytes: usize,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<[u8; 16], Trace>,
    /// Trace ids in the order they were first seen: the oldest goes first.
    order: VecDeque<[u8; 16]>,
    span_bytes: usize,
    spans: usize,
    logs: VecDeque<(LogRecord, usize)>,
    log_bytes: usize,
    services: HashMap<String, Arc<str>>,
    stats: Stats,
}

/// Recent spans and log records, bounded: see the [module](self). Cheap to clone.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Mutex<Inner>>,
    limits: Arc<Limits>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Collector {
    fn default() -> Self {
        Collector::new(Limits::default())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn cut(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An OTLP value as text, at most `limit` characters.
fn text_of(value: Option<&AnyValue>, limit: usize) -> String {
    let text = match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => return cut(s, limit),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => format!("[{} values]", a.values.len()),
        Some(any_value::Value::KvlistValue(kv)) => format!("{{{} entries}}", kv.values.len()),
        // A reference into a dictionary this receiver is not sent, or nothing.
        Some(_) | None => String::new(),
    };
    cut(&text, limit)
}

fn attributes_of(attributes: &[KeyValue], limits: &Limits) -> Vec<(String, String)> {
    attributes
        .iter()
        .take(limits.attributes)
        .map(|kv| (cut(&kv.key, 128), text_of(kv.value.as_ref(), limits.text)))
        .collect()
}

fn service_of(resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .map(|kv| text_of(kv.value.as_ref(), 128))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn kind_of(kind: i32) -> &'static str {
    match kind {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    }
}

impl Inner {
    fn service(&mut self, name: String, limits: &Limits) -> Arc<str> {
        if let Some(service) = self.services.get(&name) {
            return service.clone();
        }
        if self.services.len() >= limits.services {
            return self
                .services
                .entry("other".to_owned())
                .or_insert_with(|| Arc::from("other"))
                .clone();
        }
        let service: Arc<str> = Arc::from(name.as_str());
        self.services.insert(name, service.clone());
        service
    }

    fn evict_spans(&mut self, limit: usize) {
        while self.span_bytes > limit {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if let Some(trace) = self.traces.remove(&oldest) {
                self.span_bytes -= trace.bytes;
                self.spans -= trace.spans.len();
                self.stats.spans_dropped += trace.spans.len() as u64;
            }
        }
    }
}

impl Collector {
    /// A collector keeping what `limits` allow.
    pub fn new(limits: Limits) -> Collector {
        Collector {
            inner: Arc::default(),
            limits: Arc::new(limits),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        msa_core::sync::lock(&self.inner)
    }

    /// Keeps the spans of an export request. Spans without a valid trace id (16 bytes)
    /// and span id (8 bytes) are dropped.
    pub fn add_spans(&self, request: ExportTraceServiceRequest) {
        let limits = &self.limits;
        let mut inner = self.lock();
        for resource in request.resource_spans {
            let service = service_of(resource.resource.as_ref());
            let service = inner.service(service, limits);
            for scope in resource.scope_spans {
                for span in scope.spans {
                    inner.stats.spans_received += 1;
                    let (Ok(trace_id), Ok(_)) = (
                        <[u8; 16]>::try_from(span.trace_id.as_slice()),
                        <[u8; 8]>::try_from(span.span_id.as_slice()),
                    ) else {
                        inner.stats.spans_dropped += 1;
                        continue;
                    };
                    let status = span.status.as_ref();
                    let record = SpanRecord {
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: (span.parent_span_id.len() == 8)
                            .then(|| hex(&span.parent_span_id)),
                        service: service.clone(),
                        name: cut(&span.name, limits.text),
                        kind: kind_of(span.kind),
                        start_ns: span.start_time_unix_nano,
                        duration_ns: span
                            .end_time_unix_nano
                            .saturating_sub(span.start_time_unix_nano),
                        error: status.is_some_and(|s| s.code == 2),
                        status_message: status
                            .filter(|s| !s.message.is_empty())
                            .map(|s| cut(&s.message, limits.text)),
                        attributes: attributes_of(&span.attributes, limits),
                        depth: 0,
                    };
                    let bytes = record.size();
                    let inner = &mut *inner;
                    let trace = match inner.traces.get_mut(&trace_id) {
                        Some(trace) => trace,
                        None => {
                            inner.order.push_back(trace_id);
                            inner.span_bytes += TRACE_OVERHEAD;
                            let trace = inner.traces.entry(trace_id).or_default();
                            trace.bytes = TRACE_OVERHEAD;
                            trace
                        }
                    };
                    if trace.spans.len() >= limits.spans_per_trace {
                        inner.stats.spans_dropped += 1;
                        continue;
                    }
                    // The vector's allocation, counted as it grows.
                    let slot = std::mem::size_of::<SpanRecord>();
                    let before = heap(trace.spans.capacity() * slot);
                    trace.spans.push(record);
                    let bytes = bytes + heap(trace.spans.capacity() * slot) - before;
                    trace.bytes += bytes;
                    inner.span_bytes += bytes;
                    inner.spans += 1;
                }
            }
        }
        inner.evict_spans(limits.span_bytes);
    }

    /// Keeps the log records of an export request.
    pub fn add_logs(&self, request: ExportLogsServiceRequest) {
        let limits = &self.limits;
        let mut inner = self.lock();
        for resource in request.resource_logs {
            let service = service_of(resource.resource.as_ref());
            let service = inner.service(service, limits);
            for scope in resource.scope_logs {
                for log in scope.log_records {
                    inner.stats.logs_received += 1;
                    let record = LogRecord {
                        trace_id: (log.trace_id.len() == 16).then(|| hex(&log.trace_id)),
                        span_id: (log.span_id.len() == 8).then(|| hex(&log.span_id)),
                        service: service.clone(),
                        time_ns: if log.time_unix_nano > 0 {
                            log.time_unix_nano
                        } else {
                            log.observed_time_unix_nano
                        },
                        severity: cut(&log.severity_text, 16),
                        body: text_of(log.body.as_ref(), limits.text),
                        attributes: attributes_of(&log.attributes, limits),
                    };
                    let bytes = record.size();
                    inner.log_bytes += bytes;
                    inner.logs.push_back((record, bytes));
                    while inner.log_bytes > limits.log_bytes {
                        let Some((_, freed)) = inner.logs.pop_front() else {
                            break;
                        };
                        inner.log_bytes -= freed;
                    }
                }
            }
        }
    }

    /// What the collector holds.
    pub fn stats(&self) -> Stats {
        let inner = self.lock();
        Stats {
            traces: inner.traces.len(),
            spans: inner.spans,
            span_bytes: inner.span_bytes,
            logs: inner.logs.len(),
            log_bytes: inner.log_bytes,
            ..inner.stats.clone()
        }
    }

    /// The traces `query` asks for, newest first.
    pub fn traces(&self, query: &TraceQuery) -> Vec<TraceSummary> {
        let min_ns = query.min_duration_ns();
        let limit = query.limit.unwrap_or(100).min(1000);
        let inner = self.lock();
        // Newest first, stopping at the limit: a search costs what it returns, not what
        // the collector holds (unless little matches).
        let mut found: Vec<TraceSummary> = Vec::with_capacity(limit.min(64));
        for id in inner.order.iter().rev() {
            if found.len() == limit {
                break;
            }
            let Some(trace) = inner.traces.get(id) else {
                continue;
            };
            let spans = &trace.spans;
            let wanted = (query.error != Some(true) || spans.iter().any(|s| s.error))
                && query
                    .service
                    .as_deref()
                    .is_none_or(|service| spans.iter().any(|s| &*s.service == service));
            if let Some(summary) = wanted.then(|| summary(trace)).flatten()
                && summary.duration_ns >= min_ns
            {
                found.push(summary);
            }
        }
        drop(inner);
        found.sort_by_key(|trace| std::cmp::Reverse(trace.start_ns));
        found
    }

    /// Trace `trace_id`'s spans in start order, each with its depth in the tree.
    pub fn trace(&self, trace_id: &str) -> Option<Vec<SpanRecord>> {
        let id = parse_trace_id(trace_id)?;
        let mut spans = self.lock().traces.get(&id)?.spans.clone();
        spans.sort_by_key(|s| s.start_ns);
        let parents: HashMap<String, Option<String>> = spans
            .iter()
            .map(|s| (s.span_id.clone(), s.parent_span_id.clone()))
            .collect();
        for span in &mut spans {
            let mut depth = 0;
            let mut parent = span.parent_span_id.clone();
            while let Some(id) = parent {
                match parents.get(&id) {
                    Some(next) if depth < 256 => {
                        depth += 1;
                        parent = next.clone();
                    }
                    _ => break,
                }
            }
            span.depth = depth;
        }
        Some(spans)
    }

    /// Every log record of trace `trace_id`, oldest first, across services.
    pub fn logs(&self, trace_id: &str) -> Vec<LogRecord> {
        let Some(id) = parse_trace_id(trace_id) else {
            return Vec::new();
        };
        let id = hex(&id);
        let mut found: Vec<LogRecord> = self
            .lock()
            .logs
            .iter()
            .filter(|(log, _)| log.trace_id.as_deref() == Some(id.as_str()))
            .map(|(log, _)| log.clone())
            .collect();
        found.sort_by_key(|log| log.time_ns);
        found
    }

    /// The OTLP/HTTP receiver: `POST /v1/traces` and `POST /v1/logs`, protobuf
    /// (`application/x-protobuf`) or JSON (`application/json`); 413 over
    /// [`Limits::body`], 415 for another content type or a compressed body, 400 with the
    /// reason for one that does not decode.
    pub fn receiver(&self) -> Router {
        Router::new()
            .route("/v1/traces", post(receive_traces))
            .route("/v1/logs", post(receive_logs))
            .layer(DefaultBodyLimit::max(self.limits.body))
            .with_state(self.clone())
    }

    /// The collector's JSON API: `GET /api/traces` (`?service=&minDurationMs=&error=&limit=`),
    /// `GET /api/traces/{trace_id}` (spans with depths, and the trace's logs),
    /// `GET /api/logs/{trace_id}`, `GET /api/collector` (its stats and limits).
    pub fn api(&self) -> Router {
        Router::new()
            .route("/api/traces", get(list_traces))
            .route("/api/traces/{trace_id}", get(one_trace))
            .route("/api/logs/{trace_id}", get(trace_logs))
            .route("/api/collector", get(collector_stats))
            .with_state(self.clone())
    }
}

fn summary(trace: &Trace) -> Option<TraceSummary> {
    let first = trace.spans.iter().min_by_key(|s| s.start_ns)?;
    let ids: BTreeSet<&str> = trace.spans.iter().map(|s| s.span_id.as_str()).collect();
    let root = trace
        .spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref().is_none_or(|p| !ids.contains(p)))
        .min_by_key(|s| s.start_ns)
        .unwrap_or(first);
    let end = trace
        .spans
        .iter()
        .map(|s| s.start_ns.saturating_add(s.duration_ns))
        .max()
        .unwrap_or(first.start_ns);
    let mut services: Vec<Arc<str>> = Vec::new();
    for span in &trace.spans {
        if !services.iter().any(|s| Arc::ptr_eq(s, &span.service)) {
            services.push(span.service.clone());
        }
    }
    Some(TraceSummary {
        trace_id: first.trace_id.clone(),
        root: format!("{}: {}", root.service, root.name),
        services,
        start_ns: first.start_ns,
        duration_ns: end.saturating_sub(first.start_ns),
        spans: trace.spans.len(),
        error: trace.spans.iter().any(|s| s.error),
    })
}

/// A trace id as 32 hex digits.
fn parse_trace_id(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// How a request body is encoded.
enum Encoding {
    Protobuf,
    Json,
}

/// A request the receiver refuses: the status and the reason.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        msa_core::http::error_response(self.0, self.1)
    }
}

fn encoding(headers: &HeaderMap) -> Result<Encoding, Refusal> {
    if let Some(coding) = headers.get(http::header::CONTENT_ENCODING)
        && coding.as_bytes() != b"identity"
    {
        return Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "compressed OTLP bodies are not taken: send them uncompressed".into(),
        ));
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Media types are case-insensitive (`Application/JSON; charset=utf-8` too).
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
        "application/json" => Ok(Encoding::Json),
        _ => Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "OTLP/HTTP bodies are application/x-protobuf or application/json".into(),
        )),
    }
}

fn decode<T: prost::Message + Default + serde::de::DeserializeOwned>(
    encoding: &Encoding,
    body: &Bytes,
) -> Result<T, Refusal> {
    let decoded = match encoding {
        Encoding::Protobuf => T::decode(body.as_ref()).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
    };
    decoded.map_err(|reason| {
        Refusal(
            StatusCode::BAD_REQUEST,
            format!("the OTLP request does not decode: {}", cut(&reason, 200)),
        )
    })
}

fn answer<T: prost::Message + Serialize>(encoding: &Encoding, response: &T) -> Response {
    match encoding {
        Encoding::Protobuf => (
            [(http::header::CONTENT_TYPE, "application/x-protobuf")],
            response.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => {
            axum::Json(serde_json::to_value(response).unwrap_or_default()).into_response()
        }
    }
}

/// Decodes an export request as its content type says, hands it to `keep`, and answers
/// in the same encoding.
fn receive<Request, Answer>(
    headers: &HeaderMap,
    body: &Bytes,
    keep: impl FnOnce(Request),
) -> Response
where
    Request: prost::Message + Default + serde::de::DeserializeOwned,
    Answer: prost::Message + Default + Serialize,
{
    let received = encoding(headers).and_then(|encoding| {
        let request = decode::<Request>(&encoding, body)?;
        keep(request);
        Ok(answer(&encoding, &Answer::default()))
    });
    received.unwrap_or_else(IntoResponse::into_response)
}

async fn receive_traces(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive::<ExportTraceServiceRequest, ExportTraceServiceResponse>(&headers, &body, |r| {
        collector.add_spans(r)
    })
}

async fn receive_logs(
    State(collector): State<Collector>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    receive::<ExportLogsServiceRequest, ExportLogsServiceResponse>(&headers, &body, |r| {
        collector.add_logs(r)
    })
}

async fn list_traces(
    State(collector): State<Collector>,
    Query(query): Query<TraceQuery>,
) -> Response {
    axum::Json(collector.traces(&query)).into_response()
}

async fn one_trace(State(collector): State<Collector>, Path(trace_id): Path<String>) -> Response {
    match collector.trace(&trace_id) {
        Some(spans) => axum::Json(serde_json::json!({
            "traceId": trace_id,
            "spans": spans,
            "logs": collector.logs(&trace_id),
        }))
        .into_response(),
        None if parse_trace_id(&trace_id).is_none() => {
            msa_core::http::error_response(StatusCode::BAD_REQUEST, "a trace id is 32 hex digits")
        }
        None => msa_core::http::error_response(
            StatusCode::NOT_FOUND,
            format!("no trace {trace_id} is kept (it may have been evicted)"),
        ),
    }
}

async fn trace_logs(State(collector): State<Collector>, Path(trace_id): Path<String>) -> Response {
    if parse_trace_id(&trace_id).is_none() {
        return msa_core::http::error_response(
            StatusCode::BAD_REQUEST,
            "a trace id is 32 hex digits",
        );
    }
    axum::Json(collector.logs(&trace_id)).into_response()
}

async fn collector_stats(State(collector): State<Collector>) -> Response {
    let limits = &collector.limits;
    axum::Json(serde_json::json!({
        "stats": collector.stats(),
        "limits": { "spanBytes": limits.span_bytes, "logBytes": limits.log_bytes },
    }))
    .into_response()
}
