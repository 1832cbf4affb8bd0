//! Logs and traces in one call: tracing-subscriber with trace ids on every line, an
//! OpenTelemetry tracer with OTLP export, and W3C propagation.
//!
//! [`Telemetry::init`] installs, process-wide:
//!
//! - a log layer writing one line per event to stderr, as text by default or JSON when
//!   `MSA_LOG_FORMAT=json`, filtered by `RUST_LOG` (default `info`). Every line written inside
//!   a span carries that span's OpenTelemetry trace id and span id; the text form puts them in
//!   Spring Boot's `[application,traceId,spanId]` bracket.
//! - an OpenTelemetry tracer behind `tracing-opentelemetry`, so `tracing` spans are
//!   OpenTelemetry spans with W3C ids. Spans are exported over OTLP when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the
//!   standard variables apply (`OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_HEADERS`,
//!   `OTEL_TRACES_SAMPLER`, `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_SDK_DISABLED`, ...). `service.name` is the application's name unless
//!   `OTEL_SERVICE_NAME` says otherwise.
//! - the same log events as OpenTelemetry log records, with their trace and span ids,
//!   exported over OTLP to the same endpoint (`/v1/logs`) whenever spans are, so a
//!   collector can show every line of one trace across services.
//!   `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` and `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL` set them
//!   apart; `OTEL_LOGS_EXPORTER=none` turns them off. The log filter applies to both.
//! - the W3C `traceparent`/`tracestate` and `baggage` propagator as OpenTelemetry's global
//!   propagator, used by [`ServerLayer`](crate::http::ServerLayer) and
//!   [`ClientLayer`](crate::http::ClientLayer).
//!
//! Keep the returned [`TelemetryGuard`]: dropping it (or calling
//! [`TelemetryGuard::shutdown`]) flushes the spans still buffered for export.
//!
//! # Examples
//!
//! ```no_run
//! # fn main() -> Result<(), msa_core::telemetry::TelemetryError> {
//! let _telemetry = msa_core::telemetry::Telemetry::new("orders")
//!     .version(env!("CARGO_PKG_VERSION"))
//!     .init()?;
//! tracing::info!("started");
//! # Ok(())
//! # }
//! ```

pub mod levels;
mod log;
pub mod propagation;

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

pub use self::levels::{LevelError, LoggerLevels, Loggers, loggers};
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;

use tracing::Dispatch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;

/// Selects the log format: `text` (default) or `json`.
pub const MSA_LOG_FORMAT: &str = "MSA_LOG_FORMAT";
/// The log filter, in `tracing-subscriber`'s `EnvFilter` syntax; `info` when unset.
pub const RUST_LOG: &str = "RUST_LOG";
/// The OTLP base endpoint; setting it (or [`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`]) turns
/// span export on.
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The OTLP endpoint for traces only, used as given.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// The OTLP protocol: `http/protobuf` (default), `http/json`, or `grpc` (needs the
/// `otlp-grpc` feature).
pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The OTLP protocol for traces only; wins over [`OTEL_EXPORTER_OTLP_PROTOCOL`].
pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
/// `true` turns OpenTelemetry export off.
pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
/// `none` turns span export off.
pub const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
/// Overrides the `service.name` resource attribute.
pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
/// `none` turns log export off while traces are still exported.
pub const OTEL_LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
/// The OTLP endpoint for log records only (the full URL, `.../v1/logs`).
pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
/// The OTLP protocol for log records only; wins over [`OTEL_EXPORTER_OTLP_PROTOCOL`].
pub const OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text, one line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "text" | "plain" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(TelemetryError::LogFormat(s.to_owned())),
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// `MSA_LOG_FORMAT` holds something other than `text` or `json`.
    #[error("{MSA_LOG_FORMAT}={0:?} is not a log format: use text or json")]
    LogFormat(String),
    /// The log filter does not parse.
    #[error("log filter {filter:?} is invalid: {source}")]
    Filter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP protocol is unknown or not compiled in.
    #[error("OTLP protocol {0:?} is not supported: use http/protobuf or http/json{grpc}", grpc = if cfg!(feature = "otlp-grpc") { " or grpc" } else { " (grpc needs msa-core's otlp-grpc feature)" })]
    Protocol(String),
    /// The OTLP exporter could not be built (a bad endpoint, say).
    #[error("OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A global subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    AlreadyInitialized,
}

/// Configures and installs logging and tracing; see the [module docs](self).
pub struct Telemetry {
    service_name: String,
    service_version: Option<String>,
    log_format: Option<LogFormat>,
    filter: Option<String>,
    otlp_endpoint: Option<String>,
    writer: Option<BoxMakeWriter>,
    propagator: Option<TextMapCompositePropagator>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("service_name", &self.service_name)
            .field("service_version", &self.service_version)
            .field("log_format", &self.log_format)
            .field("filter", &self.filter)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Telemetry for the application `service_name`, configured from the environment.
    pub fn new(service_name: impl Into<String>) -> Self {
        Telemetry {
            service_name: service_name.into(),
            service_version: None,
            log_format: None,
            filter: None,
            otlp_endpoint: None,
            writer: None,
            propagator: None,
        }
    }

