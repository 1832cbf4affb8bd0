//! The log layer: one line per event, text or JSON, stamped with the OpenTelemetry trace and
//! span ids of the span the event happened in.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Arc, OnceLock};

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger, SdkLoggerProvider};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::LogFormat;

/// Writes each event as one line to `W`, in the chosen [`LogFormat`].
pub(super) struct LogLayer<W> {
    format: LogFormat,
    service: Arc<str>,
    ansi: bool,
    make_writer: W,
    dispatch: OnceLock<WeakDispatch>,
    /// Where each event also goes as an OpenTelemetry log record, when logs are exported.
    export: Option<SdkLogger>,
}

impl<W> LogLayer<W> {
    pub(super) fn new(format: LogFormat, service: Arc<str>, ansi: bool, make_writer: W) -> Self {
        LogLayer {
            format,
            service,
            ansi,
            make_writer,
            dispatch: OnceLock::new(),
            export: None,
        }
    }

    /// Also emits each event as a log record of `provider`'s (exported over OTLP).
    pub(super) fn export(mut self, provider: Option<&SdkLoggerProvider>) -> Self {
        self.export = provider.map(|provider| provider.logger("msa"));
        self
    }

    /// The trace and span id of `id`'s OpenTelemetry span, when it has a valid one.
    fn span_context(&self, id: &tracing::span::Id) -> Option<SpanContext> {
        let dispatch = self.dispatch.get()?.upgrade()?;
        let cx = tracing_opentelemetry::get_otel_context(id, &dispatch)?;
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| sc.clone())
    }
}

impl<W> fmt::Debug for LogLayer<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogLayer")
            .field("format", &self.format)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

thread_local! {
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S, W> Layer<S> for LogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = ctx.event_span(event);
        let sc = span.as_ref().and_then(|span| self.span_context(&span.id()));
        let span_name = span.as_ref().map(|s| s.name());
        LINE.with(|line| {
            // A re-entrant event (one logged while writing this one) gets a fresh buffer.
            let mut owned;
            let mut borrowed = line.try_borrow_mut();
            let buf: &mut String = match borrowed.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => {
                    owned = String::new();
                    &mut owned
                }
            };
            buf.clear();
            let written = match self.format {
                LogFormat::Text => self.write_text(buf, event, sc.as_ref()),
                LogFormat::Json => self.write_json(buf, event, sc.as_ref(), span_name),
            };
            if written.is_ok() {
                buf.push('\n');
                let mut writer = self.make_writer.make_writer_for(event.metadata());
                let _ = writer.write_all(buf.as_bytes());
            }
        });
        if let Some(logger) = &self.export {
            emit(logger, event, sc.as_ref());
        }
    }
}

/// Targets whose events never become log records: the exporter's own HTTP stack, whose
/// events about sending records would make more records.
const NOT_EXPORTED: &[&str] = &["opentelemetry", "hyper", "reqwest", "h2", "tonic", "tower"];

/// `event` as an OpenTelemetry log record: the message as its body, the other fields as
/// attributes, in the span context `sc`.
fn emit(logger: &SdkLogger, event: &Event<'_>, sc: Option<&SpanContext>) {
    let meta = event.metadata();
    let target = meta.target();
    if NOT_EXPORTED.iter().any(|crate_name| {
        target
            .strip_prefix(crate_name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    }) {
        return;
    }
    let mut record = logger.create_log_record();
    let (number, text) = match *meta.level() {
        Level::ERROR => (Severity::Error, "ERROR"),
        Level::WARN => (Severity::Warn, "WARN"),
        Level::INFO => (Severity::Info, "INFO"),
        Level::DEBUG => (Severity::Debug, "DEBUG"),
        Level::TRACE => (Severity::Trace, "TRACE"),
    };
    record.set_severity_number(number);
    record.set_severity_text(text);
    record.set_target(target.to_owned());
    record.set_timestamp(std::time::SystemTime::now());
    if let Some(sc) = sc {
        record.set_trace_context(sc.trace_id(), sc.span_id(), Some(sc.trace_flags()));
    }
    let mut visitor = RecordVisitor(&mut record);
    event.record(&mut visitor);
    logger.emit(record);
}

/// Puts an event's fields on a log record: `message` as the body, others as attributes.
struct RecordVisitor<'a>(&'a mut SdkLogRecord);

impl RecordVisitor<'_> {
    fn put(&mut self, field: &Field, value: AnyValue) {
        match field.name() {
            "message" => self.0.set_body(value),
            name => self.0.add_attribute(name, value),
        }
    }
}

impl Visit for RecordVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        match i64::try_from(value) {
            Ok(value) => self.put(field, value.into()),
            Err(_) => self.put(field, value.to_string().into()),
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

impl<W> LogLayer<W> {
    /// `2026-11-22T10:00:00.123456Z  INFO [orders,<trace id>,<span id>] target: message k=v`,
    /// the bracket in Spring Boot's `[application,traceId,spanId]` shape.
    fn write_text(
        &self,
        buf: &mut String,
        event: &Event<'_>,
        sc: Option<&SpanContext>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if self.ansi {
            buf.push_str("\x1b[2m");
        }
        SystemTime.format_time(&mut Writer::new(buf))?;
        if self.ansi {
            buf.push_str("\x1b[0m");
        }
        let level = meta.level();
        if self.ansi {
            write!(buf, " {}{:>5}\x1b[0m ", level_color(level), level.as_str())?;
        } else {
            write!(buf, " {:>5} ", level.as_str())?;
        }
        buf.push('[');
        buf.push_str(&self.service);
        match sc {
            Some(sc) => write!(buf, ",{},{}] ", sc.trace_id(), sc.span_id())?,
            None => buf.push_str(",,] "),
        }
        buf.push_str(meta.target());
        buf.push(':');
        let mut visitor = TextVisitor {
            buf,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result
    }

    /// One JSON object per line: timestamp, level, service, trace_id, span_id, target, span,
    /// message and the event's own fields.
    fn write_json(
        &self,
        buf: &mut String,
        event: &Event<'_>,
        sc: Option<&SpanContext>,
        span_name: Option<&str>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut object = serde_json::Map::new();
        let mut ts = String::with_capacity(32);
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        object.insert("timestamp".into(), ts.into());
        object.insert("level".into(), meta.level().as_str().into());
        object.insert("service".into(), (*self.service).into());
        if let Some(sc) = sc {
            object.insert("trace_id".into(), sc.trace_id().to_string().into());
            object.insert("span_id".into(), sc.span_id().to_string().into());
        }
        object.insert("target".into(), meta.target().into());
        if let Some(name) = span_name {
            object.insert("span".into(), name.into());
        }
        event.record(&mut JsonVisitor(&mut object));
        let json = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
        buf.push_str(&json);
        Ok(())
    }
}

fn level_color(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

struct TextVisitor<'a> {
    buf: &'a mut String,
    result: fmt::Result,
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.result = self.result.and_then(|()| write!(self.buf, " {value}"));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.result = self.result.and_then(|()| match field.name() {
            "message" => write!(self.buf, " {value:?}"),
            name => write!(self.buf, " {name}={value:?}"),
        });
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        // Event fields never overwrite the line's own keys.
        let key = match name {
            "timestamp" | "level" | "service" | "trace_id" | "span_id" | "target" | "span" => {
                format!("field.{name}")
            }
            _ => name.to_owned(),
        };
        self.0.insert(key, value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}
