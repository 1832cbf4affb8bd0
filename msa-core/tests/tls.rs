//! TLS on msa's listeners and clients, with a CA made in the test: HTTPS with a custom
//! root, HTTP/2 by ALPN, client certificates required, wanted, or from the wrong CA.

#[path = "../../tests/support/tls.rs"]
mod ca;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use msa_core::listener::{Limits, Listeners, PeerCertificates};
use msa_core::shutdown::Shutdown;
use msa_core::tls::{ClientAuth, ClientTls, ServerTls};

/// Serves a route that says whether the client presented a certificate.
async fn serve(tls: ServerTls) -> (String, Shutdown) {
    let app = Router::new().route(
        "/who",
        get(|request: axum::extract::Request| async move {
            match request.extensions().get::<PeerCertificates>() {
                Some(chain) => format!("certificate ({} in chain)", chain.0.len()),
                None => "anonymous".to_owned(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = Limits {
        header_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let listeners = Listeners::new(listener, app)
        .limits(limits)
        .tls(tls.config().unwrap());
    let shutdown = Shutdown::new();
    let serving = shutdown.clone();
    tokio::spawn(async move { serving.serve_with(listeners).await });
    (format!("https://localhost:{port}/who"), shutdown)
}

fn client(tls: ClientTls) -> reqwest::Client {
    tls.reqwest_builder().unwrap().build().unwrap()
}

#[tokio::test]
async fn https_with_a_private_ca_and_http2_by_alpn() {
    let ca = ca::TestCa::new();
    let (url, shutdown) = serve(ServerTls::new(&ca.server_certificate, &ca.server_key)).await;

    let trusting = client(ClientTls::default().trust_certificate(&ca.ca));
    let response = trusting.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.text().await.unwrap(), "anonymous");

    // The public roots alone do not know the test CA.
    let error = client(ClientTls::default())
        .get(&url)
        .send()
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");

    // Plain HTTP to a TLS listener gets nothing useful back.
    let plain = url.replace("https://", "http://");
    assert!(reqwest::get(&plain).await.is_err());
    shutdown.trigger();
}

#[tokio::test]
async fn client_certificates_needed_wanted_or_refused() {
    let ca = ca::TestCa::new();
    let (url, shutdown) = serve(
        ServerTls::new(&ca.server_certificate, &ca.server_key)
            .client_auth(ClientAuth::Need, &ca.ca),
    )
    .await;
    let with_certificate = client(
        ClientTls::default()
            .trust_certificate(&ca.ca)
            .identity(&ca.client_certificate, &ca.client_key),
    );
    let response = with_certificate.get(&url).send().await.unwrap();
    assert_eq!(response.text().await.unwrap(), "certificate (1 in chain)");

    let without = client(ClientTls::default().trust_certificate(&ca.ca));
    assert!(
        without.get(&url).send().await.is_err(),
        "no certificate, no answer"
    );
    shutdown.trigger();

    // A certificate from a CA the server does not trust is refused.
    let (url, shutdown) = serve(
        ServerTls::new(&ca.server_certificate, &ca.server_key)
            .client_auth(ClientAuth::Need, &ca.other_ca),
    )
    .await;
    assert!(with_certificate.get(&url).send().await.is_err());
    shutdown.trigger();

    // `want`: a certificate is checked if given; clients without one are served too.
    let (url, shutdown) = serve(
        ServerTls::new(&ca.server_certificate, &ca.server_key)
            .client_auth(ClientAuth::Want, &ca.ca),
    )
    .await;
    let answer = |c: &reqwest::Client| c.get(&url).send();
    assert_eq!(
        answer(&without).await.unwrap().text().await.unwrap(),
        "anonymous"
    );
    assert_eq!(
        answer(&with_certificate)
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "certificate (1 in chain)"
    );
    shutdown.trigger();
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_deadline() {
    use tokio::io::AsyncReadExt;
    let ca = ca::TestCa::new();
    let (url, shutdown) = serve(ServerTls::new(&ca.server_certificate, &ca.server_key)).await;
    let addr = url
        .trim_start_matches("https://localhost:")
        .trim_end_matches("/who");
    let mut stream = tokio::net::TcpStream::connect(format!("127.0.0.1:{addr}"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    shutdown.trigger();
}

#[test]
fn bad_files_are_named() {
    let ca = ca::TestCa::new();
    let error = ServerTls::new(&ca.server_certificate, &ca.ca)
        .config()
        .unwrap_err();
    assert_eq!(error.file, ca.ca.display().to_string());
    let error = ServerTls::new("/nonexistent.pem", &ca.server_key)
        .config()
        .unwrap_err();
    assert_eq!(error.file, "/nonexistent.pem");
    let error = ClientTls::default()
        .trust_certificate(&ca.server_key)
        .config()
        .unwrap_err();
    assert!(error.reason.contains("no PEM certificate"), "{error}");
    let error = ServerTls::new(&ca.server_certificate, &ca.server_key)
        .client_auth(ClientAuth::Need, &ca.ca);
    let error = ServerTls {
        trust_certificate: vec![],
        ..error
    }
    .config()
    .unwrap_err();
    assert_eq!(error.file, "server.ssl.trust-certificate");
    // Off unless a certificate is given or it is enabled.
    assert!(ServerTls::default().config().unwrap().is_none());
}