    /// The application's version, exported as `service.version`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.service_version = Some(version.into());
        self
    }

    /// The log format, instead of reading `MSA_LOG_FORMAT`.
    pub fn log_format(mut self, format: LogFormat) -> Self {
        self.log_format = Some(format);
        self
    }

    /// The log filter (`EnvFilter` syntax), instead of reading `RUST_LOG`.
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Export spans over OTLP/HTTP to this base endpoint (`http://collector:4318`; msa
    /// appends `/v1/traces`), instead of reading `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.otlp_endpoint = Some(endpoint.into());
        self
    }

    /// Propagates context with these propagators (B3, Jaeger, ...) instead of W3C Trace
    /// Context and Baggage. msa's layers then extract and inject through OpenTelemetry's
    /// global propagator.
    pub fn propagator(
        mut self,
        propagators: Vec<Box<dyn opentelemetry::propagation::TextMapPropagator + Send + Sync>>,
    ) -> Self {
        self.propagator = Some(TextMapCompositePropagator::new(propagators));
        self
    }

    /// Where log lines go; stderr by default.
    pub fn writer<W>(mut self, make_writer: W) -> Self
    where
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        self.writer = Some(BoxMakeWriter::new(make_writer));
        self
    }

    /// Builds the subscriber and tracer without installing them globally, for scoped use
    /// with [`tracing::dispatcher::with_default`]. The W3C propagator is installed globally.
    pub fn build(self) -> Result<(Dispatch, TelemetryGuard), TelemetryError> {
        let format = match self.log_format {
            Some(format) => format,
            None => std::env::var(MSA_LOG_FORMAT)
                .ok()
                .map(|v| v.parse())
                .transpose()?
                .unwrap_or_default(),
        };
        let filter_text = self
            .filter
            .or_else(|| {
                std::env::var(RUST_LOG)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
            })
            .unwrap_or_else(|| "info".to_owned());
        let filter = EnvFilter::try_new(&filter_text).map_err(|source| TelemetryError::Filter {
            filter: filter_text.clone(),
            source,
        })?;
        let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
        let loggers = Loggers::new(handle, &filter_text);

        let resource = resource(&self.service_name, self.service_version.as_deref());
        let exporting = export_protocol(TRACES, self.otlp_endpoint.as_deref()).is_some();
        let provider = tracer_provider(resource.clone(), self.otlp_endpoint.as_deref())?;
        let logs = logger_provider(resource, self.otlp_endpoint.as_deref())?;
        let tracer = provider.tracer("msa");
        // A sampler of the user's own decides which new traces are sampled, which only a
        // span built by the SDK asks it.
        let default_sampler = env_flag("OTEL_TRACES_SAMPLER")
            .is_none_or(|s| s == "parentbased_always_on" || s == "always_on");
        let context_only = !exporting && self.propagator.is_none() && default_sampler;
        match self.propagator {
            Some(propagator) => {
                opentelemetry::global::set_text_map_propagator(propagator);
                propagation::set_w3c_only(false);
            }
            None => {
                opentelemetry::global::set_text_map_propagator(propagation::w3c_propagator());
                propagation::set_w3c_only(true);
            }
        }

        let (writer, ansi) = match self.writer {
            Some(writer) => (writer, false),
            None => (
                BoxMakeWriter::new(std::io::stderr),
                std::io::stderr().is_terminal(),
            ),
        };
        let service: Arc<str> = self.service_name.into();
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_tracked_inactivity(false)
                    .with_threads(false)
                    .with_location(false)
                    .with_target(false),
            )
            .with(log::LogLayer::new(format, service, ansi, writer).export(logs.as_ref()));
        Ok((
            Dispatch::new(subscriber),
            TelemetryGuard {
                provider: Some(provider),
                logs,
                loggers: Some(loggers),
                context_only,
            },
        ))
    }

    /// Installs logging, tracing and propagation for the whole process.
    ///
    /// Fails if a global subscriber is already installed, a variable holds a bad value, or
    /// the OTLP exporter cannot be built.
    pub fn init(self) -> Result<TelemetryGuard, TelemetryError> {
        // Checked first, so a second call changes nothing (propagator, exporter threads).
        if tracing::dispatcher::has_been_set() {
            return Err(TelemetryError::AlreadyInitialized);
        }
        crate::metrics::set_application(self.service_name.clone());
        let (dispatch, guard) = self.build()?;
        tracing::dispatcher::set_global_default(dispatch)
            .map_err(|_| TelemetryError::AlreadyInitialized)?;
        if let Some(provider) = &guard.provider {
            opentelemetry::global::set_tracer_provider(provider.clone());
        }
        if let Some(loggers) = &guard.loggers {
            loggers.install_global();
        }
        propagation::set_context_only(guard.context_only);
        Ok(guard)
    }
}

