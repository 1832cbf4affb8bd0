//! The config client: fetch an application's configuration from msa-config-server (or a
//! Spring Cloud Config Server), layer it with the `config` crate, and keep it live.
//!
//! - [`ConfigClient::source`] fetches once and returns a [`ConfigServerSource`], a
//!   `config::Source` to layer between local files and environment variables the usual way.
//! - [`ConfigClient::live`] keeps a typed value current: it follows the server's watch API
//!   (a long-poll that answers within milliseconds of a change; against a Spring server,
//!   which has none, it polls), rebuilds the value, validates it, keeps the old one if the
//!   new one is invalid, and tells subscribers which keys changed.
//! - A last-known-good copy on disk ([`ConfigClient::cache_file`]) is used when no server
//!   answers at start.
//!
//! Defaults follow Spring's client: `http://localhost:8888`, fail-fast off (start without
//! the server), and with fail-fast on, 6 attempts from 1 s growing by 1.1.
//!
//! # Examples
//!
//! ```no_run
//! use msa_config::client::{ConfigClient, LiveConfig};
//! use serde::Deserialize;
//!
//! #[derive(Debug, Deserialize)]
//! struct Settings { price: u32 }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = ConfigClient::new("orders").uri("http://127.0.0.1:8888").profiles("dev");
//! let settings: LiveConfig<Settings> = client
//!     .live(|server| {
//!         config::Config::builder()
//!             .add_source(config::File::with_name("orders.local").required(false))
//!             .add_source(server)
//!             .add_source(config::Environment::with_prefix("ORDERS").separator("__"))
//!     })
//!     .await?;
//! println!("price: {}", settings.get().price);
//! # Ok(()) }
//! ```

#[cfg(feature = "etcd")]
mod etcd;
mod live;

pub use self::live::{Changed, LiveConfig, Rejected};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_NONE_MATCH};

use crate::server::Environment;

#[cfg(not(feature = "etcd"))]
const WITHOUT_ETCD: &str = "an etcd:// URI needs msa-config's `etcd` feature";

/// Spring's default config server URI.
pub const DEFAULT_URI: &str = "http://localhost:8888";

