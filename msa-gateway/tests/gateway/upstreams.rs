//! Upstreams beyond plain HTTP/1.1: WebSocket, gRPC over h2c, verified HTTPS, and the per-upstream connection cap.

use std::time::Duration;

use axum::Router;
use axum::routing::get;

use crate::support::{GatewayProcess, client, json_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_pass_through_with_their_close_codes() {
    use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite;

    // An upstream that echoes text and closes with code 4001 when told "bye".
    let app = Router::new().route(
        "/ws",
        get(|upgrade: WebSocketUpgrade| async move {
            upgrade.on_upgrade(|mut socket| async move {
                while let Some(Ok(message)) = socket.recv().await {
                    match message {
                        Message::Text(text) if text.as_str() == "bye" => {
                            let frame = CloseFrame {
                                code: 4001,
                                reason: "done".into(),
                            };
                            let _ = socket.send(Message::Close(Some(frame))).await;
                            break;
                        }
                        Message::Text(text) => {
                            let _ = socket
                                .send(Message::Text(format!("echo: {text}").into()))
                                .await;
                        }
                        _ => {}
                    }
                }
            })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let yaml = format!(
        "routes:\n  - id: ws\n    uri: http://{ws_addr}\n    predicates: [ 'Path=/live/**' ]\n    filters: [ 'RewritePath=/live/(?<rest>.*), /$\\{{rest}}' ]\n"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let url = gateway.url("/live/ws").replace("http://", "ws://");
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    socket
        .send(tungstenite::Message::text("hello"))
        .await
        .unwrap();
    let echoed = socket.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "echo: hello");
    socket
        .send(tungstenite::Message::text("bye"))
        .await
        .unwrap();
    match socket.next().await.unwrap().unwrap() {
        tungstenite::Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "done");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_passes_through_over_h2c_with_its_trailers() {
    use tonic_health::ServingStatus;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("inventory", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    let yaml = format!(
        "
routes:
  - id: health
    uri: http://{grpc}
    predicates: [ 'Path=/grpc.health.v1.Health/**' ]
    filters: [ 'AddResponseHeader=X-Via, gateway' ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let channel = tonic::transport::Endpoint::from_shared(gateway.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let answer = client
        .check(HealthCheckRequest {
            service: "inventory".into(),
        })
        .await
        .unwrap();
    assert_eq!(answer.metadata().get("x-via").unwrap(), "gateway");
    assert_eq!(answer.into_inner().status, ServingStatus::Serving as i32);
    // A gRPC error travels in the trailers: it must arrive as the same status.
    let error = client
        .check(HealthCheckRequest {
            service: "payments".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstreams_are_verified() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    // A private CA and a certificate for localhost signed by it.
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let ca_file = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
    std::fs::write(ca_file.path(), ca.pem()).unwrap();

    // An https upstream.
    let provider = msa_core::tls::provider();
    let server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let port = crate::support::https_upstream(server_config, b"over tls").await;

    let routes = format!(
        "routes:\n  - id: secure\n    uri: https://localhost:{port}\n    predicates: [ 'Path=/secure/**' ]\n"
    );
    let trusting = GatewayProcess::start(&format!(
        "server:\n  upstream-ca-file: '{}'\n{routes}",
        ca_file.path().display()
    ))
    .await;
    let response = client()
        .get(trusting.url("/secure/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "over tls");
    // Twice: the second request reuses the pooled TLS connection.
    let response = client()
        .get(trusting.url("/secure/y"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Without the private CA, the upstream's certificate is not trusted.
    let doubting = GatewayProcess::start(&routes).await;
    let response = client()
        .get(doubting.url("/secure/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    let message = json_of(response).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.to_ascii_lowercase().contains("certificate"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_an_upstream_are_capped_and_requests_queue_for_them() {
    // An upstream that counts the connections it accepts and answers after 100 ms.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"slow")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let gateway = GatewayProcess::start(&format!(
        "server:\n  workers: 1\n  max-connections-per-upstream: 2\n\
         routes:\n  - id: slow\n    uri: http://{addr}\n    predicates: [ Path=/** ]\n"
    ))
    .await;

    // Ten at once: two go out, eight wait for those connections, none fails.
    let requests = (0..10).map(|_| {
        let url = gateway.url("/x");
        tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
    });
    for request in requests.collect::<Vec<_>>() {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);

    // A bad value stops a reload with its key.
    std::fs::write(
        gateway.file.path(),
        "server:\n  max-connections-per-upstream: 0\nroutes: []\n",
    )
    .unwrap();
    let refused = gateway.refresh().await;
    assert_eq!(refused.status(), 400);
    let reason = refused.text().await.unwrap();
    assert!(
        reason.contains("server.max-connections-per-upstream: must be at least 1"),
        "{reason}"
    );
}
