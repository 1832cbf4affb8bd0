//! What every process of the shop shares: its command-line options, the `App` wiring,
//! how it reports where it listens, and how it stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use msa::shutdown::Shutdown;
use tokio::io::AsyncReadExt;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Options of a service process (orders, inventory, payments).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServiceArgs {
    /// msa-registry's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8761")]
    pub(crate) registry: String,
    /// msa-config-server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8888")]
    pub(crate) config: String,
    /// The data directory: each service keeps its SQLite database there
    /// (`<service>.db`, shared by its instances).
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// The NATS server the services' messages go through.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub(crate) nats: String,
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) bind: String,
    /// Stop (cleanly) when stdin closes: the estate's way of stopping its children, which
    /// also stops them if the estate itself dies.
    #[arg(long)]
    pub(crate) stop_on_eof: bool,
    /// Seconds between lease renewals (the lease lasts three renewals).
    #[arg(long, default_value_t = 10)]
    pub(crate) renewal_secs: u64,
}

/// An msa `App` for a shop service: registered with the registry, configured by the
/// config server (with a last-known-good copy in the data directory for when the config
/// server is down at start), its database `<data>/<name>.db` and its messages on NATS.
pub(crate) fn app(name: &str, args: &ServiceArgs) -> msa::App {
    let cache = args.data.join("config-cache").join(format!("{name}.json"));
    let client = msa::config::client::ConfigClient::new(name)
        .uri(args.config.clone())
        .cache_file(cache);
    msa::App::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .bind(args.bind.clone())
        .registry(args.registry.clone())
        .lease(
            Duration::from_secs(args.renewal_secs.max(1)),
            Duration::from_secs(3 * args.renewal_secs.max(1)),
        )
        .config_client(client)
        .set(
            "spring.datasource.url",
            format!(
                "sqlite://{}",
                args.data.join(format!("{name}.db")).display()
            ),
        )
        .set("spring.cloud.stream.default-binder", "nats")
        .set("spring.cloud.stream.binders.nats.type", "nats")
        .set("spring.cloud.stream.binders.nats.url", args.nats.clone())
        .handle_signals(true)
}

/// Tells the process that started this one where it listens: the first line on stdout.
pub(crate) fn announce(addr: SocketAddr) {
    println!("listening on http://{addr}");
}

/// Announces where `running` listens, stops it when stdin closes (`--stop-on-eof`), and
/// waits for it to stop.
pub(crate) async fn serve(running: msa::Running, args: &ServiceArgs) -> Result<(), BoxError> {
    announce(running.local_addr());
    if args.stop_on_eof {
        stop_on_eof(running.shutdown_handle());
    }
    Ok(running.wait().await?)
}

/// Triggers `shutdown` when stdin reaches its end.
pub(crate) fn stop_on_eof(shutdown: &Shutdown) {
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buffer = [0u8; 256];
        while let Ok(n) = stdin.read(&mut buffer).await {
            if n == 0 {
                break;
            }
        }
        shutdown.trigger();
    });
}

/// The service's database (`<data>/<name>.db`, msa-events' tables migrated) with the
/// service's own tables made by `schema` when missing.
pub(crate) async fn database(
    app: &mut msa::App,
    schema: &str,
) -> Result<msa::events::Store, BoxError> {
    let store = app.events_store().await?;
    msa::events::sqlx::raw_sql(schema)
        .execute(store.pool())
        .await?;
    Ok(store)
}

/// A JSON error answer: `{"error": reason}`.
pub(crate) fn error(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": reason.into() }))).into_response()
}

/// A database failure as a 500 (logged).
pub(crate) fn storage(failure: impl std::fmt::Display) -> Response {
    tracing::error!(error = %failure, "storage failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("storage: {failure}"),
    )
}

/// Amounts are kept in cents; prices in the config are decimal.
pub(crate) fn cents(amount: f64) -> i64 {
    (amount * 100.0).round() as i64
}

/// An item name as the shop accepts it: lowercase letters, digits and dashes.
pub(crate) fn valid_item(item: &str) -> bool {
    !item.is_empty()
        && item.len() <= 64
        && item
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An order id as orders makes them (checked so a bad one cannot grow a table).
pub(crate) fn valid_order_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The order an event is about (its aggregate id header), when it is a valid order id.
pub(crate) fn order_id(message: &msa::stream::message::Message<serde_json::Value>) -> Option<&str> {
    message
        .headers
        .get(msa::events::event_store::AGGREGATE_ID)
        .map(String::as_str)
        .filter(|id| valid_order_id(id))
}

/// A text field of an event's payload, at most `max` characters (events come from a
/// peer: what is kept or logged of them is bounded).
pub(crate) fn text(payload: &serde_json::Value, field: &str, max: usize) -> String {
    payload[field]
        .as_str()
        .unwrap_or_default()
        .chars()
        .take(max)
        .collect()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