fn env_flag(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The OTLP protocol to export one signal with, or `None` when that signal is not
/// exported: nothing configured, the SDK disabled, or `OTEL_<SIGNAL>_EXPORTER=none`.
fn export_protocol(signal: Signal, endpoint: Option<&str>) -> Option<String> {
    let disabled = env_flag(OTEL_SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || env_flag(signal.exporter).is_some_and(|v| v.eq_ignore_ascii_case("none"));
    let configured = endpoint.is_some()
        || env_flag(OTEL_EXPORTER_OTLP_ENDPOINT).is_some()
        || env_flag(signal.endpoint).is_some();
    (!disabled && configured).then(|| {
        env_flag(signal.protocol)
            .or_else(|| env_flag(OTEL_EXPORTER_OTLP_PROTOCOL))
            .unwrap_or_else(|| "http/protobuf".to_owned())
    })
}

/// The variables of one OTLP signal.
#[derive(Clone, Copy)]
struct Signal {
    exporter: &'static str,
    endpoint: &'static str,
    protocol: &'static str,
    /// The path appended to a base endpoint given in code.
    path: &'static str,
}

const TRACES: Signal = Signal {
    exporter: OTEL_TRACES_EXPORTER,
    endpoint: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    protocol: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    path: "/v1/traces",
};

const LOGS: Signal = Signal {
    exporter: OTEL_LOGS_EXPORTER,
    endpoint: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    protocol: OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
    path: "/v1/logs",
};

/// Builds the OTLP exporter `$builder` (a `SpanExporter` or `LogExporter` builder) for
/// `$signal` over `$protocol`, to `$endpoint` when one was given in code.
macro_rules! otlp_exporter {
    ($builder:expr, $signal:expr, $protocol:expr, $endpoint:expr) => {
        match $protocol.as_str() {
            "http/protobuf" | "http/json" => {
                let mut http = $builder
                    .with_http()
                    .with_protocol(if $protocol == "http/json" {
                        opentelemetry_otlp::Protocol::HttpJson
                    } else {
                        opentelemetry_otlp::Protocol::HttpBinary
                    });
                if let Some(endpoint) = $endpoint {
                    http = http.with_endpoint(format!(
                        "{}{}",
                        endpoint.trim_end_matches('/'),
                        $signal.path
                    ));
                }
                http.build()?
            }
            #[cfg(feature = "otlp-grpc")]
            "grpc" => {
                let mut grpc = $builder.with_tonic();
                if let Some(endpoint) = $endpoint {
                    grpc = grpc.with_endpoint(endpoint.to_owned());
                }
                grpc.build()?
            }
            other => return Err(TelemetryError::Protocol(other.to_owned())),
        }
    };
}

fn resource(service_name: &str, version: Option<&str>) -> Resource {
    let mut resource = Resource::builder();
    if env_flag(OTEL_SERVICE_NAME).is_none() {
        resource = resource.with_service_name(service_name.to_owned());
    }
    if let Some(version) = version {
        resource = resource.with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            version.to_owned(),
        ));
    }
    resource.build()
}

fn tracer_provider(
    resource: Resource,
    endpoint: Option<&str>,
) -> Result<SdkTracerProvider, TelemetryError> {
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(protocol) = export_protocol(TRACES, endpoint) {
        let exporter = otlp_exporter!(
            opentelemetry_otlp::SpanExporter::builder(),
            TRACES,
            protocol,
            endpoint
        );
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The log provider exporting log records over OTLP, when logs are exported.
fn logger_provider(
    resource: Resource,
    endpoint: Option<&str>,
) -> Result<Option<SdkLoggerProvider>, TelemetryError> {
    let Some(protocol) = export_protocol(LOGS, endpoint) else {
        return Ok(None);
    };
    let exporter = otlp_exporter!(
        opentelemetry_otlp::LogExporter::builder(),
        LOGS,
        protocol,
        endpoint
    );
    Ok(Some(
        SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// Flushes and stops span export when dropped or shut down. Returned by
/// [`Telemetry::init`].
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    logs: Option<SdkLoggerProvider>,
    loggers: Option<Loggers>,
    /// Whether a request's trace context is all this telemetry needs of it (W3C
    /// propagation, no trace exporter): see [`propagation::context_only`].
    context_only: bool,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard").finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// The log levels of the subscriber this guard came with, to change them at run time.
    pub fn loggers(&self) -> Option<&Loggers> {
        self.loggers.as_ref()
    }

    /// Exports every finished span still buffered, waiting up to the exporter's timeout.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            eprintln!("msa: flushing spans failed: {error}");
        }
        if let Some(logs) = &self.logs
            && let Err(error) = logs.force_flush()
        {
            eprintln!("msa: flushing log records failed: {error}");
        }
    }

    /// Flushes buffered spans and stops the exporter.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(logs) = self.logs.take()
            && let Err(error) = logs.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("msa: stopping log export: {error}");
        }
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            // Shutting down a provider with nothing to export reports "already shut down"
            // on some paths; neither case is worth more than a line.
            eprintln!("msa: stopping span export: {error}");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The current span's trace id as 32 hex digits, if the current span has one.
///
/// Useful for error bodies and response headers that let users quote a trace.
pub fn current_trace_id() -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_string())
}
