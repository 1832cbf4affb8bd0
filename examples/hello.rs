//! Run with: cargo run --release --example hello
//!
//! Two services in two processes, wired with msa: `greeter` (on 127.0.0.1:8080, or
//! `$GREETER_BIND`) answers `GET /greet/{id}` by calling `names` (on a free port) through a
//! traced reqwest client. Both log with the same trace id for one request, continue an
//! incoming `traceparent`, and serve `/actuator/health`, `/actuator/info` and
//! `/actuator/prometheus`. Ctrl-C stops both cleanly.
//!
//! Set `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318` to export the spans to an OTLP
//! collector, and `MSA_LOG_FORMAT=json` for JSON logs.

use std::process::Stdio;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use msa::App;
use msa::http::TraceMiddleware;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tokio::io::{AsyncBufReadExt, BufReader};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const NAMES: [&str; 4] = ["Ada", "Barbara", "Grace", "Margaret"];

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match std::env::args().nth(1).as_deref() {
        Some("names") => names().await,
        _ => greeter().await,
    }
}

/// The downstream service: looks a name up by id.
async fn names() -> Result<(), BoxError> {
    let router = Router::new().route("/names/{id}", get(name));
    let running = App::new("names")
        .version(env!("CARGO_PKG_VERSION"))
        .bind("127.0.0.1:0")
        .router(router)
        .start()
        .await?;
    // The first line on stdout tells the parent where we listen.
    println!("{}", running.local_addr());
    Ok(running.wait().await?)
}

async fn name(Path(id): Path<usize>) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    tracing::info!(id, "looking up name");
    match NAMES.get(id) {
        Some(name) => Ok(Json(serde_json::json!({ "id": id, "name": name }))),
        None => Err((StatusCode::NOT_FOUND, format!("no name with id {id}"))),
    }
}

#[derive(Clone)]
struct Greeter {
    client: ClientWithMiddleware,
    names: String,
}

/// The front service: greets by calling `names`.
async fn greeter() -> Result<(), BoxError> {
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("names")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("names has no stdout")?;
    let names_addr = BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .ok_or("names exited before it started listening")?;

    let client = ClientBuilder::new(reqwest::Client::new())
        .with(TraceMiddleware::new())
        .build();
    let state = Greeter {
        client,
        names: format!("http://{names_addr}"),
    };
    let router = Router::new()
        .route("/greet/{id}", get(greet))
        .with_state(state);
    let bind = std::env::var("GREETER_BIND").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let running = App::new("greeter")
        .version(env!("CARGO_PKG_VERSION"))
        .bind(bind)
        .router(router)
        .start()
        .await?;
    let addr = running.local_addr();
    // One write, and a closed stdout (piped into `head`, say) is no reason to stop.
    let banner = format!(
        "\n  greeter  http://{addr}        (calls names)\n  names    http://{names_addr}\n\n  \
         curl http://{addr}/greet/2\n  \
         curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' http://{addr}/greet/0\n  \
         curl http://{addr}/actuator/health\n  \
         curl http://{addr}/actuator/prometheus | grep http_server_requests\n\n  \
         Ctrl-C stops both.\n\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), banner.as_bytes());

    let result = running.wait().await;
    stop(&mut child).await;
    Ok(result?)
}

async fn greet(
    State(greeter): State<Greeter>,
    Path(id): Path<usize>,
) -> Result<String, (StatusCode, String)> {
    tracing::info!(id, "greeting");
    let url = format!("{}/names/{id}", greeter.names);
    let response = greeter.client.get(&url).send().await.map_err(|e| {
        (
            StatusCode::BAD_GATEWAY,
            format!("names is unreachable: {e}"),
        )
    })?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err((StatusCode::NOT_FOUND, format!("nobody has id {id}")));
    }
    let body: serde_json::Value = response
        .error_for_status()
        .map_err(|e| (StatusCode::BAD_GATEWAY, e.to_string()))?
        .json()
        .await
        .map_err(|e| {
            (
                StatusCode::BAD_GATEWAY,
                format!("names answered badly: {e}"),
            )
        })?;
    let name = body["name"].as_str().unwrap_or("stranger");
    tracing::info!(name, "greeted");
    Ok(format!("Hello, {name}!\n"))
}

/// Asks the child to stop (SIGTERM; it may already have had the terminal's SIGINT) and
/// kills it if it has not stopped within five seconds.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
