//! A certificate authority made in the test: a CA, a certificate for `localhost` and
//! `127.0.0.1` signed by it, and a client certificate signed by it, as PEM files in a
//! temporary directory. Shared by the TLS tests of msa-core, `msa::App` and the servers.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// The PEM files of a test CA (removed when dropped).
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate.
    pub ca: PathBuf,
    /// A server certificate for `localhost` and `127.0.0.1`, and its key.
    pub server_certificate: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate (CN `orders`), and its key.
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    /// A CA nobody trusts, to sign what must be refused.
    pub other_ca: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        let (ca_pem, issuer) = authority();
        let (other_pem, _) = authority();
        std::fs::write(path("ca.pem"), ca_pem).unwrap();
        std::fs::write(path("other-ca.pem"), other_pem).unwrap();

        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let certificate = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(path("server.pem"), certificate.pem()).unwrap();
        std::fs::write(path("server-key.pem"), key.serialize_pem()).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "orders");
        let certificate = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(path("client.pem"), certificate.pem()).unwrap();
        std::fs::write(path("client-key.pem"), key.serialize_pem()).unwrap();

        TestCa {
            ca: path("ca.pem"),
            server_certificate: path("server.pem"),
            server_key: path("server-key.pem"),
            client_certificate: path("client.pem"),
            client_key: path("client-key.pem"),
            other_ca: path("other-ca.pem"),
            dir,
        }
    }
}

fn authority() -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "msa test CA");
    let certificate = params.self_signed(&key).unwrap();
    (certificate.pem(), Issuer::new(params, key))
}

/// The flags that make an msa server serve HTTPS with this CA's server certificate.
pub fn server_flags(ca: &TestCa) -> Vec<String> {
    vec![
        "--ssl-certificate".into(),
        ca.server_certificate.display().to_string(),
        "--ssl-certificate-private-key".into(),
        ca.server_key.display().to_string(),
    ]
}

/// Checks that the server at `addr` answers `path` over HTTPS (with a certificate this CA
/// signed, over HTTP/2 by ALPN), and not over plain HTTP; waits up to 10 s for it to start.
pub async fn serves_https_only(addr: std::net::SocketAddr, ca: &TestCa, path: &str) {
    let client = msa_core::tls::ClientTls::default()
        .trust_certificate(&ca.ca)
        .reqwest_builder()
        .unwrap()
        .build()
        .unwrap();
    let url = format!("https://localhost:{}{path}", addr.port());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let response = loop {
        match client.get(&url).send().await {
            Ok(response) => break response,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "{url}: {error:?}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let plain = format!("http://127.0.0.1:{}{path}", addr.port());
    assert!(
        reqwest::get(&plain).await.is_err(),
        "{plain} answered in plain HTTP"
    );
}
