//! TLS: the gateway terminating it with a certificate per server name (SNI), HTTP/2 or
//! HTTP/1.1 through ALPN, certificate files reloaded while it runs; and a client
//! certificate for upstreams that ask for one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{GatewayProcess, client, upstream};

/// The echoing upstream's answer, read from a response hyper's client got.
async fn echo_of(response: http::Response<hyper::body::Incoming>) -> serde_json::Value {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// A private CA, and certificates it signs.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names`, written to `<dir>/<file>.crt` and `.key`; its DER.
    fn leaf(&self, names: &[&str], dir: &Path, file: &str) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
        cert.der().clone()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        roots
    }
}

use rustls::pki_types::pem::PemObject;

/// A TLS connection to `addr` asking for `name`, offering `alpn`.
async fn connect(
    addr: SocketAddr,
    name: &str,
    ca: &Ca,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = rustls::ClientConfig::builder_with_provider(msa_core::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(name.to_owned()).unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// The certificate the gateway presents for `name`.
async fn presented(addr: SocketAddr, name: &str, ca: &Ca) -> CertificateDer<'static> {
    let stream = connect(addr, name, ca, &[b"http/1.1"]).await;
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_certificate_per_name_h2_through_alpn_and_reloads() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let default = ca.leaf(&["localhost"], dir.path(), "default");
    let api = ca.leaf(&["api.example", "*.api.example"], dir.path(), "api");
    let a = upstream("a").await;
    let d = dir.path().display();
    let yaml = format!(
        "
server:
  ssl:
    certificate: {d}/default.crt
    certificate-private-key: {d}/default.key
    server-name-bundles:
      - {{ server-name: api.example, bundle: api }}
      - {{ server-name: '*.api.example', bundle: api }}
spring:
  ssl:
    bundle:
      pem:
        api:
          keystore: {{ certificate: {d}/api.crt, private-key: {d}/api.key }}
routes:
  - id: a
    uri: http://{a}
    predicates: [ 'Path=/a/**' ]
  - id: b
    uri: http://{a}
    predicates: [ 'Path=/b/**' ]
    filters: [ 'AddRequestHeader=X-Via, gateway' ]
"
    );
    let gateway = GatewayProcess::start_tls(&yaml).await;
    let addr = gateway.addr();

    // SNI: the name's certificate, a wildcard's, or the default.
    assert_eq!(presented(addr, "api.example", &ca).await, api);
    assert_eq!(presented(addr, "eu.api.example", &ca).await, api);
    assert_eq!(presented(addr, "localhost", &ca).await, default);

    // HTTP/2 when the client offers it, HTTP/1.1 otherwise.
    let stream = connect(addr, "api.example", &ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("https://api.example/a/over-h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["x-echo-path"], "/a/over-h2");
    let echo = echo_of(response).await;
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https", "{echo}");
    let stream = connect(addr, "localhost", &ca, &[b"http/1.1"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(connection);
    // Requests after requests on the one connection, forwarded line by line (`/a`) and
    // through a header map (`/b`): the upstream is told the client spoke https.
    for path in ["/a/over-h1", "/b/over-h1", "/a/again", "/b/again"] {
        let request = http::Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        sender.ready().await.expect("the connection is kept");
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let echo = echo_of(response).await;
        assert_eq!(echo["upstream"], "a");
        assert_eq!(
            echo["headers"]["x-forwarded-proto"], "https",
            "{path}: {echo}"
        );
        let forwarded = echo["headers"]["forwarded"].as_str().unwrap();
        assert!(forwarded.contains(";proto=https;"), "{path}: {forwarded}");
    }
    // A chunked body is hyper's, over the same TLS connection the loop read the head from.
    let mut stream = connect(addr, "localhost", &ca, &[b"http/1.1"]).await;
    stream
        .write_all(
            b"POST /a/chunked HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\"body\":\"hello\"") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));

    // A renewed certificate is served without a restart...
    let renewed = ca.leaf(&["localhost"], dir.path(), "default");
    let mut served = presented(addr, "localhost", &ca).await;
    for _ in 0..200 {
        if served == renewed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        served = presented(addr, "localhost", &ca).await;
    }
    assert_eq!(served, renewed);
    // ...and a file that does not read keeps the certificates in use.
    std::fs::write(dir.path().join("default.crt"), "not a certificate").unwrap();
    gateway
        .wait_log("the new TLS certificates were rejected; the old ones stay")
        .await;
    assert_eq!(presented(addr, "localhost", &ca).await, renewed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_that_ask_get_the_gateway_s_client_certificate() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    ca.leaf(&["localhost"], dir.path(), "upstream");
    ca.leaf(&["gateway.internal"], dir.path(), "client");
    std::fs::write(dir.path().join("ca.pem"), &ca.pem).unwrap();

    // An https upstream that requires a client certificate signed by the CA.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(ca.roots()),
        msa_core::tls::provider(),
    )
    .build()
    .unwrap();
    let server = rustls::ServerConfig::builder_with_provider(msa_core::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            msa_core::tls::read_certificates(&dir.path().join("upstream.crt")).unwrap(),
            msa_core::tls::read_private_key(&dir.path().join("upstream.key")).unwrap(),
        )
        .unwrap();
    let port = crate::support::https_upstream(server, b"mutual").await;

    let d = dir.path().display();
    let routes = format!(
        "routes:\n  - id: m\n    uri: https://localhost:{port}\n    predicates: [ 'Path=/m/**' ]\n"
    );
    let with = GatewayProcess::start(&format!(
        "server:\n  upstream-ca-file: {d}/ca.pem\n  upstream-certificate: {d}/client.crt\n  upstream-certificate-private-key: {d}/client.key\n{routes}"
    ))
    .await;
    let response = client().get(with.url("/m/x")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "mutual");
    let without = GatewayProcess::start(&format!(
        "server:\n  upstream-ca-file: {d}/ca.pem\n{routes}"
    ))
    .await;
    let response = client().get(without.url("/m/x")).send().await.unwrap();
    assert_eq!(response.status(), 502);
}
