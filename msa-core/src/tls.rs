//! TLS for every msa client and server, with rustls (aws-lc-rs, reqwest's own default).
//!
//! - [`ClientTls`]: what a client trusts — the public web's roots (webpki-roots), the
//!   system's roots, and CA files — and the certificate it presents, if any. Every msa client
//!   (the app's, the config client, registration and discovery) is built from one.
//! - [`ServerTls`]: a listener's certificate and key (PEM files, as Spring Boot's
//!   `server.ssl.certificate` and `server.ssl.certificate-private-key`), and optionally the
//!   CAs whose client certificates it asks for (`server.ssl.client-auth: need`).
//!
//! # Examples
//!
//! ```no_run
//! use msa_core::tls::ClientTls;
//!
//! let tls = ClientTls::default().trust_certificate("/etc/msa/ca.pem");
//! let client = tls.reqwest_builder()?.build()?;
//! # let _ = client;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// TLS settings that cannot be used: the file and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {reason}")]
pub struct TlsError {
    /// The file, or the setting when no file is involved.
    pub file: String,
    /// Why.
    pub reason: String,
}

fn error(file: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError {
        file: file.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The crypto provider every msa TLS configuration uses: aws-lc-rs, as reqwest's.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<Arc<CryptoProvider>> = std::sync::OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// The system's CA certificates, read once per process (a directory of hundreds of files;
/// every client an app builds would read it again). Unreadable ones are skipped, as
/// browsers do; the rest count.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static NATIVE: std::sync::OnceLock<Vec<CertificateDer<'static>>> = std::sync::OnceLock::new();
    NATIVE.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// Reads every certificate in a PEM file; none is an error.
pub fn read_certificates(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(file)
        .map_err(|e| error(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(file, e))?;
    if certificates.is_empty() {
        return Err(error(file, "no PEM certificate in it"));
    }
    Ok(certificates)
}

/// Reads the private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| error(file, e))
}

/// A root store of the CA files' certificates.
fn roots_from(files: &[PathBuf]) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for file in files {
        for certificate in read_certificates(file)? {
            roots.add(certificate).map_err(|e| error(file, e))?;
        }
    }
    Ok(roots)
}

/// What a client trusts and presents; see the [module docs](self). Reads from settings
/// (`msa.client.ssl`) in kebab-case.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientTls {
    /// PEM files of CAs to trust, besides the roots below.
    pub trust_certificate: Vec<PathBuf>,
    /// Trust the public web's CAs (Mozilla's list, from webpki-roots). On by default.
    pub webpki_roots: bool,
    /// Trust the system's CAs (`/etc/ssl/certs`, `SSL_CERT_FILE`). On by default.
    pub native_roots: bool,
    /// A PEM certificate chain to present to servers that ask (mutual TLS).
    pub certificate: Option<PathBuf>,
    /// The private key of [`certificate`](Self::certificate), PEM.
    pub certificate_private_key: Option<PathBuf>,
}

impl Default for ClientTls {
    fn default() -> Self {
        ClientTls {
            trust_certificate: Vec::new(),
            webpki_roots: true,
            native_roots: true,
            certificate: None,
            certificate_private_key: None,
        }
    }
}

impl ClientTls {
    /// Trusts the CAs in the PEM file `file` too.
    pub fn trust_certificate(mut self, file: impl Into<PathBuf>) -> Self {
        self.trust_certificate.push(file.into());
        self
    }

    /// Presents the certificate chain in `certificate` with the key in `key` (PEM files).
    pub fn identity(mut self, certificate: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.certificate = Some(certificate.into());
        self.certificate_private_key = Some(key.into());
        self
    }

    /// The rustls configuration: reads the files now, and names the one that does not read.
    pub fn config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = roots_from(&self.trust_certificate)?;
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        if self.native_roots {
            roots.add_parsable_certificates(native_roots().iter().cloned());
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError {
                file: "tls".into(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut config = match (&self.certificate, &self.certificate_private_key) {
            (Some(certificate), Some(key)) => builder
                .with_client_auth_cert(read_certificates(certificate)?, read_private_key(key)?)
                .map_err(|e| error(key, e))?,
            (None, None) => builder.with_no_client_auth(),
            (Some(file), None) | (None, Some(file)) => {
                return Err(error(
                    file,
                    "a client certificate needs both `certificate` and `certificate-private-key`",
                ));
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A reqwest client builder that uses this configuration (HTTP/1.1 and HTTP/2 by ALPN).
    pub fn reqwest_builder(&self) -> Result<reqwest::ClientBuilder, TlsError> {
        Ok(reqwest::Client::builder().tls_backend_preconfigured(self.config()?))
    }
}

/// Whether a server asks clients for certificates (Spring Boot's `server.ssl.client-auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificates (the default).
    #[default]
    None,
    /// Asks for one and checks it if given; a client without one is served too.
    Want,
    /// Requires one, issued by a trusted CA.
    Need,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "want" => Ok(ClientAuth::Want),
            "need" => Ok(ClientAuth::Need),
            other => Err(format!("client-auth {other:?}: use none, want or need")),
        }
    }
}

/// A listener's TLS, as Spring Boot's `server.ssl.*` PEM settings; see the
/// [module docs](self).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ServerTls {
    /// Whether TLS is on (`server.ssl.enabled`); on when a certificate is given.
    pub enabled: Option<bool>,
    /// The PEM certificate chain, leaf first.
    pub certificate: Option<PathBuf>,
    /// The PEM private key of the certificate.
    pub certificate_private_key: Option<PathBuf>,
    /// PEM files of the CAs whose client certificates are accepted.
    pub trust_certificate: Vec<PathBuf>,
    /// Whether client certificates are asked for.
    pub client_auth: ClientAuth,
}

impl ServerTls {
    /// TLS with the certificate chain and key in these PEM files.
    pub fn new(certificate: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        ServerTls {
            enabled: Some(true),
            certificate: Some(certificate.into()),
            certificate_private_key: Some(key.into()),
            ..ServerTls::default()
        }
    }

    /// Asks clients for certificates issued by the CAs in the PEM file `ca`.
    pub fn client_auth(mut self, auth: ClientAuth, ca: impl Into<PathBuf>) -> Self {
        self.client_auth = auth;
        self.trust_certificate.push(ca.into());
        self
    }

    /// Whether these settings turn TLS on.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(self.certificate.is_some())
    }

    /// The rustls configuration (ALPN `h2` and `http/1.1`), or `None` when TLS is off;
    /// reads the files now and names the one that does not read.
    pub fn config(&self) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
        if !self.is_enabled() {
            return Ok(None);
        }
        let missing = |key: &str| TlsError {
            file: format!("server.ssl.{key}"),
            reason: "TLS is enabled but this is not set".into(),
        };
        let certificate = self
            .certificate
            .as_deref()
            .ok_or_else(|| missing("certificate"))?;
        let key = self
            .certificate_private_key
            .as_deref()
            .ok_or_else(|| missing("certificate-private-key"))?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(certificate, e))?;
        let builder = match self.client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            auth => {
                if self.trust_certificate.is_empty() {
                    return Err(missing("trust-certificate"));
                }
                let roots = Arc::new(roots_from(&self.trust_certificate)?);
                let verifier =
                    rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = match auth {
                    ClientAuth::Want => verifier.allow_unauthenticated(),
                    _ => verifier,
                }
                .build()
                .map_err(|e| error(&self.trust_certificate[0], e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(read_certificates(certificate)?, read_private_key(key)?)
            .map_err(|e| error(key, format!("does not match the certificate: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}
