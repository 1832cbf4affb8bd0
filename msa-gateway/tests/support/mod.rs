//! What the gateway's tests share: an echoing upstream and the msa-gateway binary started
//! on a file.

#![allow(dead_code)] // each test file uses a part

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};

#[path = "../../../tests/support/listeners.rs"]
pub(crate) mod listeners;

/// An upstream that echoes what it got as JSON, with a few special paths.
pub(crate) async fn upstream(name: &'static str) -> SocketAddr {
    async fn echo(name: &'static str, request: Request) -> impl IntoResponse {
        let headers: serde_json::Map<String, Value> = request
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        // Names that came more than once (`headers` keeps the last of each).
        let repeated: Vec<String> = request
            .headers()
            .keys()
            .filter(|k| request.headers().get_all(*k).iter().count() > 1)
            .map(ToString::to_string)
            .collect();
        let body = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        axum::Json(json!({
            "upstream": name,
            "headers": headers,
            "repeated": repeated,
            "body": String::from_utf8_lossy(&body),
        }))
    }
    let app = Router::new()
        .route(
            "/status/{code}",
            get(
                |axum::extract::Path(code): axum::extract::Path<u16>| async move {
                    StatusCode::from_u16(code).unwrap()
                },
            ),
        )
        .route(
            "/dup",
            get(|| async {
                let mut headers = HeaderMap::new();
                headers.append("access-control-allow-origin", "*".parse().unwrap());
                headers.append(
                    "access-control-allow-origin",
                    "https://a.example".parse().unwrap(),
                );
                headers.insert("x-internal", "secret".parse().unwrap());
                (headers, "dup")
            }),
        )
        .route("/fail-times/{key}/{n}", get(fail_times).post(fail_times))
        .route("/retry-after/{key}/{seconds}", get(retry_after))
        .route(
            "/redirect",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "http://internal.example:9000/next?x=1")],
                )
            }),
        )
        .fallback(move |request: Request| async move {
            let path = request.uri().path().to_owned();
            let query = request.uri().query().map(str::to_owned);
            let mut answer = echo(name, request).await.into_response();
            let extra = json!({"path": path, "query": query});
            answer
                .headers_mut()
                .insert("x-echo-path", path.parse().unwrap());
            let _ = extra;
            answer
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// 500 for the first `n` calls with this key, then the body echoed.
async fn fail_times(
    axum::extract::Path((key, n)): axum::extract::Path<(String, usize)>,
    body: String,
) -> (StatusCode, String) {
    static CALLS: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());
    let mut calls = CALLS.lock().unwrap();
    let count = match calls.iter_mut().find(|(k, _)| *k == key) {
        Some((_, count)) => {
            *count += 1;
            *count
        }
        None => {
            calls.push((key, 1));
            1
        }
    };
    if count <= n {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failure {count}"),
        )
    } else {
        (StatusCode::OK, format!("ok after {n}: {body}"))
    }
}

/// 503 with `Retry-After: {seconds}` for the first call with this key; then 200 with the
/// calls so far and the milliseconds since the first.
async fn retry_after(
    axum::extract::Path((key, seconds)): axum::extract::Path<(String, u64)>,
) -> axum::response::Response {
    static FIRST: std::sync::Mutex<Vec<(String, std::time::Instant, usize)>> =
        std::sync::Mutex::new(Vec::new());
    let mut first = FIRST.lock().unwrap();
    match first.iter_mut().find(|(k, ..)| *k == key) {
        Some((_, at, calls)) => {
            *calls += 1;
            format!(
                "calls {calls}, {} ms after the first",
                at.elapsed().as_millis()
            )
            .into_response()
        }
        None => {
            first.push((key, std::time::Instant::now(), 1));
            let wait = seconds.to_string();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", wait)],
                "later",
            )
                .into_response()
        }
    }
}

pub(crate) struct GatewayProcess {
    child: Child,
    pub(crate) base: String,
    pub(crate) file: tempfile::NamedTempFile,
    /// Where its standard error (its log) goes.
    log: tempfile::NamedTempFile,
}

impl GatewayProcess {
    pub(crate) async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, "127.0.0.1", &[]).await
    }

    /// Started with TLS (the file's `server.ssl`): ready once it accepts connections.
    pub(crate) async fn start_tls(yaml: &str) -> Self {
        let gateway = Self::spawn(yaml, "127.0.0.1", &[], &[]);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(gateway.addr()).await.is_ok() {
                return gateway;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        drop(gateway); // kills the process
        panic!("msa-gateway did not start");
    }

    /// Started with more environment variables.
    pub(crate) async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Self {
        Self::ready(Self::spawn(yaml, "127.0.0.1", &[], env)).await
    }

    /// Started on `ip` (reached through 127.0.0.1) with more arguments.
    pub(crate) async fn start_with(yaml: &str, ip: &str, args: &[&str]) -> Self {
        Self::ready(Self::spawn(yaml, ip, args, &[])).await
    }

    /// `gateway`, once its health endpoint answers.
    async fn ready(gateway: Self) -> Self {
        for _ in 0..200 {
            if reqwest::get(gateway.url("/actuator/health")).await.is_ok() {
                return gateway;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        drop(gateway); // kills the process
        panic!("msa-gateway did not start");
    }

    /// The process, started on a free port of `ip`.
    fn spawn(yaml: &str, ip: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        std::fs::write(file.path(), yaml).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_msa-gateway"))
            .arg("--config")
            .arg(file.path())
            .args(["--bind", &format!("{ip}:{port}")])
            .args(args)
            .env_remove("MSA_MANAGEMENT_TOKEN")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        GatewayProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
            file,
            log,
        }
    }

    /// Waits (up to 10 s) until the gateway's log has a line containing `text`.
    #[allow(dead_code)] // not every test binary reads the log
    pub(crate) async fn wait_log(&self, text: &str) {
        for _ in 0..400 {
            let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
            if log.contains(text) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the gateway never logged {text:?}");
    }

    /// The resident memory of the gateway's process, from `/proc`, in bytes.
    pub(crate) fn rss(&self) -> u64 {
        listeners::rss(self.child.id())
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The main listener's address.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        self.base.trim_start_matches("http://").parse().unwrap()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`, redirects not followed.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        client().get(self.url(path)).send().await.unwrap()
    }

    /// POST /actuator/gateway/refresh.
    pub(crate) async fn refresh(&self) -> reqwest::Response {
        client()
            .post(self.url("/actuator/gateway/refresh"))
            .send()
            .await
            .unwrap()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A GET sent as written, without a client's normalization; the answer's head.
pub(crate) async fn raw(gateway: &GatewayProcess, target: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

pub(crate) async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

/// An HTTPS upstream on a free loopback port (HTTP/1.1, TLS as `config` says) answering
/// every request with `body`; its port.
#[allow(dead_code)] // not every test binary has an https upstream
pub(crate) async fn https_upstream(config: rustls::ServerConfig, body: &'static [u8]) -> u16 {
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_request| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(body)),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}