/// Why configuration could not be had.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No server answered (and there was no usable cached copy).
    #[error("no config server answered for {application}: {reasons}")]
    Unreachable {
        /// The application.
        application: String,
        /// What each URI said.
        reasons: String,
    },
    /// The configuration did not build or deserialize.
    #[error("configuration for {application} is invalid: {reason}")]
    Invalid {
        /// The application.
        application: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads one application's configuration from config servers; cheap to clone.
#[derive(Clone, Debug)]
pub struct ConfigClient {
    inner: Arc<Settings>,
    http: reqwest::Client,
    /// The repositories of `etcd://` URIs, read by the client itself.
    #[cfg(feature = "etcd")]
    direct: Arc<etcd::Direct>,
}

#[derive(Clone, Debug)]
struct Settings {
    application: String,
    profiles: String,
    label: Option<String>,
    uris: Vec<String>,
    credentials: Option<(String, String)>,
    cache_file: Option<PathBuf>,
    cache_secrets: bool,
    fail_fast: bool,
    attempts: u32,
    initial_interval: Duration,
    multiplier: f64,
    max_interval: Duration,
    watch_wait: Duration,
    poll_interval: Duration,
    follow: bool,
}

/// One fetch: the environment and its version.
#[derive(Clone, Debug, PartialEq)]
pub struct Fetched {
    /// The environment the server answered.
    pub environment: Environment,
    /// Its `ETag`, when the server sends one (msa-config-server does).
    pub etag: Option<String>,
}

impl ConfigClient {
    /// A client for `application` with profile `default`, at [`DEFAULT_URI`].
    pub fn new(application: impl Into<String>) -> Self {
        ConfigClient {
            inner: Arc::new(Settings {
                application: application.into(),
                profiles: "default".into(),
                label: None,
                uris: vec![DEFAULT_URI.into()],
                credentials: None,
                cache_file: None,
                cache_secrets: false,
                fail_fast: false,
                attempts: 6,
                initial_interval: Duration::from_secs(1),
                multiplier: 1.1,
                max_interval: Duration::from_secs(2),
                watch_wait: Duration::from_secs(30),
                poll_interval: Duration::from_secs(30),
                follow: true,
            }),
            http: reqwest::Client::new(),
            #[cfg(feature = "etcd")]
            direct: Arc::default(),
        }
    }

    /// Calls the server with `http` (TLS roots, client certificates, proxies), as
    /// [`msa_core::tls::ClientTls`] builds it.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    fn with(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// One server URI (replacing the default).
    pub fn uri(self, uri: impl Into<String>) -> Self {
        self.uris([uri.into()])
    }

    /// Several server URIs, tried in turn.
    ///
    /// An `etcd://host:port[,host:port…][/prefix]` URI (feature `etcd`) has the client
    /// read the config files from etcd itself, as msa-config-server `--etcd` serves them
    /// (keys `<prefix>/config/<label>/<file>`, prefix `/msa` by default), and follow them
    /// with a watch of etcd instead of the server's long poll. `{cipher}` values stay
    /// sealed that way: only a config server holds the key.
    pub fn uris(self, uris: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let uris: Vec<String> = uris
            .into_iter()
            .map(|u| u.into().trim_end_matches('/').to_owned())
            .collect();
        self.with(|s| s.uris = uris)
    }

    /// URIs from one comma-separated setting, as Spring's `spring.cloud.config.uri` holds
    /// them; the members of an `etcd://` URI (`etcd://a:2379,b:2379`) stay one URI.
    ///
    /// ```
    /// # use msa_config::client::ConfigClient;
    /// let client = ConfigClient::new("orders")
    ///     .uri_list("etcd://10.0.0.1:2379,10.0.0.2:2379, http://config:8888");
    /// assert_eq!(client.server_uris(), ["etcd://10.0.0.1:2379,10.0.0.2:2379", "http://config:8888"]);
    /// ```
    pub fn uri_list(self, list: &str) -> Self {
        let mut uris: Vec<String> = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            match uris.last_mut() {
                Some(last) if last.starts_with("etcd://") && !entry.contains("://") => {
                    last.push(',');
                    last.push_str(entry);
                }
                _ => uris.push(entry.to_owned()),
            }
        }
        self.uris(uris)
    }

    /// The URIs tried, in order.
    pub fn server_uris(&self) -> &[String] {
        &self.inner.uris
    }

    /// Comma-separated profiles (`dev,eu`); the last wins.
    pub fn profiles(self, profiles: impl Into<String>) -> Self {
        let profiles = profiles.into();
        self.with(|s| s.profiles = profiles)
    }

    /// The label (a git branch, tag or commit).
    pub fn label(self, label: impl Into<String>) -> Self {
        let label = label.into();
        self.with(|s| s.label = Some(label))
    }

    /// HTTP Basic credentials.
    pub fn basic_auth(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let credentials = (user.into(), password.into());
        self.with(|s| s.credentials = Some(credentials))
    }

    /// Keeps the last configuration fetched in this file (updated on every change the
    /// client follows), and uses it when no server answers at start.
    ///
    /// The file is readable by its owner only (0600), and holds no secret unless
    /// [`cache_secrets`](Self::cache_secrets) says so: values still sealed as
    /// `{cipher}…` are kept as they are, while values under secret names (`password`,
    /// `secret`, `token`, `key`, … see [`msa_core::secrets`]) and URLs with credentials
    /// are left out, so an application started from the file runs without them.
    pub fn cache_file(self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.with(|s| s.cache_file = Some(path))
    }

    /// Whether the [`cache_file`](Self::cache_file) keeps secrets too (off by default).
    pub fn cache_secrets(self, on: bool) -> Self {
        self.with(|s| s.cache_secrets = on)
    }

    /// With fail-fast, start-up fails when no server answers (after retrying, and when
    /// there is no cached copy); without (the default), the application starts without
    /// the server's configuration.
    pub fn fail_fast(self, on: bool) -> Self {
        self.with(|s| s.fail_fast = on)
    }

    /// Retries with fail-fast: attempts, first wait, growth factor, longest wait.
    pub fn retry(self, attempts: u32, initial: Duration, multiplier: f64, max: Duration) -> Self {
        self.with(|s| {
            s.attempts = attempts.max(1);
            s.initial_interval = initial;
            s.multiplier = multiplier.max(1.0);
            s.max_interval = max;
        })
    }

    /// How long each watch request waits for a change (30 s).
    pub fn watch_wait(self, wait: Duration) -> Self {
        self.with(|s| s.watch_wait = wait)
    }

    /// Whether a [`LiveConfig`] follows the server (the default) or changes only when
    /// refreshed, as Spring's clients do without a bus.
    pub fn follow(self, on: bool) -> Self {
        self.with(|s| s.follow = on)
    }

    pub(crate) fn follows(&self) -> bool {
        self.inner.follow
    }

    /// How often to poll a server that has no watch API (a Spring Cloud Config Server);
    /// 30 s.
    pub fn poll_interval(self, interval: Duration) -> Self {
        self.with(|s| s.poll_interval = interval)
    }

    /// The application name.
    pub fn application(&self) -> &str {
        &self.inner.application
    }

    fn path(&self) -> String {
        let s = &self.inner;
        let escape = |x: &str| x.replace('/', "(_)");
        let mut path = format!("/{}/{}", escape(&s.application), s.profiles);
        if let Some(label) = &s.label {
            path.push('/');
            path.push_str(&escape(label));
        }
        path
    }

    fn request(&self, url: String) -> reqwest::RequestBuilder {
        let request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        match &self.inner.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Fetches the environment, trying each URI in turn once.
    pub async fn fetch_once(&self) -> Result<Fetched, ClientError> {
        let mut reasons = Vec::new();
        for uri in &self.inner.uris {
            match self.fetch_from(uri).await {
                Ok(fetched) => return Ok(fetched),
                Err(reason) => {
                    reasons.push(format!("{}: {reason}", msa_core::secrets::mask_url(uri)));
                }
            }
        }
        Err(ClientError::Unreachable {
            application: self.inner.application.clone(),
            reasons: reasons.join("; "),
        })
    }

    async fn fetch_from(&self, uri: &str) -> Result<Fetched, String> {
        if uri.starts_with("etcd://") {
            #[cfg(feature = "etcd")]
            return self.fetch_etcd(uri).await;
            #[cfg(not(feature = "etcd"))]
            return Err(WITHOUT_ETCD.into());
        }
        let response = self
            .request(format!("{uri}{}", self.path()))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        read_environment(response).await
    }

    /// Fetches the environment; with fail-fast, retries as configured.
    pub async fn fetch(&self) -> Result<Fetched, ClientError> {
        let s = &self.inner;
        let attempts = if s.fail_fast { s.attempts } else { 1 };
        let mut wait = s.initial_interval;
        let mut last = None;
        for attempt in 1..=attempts {
            match self.fetch_once().await {
                Ok(fetched) => {
                    self.save(&fetched.environment).await;
                    return Ok(fetched);
                }
                Err(error) => {
                    tracing::warn!(attempt, %error, "config server fetch failed");
                    last = Some(error);
                }
            }
            if attempt < attempts {
                tokio::time::sleep(wait).await;
                wait = wait.mul_f64(s.multiplier).min(s.max_interval);
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Unreachable {
            application: s.application.clone(),
            reasons: "no URI configured".into(),
        }))
    }

    /// The environment to start with: the server's, else the cached copy, else (without
    /// fail-fast) nothing.
    pub async fn initial(&self) -> Result<Option<Fetched>, ClientError> {
        match self.fetch().await {
            Ok(fetched) => Ok(Some(fetched)),
            Err(error) => {
                if let Some(environment) = self.load().await {
                    tracing::warn!(%error, "no config server answered; using the last known good configuration");
                    return Ok(Some(Fetched {
                        etag: None,
                        environment,
                    }));
                }
                if self.inner.fail_fast {
                    return Err(error);
                }
                tracing::warn!(%error, "no config server answered and no cached copy; starting without it");
                Ok(None)
            }
        }
    }

    /// Fetches (see [`initial`](Self::initial)) and returns the configuration as a
    /// `config::Source` (with feature `config`) or as flattened properties.
    pub async fn source(&self) -> Result<ConfigServerSource, ClientError> {
        Ok(ConfigServerSource::new(
            self.initial().await?.map(|f| f.environment),
        ))
    }

    /// Writes `environment` to the cache file, if there is one (see
    /// [`cache_file`](Self::cache_file)).
    pub(crate) async fn save(&self, environment: &Environment) {
        let Some(path) = &self.inner.cache_file else {
            return;
        };
        let kept = match self.inner.cache_secrets {
            true => environment.clone(),
            false => without_secrets(environment),
        };
        let Ok(bytes) = serde_json::to_vec_pretty(&kept) else {
            return;
        };
        // Write then rename: a crash never leaves half a file.
        let tmp = path.with_extension("tmp");
        let result = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            let _ = tokio::fs::remove_file(&tmp).await;
            let mut options = tokio::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            options.mode(0o600);
            let mut file = options.open(&tmp).await?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&tmp, path).await
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, path = %path.display(), "cannot save the last known good configuration");
        }
    }

    async fn load(&self) -> Option<Environment> {
        let path = self.inner.cache_file.as_ref()?;
        let bytes = tokio::fs::read(path).await.ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(environment) => Some(environment),
            Err(error) => {
                tracing::warn!(%error, path = %path.display(), "the cached configuration is unreadable");
                None
            }
        }
    }

    /// Waits for the next version after `etag`: `Ok(None)` when the wait ended without a
    /// change, `Err` when no server answered. A server without the watch API (404) is
    /// polled instead.
    pub(crate) async fn next(&self, current: &Fetched) -> Result<Option<Fetched>, String> {
        let s = &self.inner;
        let mut reasons = Vec::new();
        for uri in &s.uris {
            if uri.starts_with("etcd://") {
                #[cfg(feature = "etcd")]
                let next = self.next_etcd(uri, current).await;
                #[cfg(not(feature = "etcd"))]
                let next = Err(WITHOUT_ETCD.to_owned());
                match next {
                    Ok(next) => return Ok(next),
                    Err(reason) => {
                        reasons.push(format!("{}: {reason}", msa_core::secrets::mask_url(uri)));
                        continue;
                    }
                }
            }
            let url = format!(
                "{uri}/_msa/watch{}?wait={}ms",
                self.path(),
                s.watch_wait.as_millis()
            );
            let mut request = self
                .request(url)
                .timeout(s.watch_wait + Duration::from_secs(10));
            if let Some(etag) = &current.etag {
                request = request.header(IF_NONE_MATCH, etag);
            }
            match request.send().await {
                Ok(response) if response.status() == StatusCode::NOT_MODIFIED => return Ok(None),
                Ok(response) if response.status() == StatusCode::NOT_FOUND => {
                    // A Spring server: poll.
                    tokio::time::sleep(s.poll_interval).await;
                    return match self.fetch_from(uri).await {
                        Ok(fetched) if fetched.environment != current.environment => {
                            Ok(Some(fetched))
                        }
                        Ok(_) => Ok(None),
                        Err(reason) => Err(reason),
                    };
                }
                Ok(response) => match read_environment(response).await {
                    Ok(fetched) => return Ok(Some(fetched)),
                    Err(reason) => reasons.push(format!("{uri}: {reason}")),
                },
                Err(error) => reasons.push(format!("{uri}: {error}")),
            }
        }
        Err(reasons.join("; "))
    }

    /// A live, typed configuration; see [`LiveConfig`]. `build` layers the server's
    /// source with any others; the value must deserialize into `T` (feature `config`).
    #[cfg(feature = "config")]
    pub async fn live<T, F>(&self, build: F) -> Result<LiveConfig<T>, ClientError>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
        F: Fn(ConfigServerSource) -> config::ConfigBuilder<config::builder::DefaultState>
            + Send
            + Sync
            + 'static,
    {
        LiveConfig::start(self.clone(), with_config_crate(build), |_| Ok(())).await
    }

    /// A live configuration whose value `build` makes from the server's source (a
    /// `config` builder, msa's settings, or anything else): an error rejects that version.
    pub async fn live_with<T, F>(&self, build: F) -> Result<LiveConfig<T>, ClientError>
    where
        T: Send + Sync + 'static,
        F: Fn(&ConfigServerSource) -> Result<T, String> + Send + Sync + 'static,
    {
        LiveConfig::start(self.clone(), build, |_| Ok(())).await
    }

    /// Like [`live`](Self::live), with `validate` run on every new value: a value it
    /// rejects is logged and the previous one kept (feature `config`).
    #[cfg(feature = "config")]
    pub async fn live_validated<T, F, V>(
        &self,
        build: F,
        validate: V,
    ) -> Result<LiveConfig<T>, ClientError>
    where
        T: serde::de::DeserializeOwned + Send + Sync + 'static,
        F: Fn(ConfigServerSource) -> config::ConfigBuilder<config::builder::DefaultState>
            + Send
            + Sync
            + 'static,
        V: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        LiveConfig::start(self.clone(), with_config_crate(build), validate).await
    }
}

