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
