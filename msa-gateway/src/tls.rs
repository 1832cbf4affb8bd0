//! TLS termination: rustls with a certificate per server name (SNI), HTTP/2 and HTTP/1.1
//! offered through ALPN, and the certificate files read again when they change, without
//! a restart (a pair that does not read keeps the certificates in use, and says why).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use msa_core::sync::{lock, read, write};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::{ConfigError, GatewayConfig};

/// A certificate's files: for one server name, or the default (`None`).
#[derive(Debug, Clone)]
struct Source {
    name: Option<String>,
    certificate: PathBuf,
    key: PathBuf,
}

/// The certificate files' modification times and sizes, one pair per source.
type Stamps = Vec<Option<(SystemTime, u64)>>;

/// The certificates in use.
#[derive(Debug, Default)]
struct Keys {
    default: Option<Arc<CertifiedKey>>,
    /// By lowercase name; `*.example.com` answers one label below.
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

/// Picks the certificate for each handshake, and reads the files again on change.
#[derive(Debug)]
pub(crate) struct Termination {
    sources: Vec<Source>,
    /// Shared with the resolver rustls holds.
    keys: Arc<RwLock<Arc<Keys>>>,
    /// The files' modification times and sizes as last read; and a change seen once,
    /// applied when the next look finds the files as they were.
    stamps: Mutex<(Stamps, Option<Stamps>)>,
    config: Arc<rustls::ServerConfig>,
}

impl Termination {
    /// The listener's TLS from `server.ssl` and `spring.ssl.bundle.pem`; `None` when off.
    pub(crate) fn from_config(config: &GatewayConfig) -> Result<Option<Arc<Self>>, ConfigError> {
        let ssl = &config.server.ssl;
        if !ssl.is_enabled() {
            return Ok(None);
        }
        let error = |key: &str, message: String| config.source.error(key, message);
        let bundle = |name: &str, key: &str| -> Result<(PathBuf, PathBuf), ConfigError> {
            let bundle = config.ssl_bundles.get(name).ok_or_else(|| {
                error(key, format!("no bundle {name:?} in spring.ssl.bundle.pem"))
            })?;
            Ok((
                bundle.keystore.certificate.clone(),
                bundle.keystore.private_key.clone(),
            ))
        };
        let mut sources = Vec::new();
        match (&ssl.certificate, &ssl.certificate_private_key, &ssl.bundle) {
            (Some(certificate), Some(key), None) => sources.push(Source {
                name: None,
                certificate: certificate.clone(),
                key: key.clone(),
            }),
            (None, None, Some(name)) => {
                let (certificate, key) = bundle(name, "server.ssl.bundle")?;
                sources.push(Source {
                    name: None,
                    certificate,
                    key,
                });
            }
            (None, None, None) => {}
            (_, _, Some(_)) => {
                return Err(error(
                    "server.ssl.bundle",
                    "give either a bundle or certificate and certificate-private-key".into(),
                ));
            }
            (Some(_), None, None) => {
                return Err(error(
                    "server.ssl.certificate-private-key",
                    "TLS needs the certificate's key too".into(),
                ));
            }
            (None, Some(_), None) => {
                return Err(error(
                    "server.ssl.certificate",
                    "TLS needs the certificate too".into(),
                ));
            }
        }
        for (n, by_name) in ssl.server_name_bundles.iter().enumerate() {
            let key = format!("server.ssl.server-name-bundles.{n}");
            let (certificate, private_key) = bundle(&by_name.bundle, &key)?;
            sources.push(Source {
                name: Some(by_name.server_name.trim().to_ascii_lowercase()),
                certificate,
                key: private_key,
            });
        }
        if sources.is_empty() {
            return Err(error(
                "server.ssl",
                "TLS is enabled but no certificate is given".into(),
            ));
        }
        let keys = load(&sources).map_err(|e| error("server.ssl", e))?;
        let stamps = sources.iter().map(stamp).collect();
        let keys = Arc::new(RwLock::new(Arc::new(keys)));
        let mut server = rustls::ServerConfig::builder_with_provider(msa_core::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error("server.ssl", e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(keys.clone())));
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(Termination {
            sources,
            keys,
            stamps: Mutex::new((stamps, None)),
            config: Arc::new(server),
        })))
    }

    /// The rustls configuration every listener accepts with.
    pub(crate) fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// Reads the files again if they changed and have held still since the last look;
    /// `Some` says what happened.
    pub(crate) fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now: Vec<_> = self.sources.iter().map(stamp).collect();
        let mut stamps = lock(&self.stamps);
        let (applied, changing) = &mut *stamps;
        if now == *applied {
            *changing = None;
            return None;
        }
        if changing.as_ref() != Some(&now) {
            *changing = Some(now);
            return None;
        }
        *changing = None;
        *applied = now;
        drop(stamps);
        Some(load(&self.sources).map(|keys| *write(&self.keys) = Arc::new(keys)))
    }
}

/// The resolver rustls holds: the certificates in use, shared with the [`Termination`]
/// that reloads them.
#[derive(Debug)]
struct Resolver(Arc<RwLock<Arc<Keys>>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let keys = read(&self.0).clone();
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            if let Some(key) = keys.by_name.get(&name) {
                return Some(key.clone());
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(key) = keys.by_name.get(&format!("*.{parent}"))
            {
                return Some(key.clone());
            }
        }
        keys.default.clone()
    }
}

/// Reads every source's chain and key, naming the file that does not read.
fn load(sources: &[Source]) -> Result<Keys, String> {
    let provider = msa_core::tls::provider();
    let mut keys = Keys::default();
    for source in sources {
        let chain =
            msa_core::tls::read_certificates(&source.certificate).map_err(|e| e.to_string())?;
        let key = msa_core::tls::read_private_key(&source.key).map_err(|e| e.to_string())?;
        let key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| format!("{}: {e}", source.key.display()))?;
        let certified = CertifiedKey::new(chain, key);
        certified.keys_match().map_err(|e| {
            format!(
                "{}: does not match the certificate: {e}",
                source.key.display()
            )
        })?;
        let certified = Arc::new(certified);
        match &source.name {
            None => keys.default = Some(certified),
            Some(name) => {
                keys.by_name.insert(name.clone(), certified);
            }
        }
    }
    Ok(keys)
}

/// A source's files' modification times and sizes together (`None` when unreadable).
fn stamp(source: &Source) -> Option<(SystemTime, u64)> {
    let one = |path: &Path| -> Option<(SystemTime, u64)> {
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    let (a, b) = (one(&source.certificate)?, one(&source.key)?);
    Some((a.0.max(b.0), a.1 + b.1))
}