/// A `config` builder function as a build of `T`.
#[cfg(feature = "config")]
fn with_config_crate<T, F>(build: F) -> impl Fn(&ConfigServerSource) -> Result<T, String>
where
    T: serde::de::DeserializeOwned,
    F: Fn(ConfigServerSource) -> config::ConfigBuilder<config::builder::DefaultState>,
{
    move |source| {
        build(source.clone())
            .build()
            .and_then(|config| config.try_deserialize())
            .map_err(|e| e.to_string())
    }
}

/// `environment` without its secrets: values under secret names and URLs with
/// credentials left out; `{cipher}` values (still sealed) kept.
fn without_secrets(environment: &Environment) -> Environment {
    let mut kept = environment.clone();
    for source in &mut kept.property_sources {
        source.source.retain(|key, value| {
            let text = value.as_str().unwrap_or_default();
            text.starts_with(crate::server::CIPHER_PREFIX)
                || !(msa_core::secrets::is_secret_name(key)
                    || msa_core::secrets::has_url_credentials(text))
        });
    }
    kept
}

async fn read_environment(response: reqwest::Response) -> Result<Fetched, String> {
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(format!(
            "{status}: {}",
            body.chars().take(300).collect::<String>()
        ));
    }
    let etag = response
        .headers()
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let environment = response
        .json::<Environment>()
        .await
        .map_err(|e| format!("not an Environment: {e}"))?;
    Ok(Fetched { environment, etag })
}

