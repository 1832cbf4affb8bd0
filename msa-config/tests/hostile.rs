//! msa-config-server against unauthenticated clients: `/encrypt` and `/decrypt` are an
//! encryption and decryption oracle for every `{cipher}` value, and the actuator's
//! endpoints reveal the process; none is open to a client that has no business there.

use std::net::SocketAddr;

use msa_config::server::{Cipher, ConfigServer, DirRepository};
use msa_core::management::Management;

async fn serve(server: ConfigServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });
    addr
}

fn server(dir: &std::path::Path) -> ConfigServer {
    std::fs::write(dir.join("application.yml"), "shared: true\n").unwrap();
    ConfigServer::new(DirRepository::open(dir).unwrap())
        .cipher(Cipher::new(b"test key material, not for production").unwrap())
}

async fn post(addr: SocketAddr, path: &str, bearer: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .body("secret");
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// As the binary sets it up for `--bind 0.0.0.0:8888` without a token: the oracle is shut.
#[tokio::test]
async fn an_exposed_server_without_a_token_is_no_decryption_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let exposed = Management::none("0.0.0.0:8888".parse().unwrap());
    let addr = serve(server(dir.path()).management(exposed)).await;
    assert_eq!(post(addr, "/encrypt", None).await, 403);
    assert_eq!(post(addr, "/decrypt", None).await, 403);
    assert_eq!(post(addr, "/actuator/refresh", None).await, 403);
    // The configuration itself is served as before.
    let env = reqwest::get(format!("http://{addr}/orders/default"))
        .await
        .unwrap();
    assert_eq!(env.status(), 200);
}

#[tokio::test]
async fn with_a_token_the_oracle_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let guarded = Management::token("0.0.0.0:8888".parse().unwrap(), "t0ken");
    let addr = serve(server(dir.path()).management(guarded)).await;
    assert_eq!(post(addr, "/decrypt", None).await, 401);
    assert_eq!(post(addr, "/decrypt", Some("nope")).await, 401);
    assert_eq!(post(addr, "/encrypt", Some("t0ken")).await, 200);
    // A library user who set no management at all gets no oracle either.
    let unset = serve(server(dir.path())).await;
    assert_eq!(post(unset, "/encrypt", None).await, 403);
}

/// Basic credentials cover the actuator too (only the probes and info stay open), and
/// they open the oracle.
#[tokio::test]
async fn basic_credentials_cover_the_actuator_and_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let exposed = Management::none("0.0.0.0:8888".parse().unwrap());
    let server = server(dir.path())
        .management(exposed)
        .basic_auth("config", "s3cret");
    let addr = serve(server).await;
    let http = reqwest::Client::new();
    for open in [
        "/actuator/health",
        "/actuator/health/liveness",
        "/actuator/info",
    ] {
        let answer = http
            .get(format!("http://{addr}{open}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{open}");
    }
    for closed in ["/actuator/prometheus", "/actuator"] {
        let answer = http
            .get(format!("http://{addr}{closed}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401, "{closed}");
    }
    let scrape = http
        .get(format!("http://{addr}/actuator/prometheus"))
        .basic_auth("config", Some("s3cret"))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status(), 200);
    assert_eq!(post(addr, "/decrypt", None).await, 401);
    let sealed = http
        .post(format!("http://{addr}/encrypt"))
        .basic_auth("config", Some("s3cret"))
        .body("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(sealed.status(), 200);
}

#[path = "../../tests/support/listeners.rs"]
mod listeners;
#[path = "../../tests/support/tls.rs"]
mod tls;

/// An msa-config-server process over a directory, with the probes' limits and a
/// management listener; killed on drop.
struct ServerProcess {
    child: std::process::Child,
    main: SocketAddr,
    management: SocketAddr,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    fn start(more: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("application.yml"), "shared: true\n").unwrap();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (main, management) = (free(), free());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_msa-config-server"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--bind", &main.to_string()])
            .args(["--management-bind", &management.to_string()])
            .args(listeners::FLAGS)
            .args(more)
            .env_remove("MSA_MANAGEMENT_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        ServerProcess {
            child,
            main,
            management,
            _dir: dir,
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn every_listener_bounds_slow_idle_and_surplus_connections() {
    let server = ServerProcess::start(&[]);
    listeners::the_listener_contract_holds(server.main, server.management).await;
    // Configuration is served on the main listener only.
    assert_eq!(
        listeners::status(server.main, "/application/default").await,
        200
    );
    assert_eq!(
        listeners::status(server.management, "/application/default").await,
        404
    );
}

#[tokio::test]
async fn readiness_goes_down_on_sigterm_before_the_server_drains() {
    let server = ServerProcess::start(&["--shutdown-grace", "3s"]);
    listeners::wait_until_listening(server.main).await;
    listeners::readiness_goes_down_on_sigterm(server.child.id(), server.main).await;
}

#[tokio::test]
async fn the_ssl_flags_serve_https() {
    let ca = tls::TestCa::new();
    let flags = tls::server_flags(&ca);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = ServerProcess::start(&flags);
    tls::serves_https_only(server.main, &ca, "/application/default").await;
}