/// An application's configuration from a config server, as a `config::Source`: the
/// merged properties (most specific source first, lists replaced whole).
#[derive(Clone, Debug, Default)]
pub struct ConfigServerSource {
    flat: Arc<Vec<(String, serde_json::Value)>>,
    origin: Arc<String>,
}

impl ConfigServerSource {
    /// The source for `environment` (`None`: empty).
    pub fn new(environment: Option<Environment>) -> Self {
        let origin = environment.as_ref().map_or_else(
            || "config server (unreachable)".into(),
            |e| format!("config server {}", e.name),
        );
        ConfigServerSource {
            flat: Arc::new(environment.map(|e| e.merged()).unwrap_or_default()),
            origin: Arc::new(origin),
        }
    }

    /// The merged properties, flattened (`a.b[0]`).
    pub fn properties(&self) -> &[(String, serde_json::Value)] {
        &self.flat
    }

    /// Where the properties come from (`config server orders`), for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

#[cfg(feature = "config")]
fn to_config_value(origin: &String, value: &serde_json::Value) -> config::Value {
    use config::ValueKind;
    let kind = match value {
        serde_json::Value::Null => ValueKind::Nil,
        serde_json::Value::Bool(b) => ValueKind::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ValueKind::I64(i),
            (None, Some(f)) => ValueKind::Float(f),
            _ => ValueKind::String(n.to_string()),
        },
        serde_json::Value::String(s) => ValueKind::String(s.clone()),
        // Flattened sources hold scalars only.
        other => ValueKind::String(other.to_string()),
    };
    config::Value::new(Some(origin), kind)
}

#[cfg(feature = "config")]
impl config::Source for ConfigServerSource {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<config::Map<String, config::Value>, config::ConfigError> {
        Ok(self
            .flat
            .iter()
            .map(|(key, value)| (key.clone(), to_config_value(&self.origin, value)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::PropertySource;

    #[test]
    fn the_copy_keeps_sealed_values_and_leaves_out_open_secrets() {
        let source: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{"db.password": "{cipher}0123abcd", "db.user": "app",
                "feed.token": "t0k3n", "feed.url": "https://bot:pw@feed", "price": 5}"#,
        )
        .unwrap();
        let environment = Environment {
            name: "orders".into(),
            profiles: vec!["default".into()],
            label: None,
            version: None,
            state: None,
            property_sources: vec![PropertySource {
                name: "orders.yml".into(),
                source,
            }],
        };
        let kept = without_secrets(&environment);
        let keys: Vec<&String> = kept.property_sources[0].source.keys().collect();
        assert_eq!(keys, ["db.password", "db.user", "price"]);
    }
}
