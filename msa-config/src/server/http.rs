//! The server itself: the router over a repository, its handlers and errors.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use msa_core::actuator::{Actuator, Availability, Health};
use msa_core::http::{Authorization, ServerLayer, error_response};
use msa_core::management::Management;
use serde::Deserialize;

#[cfg(feature = "git")]
use super::GitRepository;
use super::environment;
use super::format::{self, ParseError};
use super::repository::{self, DirRepository};
use super::{Cipher, Environment, LabelError, cipher};

pub use msa_core::wait::{DEFAULT_WAIT, MAX_WAIT};

/// Where the config files come from.
#[derive(Clone, Debug)]
pub enum Repository {
    /// A directory (labels are ignored).
    Dir(DirRepository),
    /// A git repository (labels are branches, tags or commits; feature `git`).
    #[cfg(feature = "git")]
    Git(GitRepository),
    /// Files in etcd (labels are the keys' first segment; feature `etcd`).
    #[cfg(feature = "etcd")]
    Etcd(super::EtcdRepository),
}

#[cfg(feature = "etcd")]
impl From<super::EtcdRepository> for Repository {
    fn from(etcd: super::EtcdRepository) -> Self {
        Repository::Etcd(etcd)
    }
}

impl From<DirRepository> for Repository {
    fn from(dir: DirRepository) -> Self {
        Repository::Dir(dir)
    }
}

#[cfg(feature = "git")]
impl From<GitRepository> for Repository {
    fn from(git: GitRepository) -> Self {
        Repository::Git(git)
    }
}

/// Notifications that the repository changed.
enum Changes {
    Dir(tokio::sync::watch::Receiver<Arc<repository::Snapshot>>),
    #[cfg(any(feature = "git", feature = "etcd"))]
    Counter(tokio::sync::watch::Receiver<u64>),
}

impl Changes {
    fn mark_unchanged(&mut self) {
        match self {
            Changes::Dir(rx) => rx.mark_unchanged(),
            #[cfg(any(feature = "git", feature = "etcd"))]
            Changes::Counter(rx) => rx.mark_unchanged(),
        }
    }

    async fn changed(&mut self) -> bool {
        match self {
            Changes::Dir(rx) => rx.changed().await.is_ok(),
            #[cfg(any(feature = "git", feature = "etcd"))]
            Changes::Counter(rx) => rx.changed().await.is_ok(),
        }
    }
}

impl Repository {
    /// The files as they are now (a directory's changes read first).
    async fn snapshot(&self, label: Option<&str>) -> Result<Arc<repository::Snapshot>, LabelError> {
        // A directory has no labels.
        #[cfg(not(any(feature = "git", feature = "etcd")))]
        let _ = label;
        match self {
            Repository::Dir(dir) => Ok(dir.current().await),
            #[cfg(feature = "git")]
            Repository::Git(git) => {
                // A commit not yet parsed is read from disk: off the async workers.
                let (git, label) = (git.clone(), label.map(str::to_owned));
                tokio::task::spawn_blocking(move || git.snapshot(label.as_deref()))
                    .await
                    .map_err(|e| LabelError::Repository(e.to_string()))?
            }
            #[cfg(feature = "etcd")]
            Repository::Etcd(etcd) => etcd.snapshot(label).await,
        }
    }

    /// Why refreshing the repository fails, while it does.
    fn failing(&self) -> Option<String> {
        match self {
            Repository::Dir(_) => None,
            #[cfg(feature = "git")]
            Repository::Git(git) => git.failing(),
            #[cfg(feature = "etcd")]
            Repository::Etcd(etcd) => etcd.failing(),
        }
    }

    fn changes(&self) -> Changes {
        match self {
            Repository::Dir(dir) => Changes::Dir(dir.subscribe()),
            #[cfg(feature = "git")]
            Repository::Git(git) => Changes::Counter(git.subscribe()),
            #[cfg(feature = "etcd")]
            Repository::Etcd(etcd) => Changes::Counter(etcd.subscribe()),
        }
    }
}

/// Why an environment cannot be served.
enum Failure {
    Parse(ParseError),
    Label(LabelError),
}

impl From<ParseError> for Failure {
    fn from(error: ParseError) -> Self {
        Failure::Parse(error)
    }
}

impl From<LabelError> for Failure {
    fn from(error: LabelError) -> Self {
        Failure::Label(error)
    }
}

/// The config server; [`ConfigServer::router`] gives its axum router.
#[derive(Clone, Debug)]
pub struct ConfigServer {
    repository: Repository,
    credentials: Option<Authorization>,
    cipher: Option<Cipher>,
    management: Option<Management>,
    availability: Availability,
}

impl ConfigServer {
    /// A server over `repository` (a [`DirRepository`] or a [`GitRepository`]).
    pub fn new(repository: impl Into<Repository>) -> Self {
        ConfigServer {
            repository: repository.into(),
            credentials: None,
            cipher: None,
            management: None,
            availability: Availability::default(),
        }
    }

    /// The server's liveness and readiness, as `/actuator/health` reports them.
    pub fn availability(&self) -> Availability {
        self.availability.clone()
    }

    /// Who may call `/encrypt`, `/decrypt` and `/actuator/refresh` (the first two turn the
    /// server into an encryption and decryption oracle): the management token, or, with
    /// none, callers of a loopback listener; with [`basic_auth`](Self::basic_auth), those
    /// credentials too. Without this, `/encrypt` and `/decrypt` answer 403 to anyone
    /// without the Basic credentials.
    pub fn management(mut self, management: Management) -> Self {
        self.management = Some(management);
        self
    }

    /// Decrypts `{cipher}` values with `cipher`, and serves `/encrypt` and `/decrypt`.
    pub fn cipher(mut self, cipher: Cipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// Requires HTTP Basic auth with these credentials on every endpoint but
    /// `/actuator/health` and `/actuator/info` (the actuator's others included).
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some(Authorization::basic(user, password, "msa-config-server"));
        self
    }

    /// The server's routes, with msa's actuator and tracing layer.
    pub fn router(self) -> Router {
        let repository = self.repository.clone();
        let actuator = Actuator::new("msa-config-server")
            .version(env!("CARGO_PKG_VERSION"))
            .with_availability(self.availability.clone())
            .health_indicator("repository", move || {
                let repository = repository.clone();
                async move {
                    match repository.snapshot(None).await {
                        Ok(snapshot) => {
                            // Broken files only affect the applications that read them.
                            let broken: Vec<String> = snapshot
                                .files
                                .values()
                                .filter_map(|f| f.as_ref().err().map(ToString::to_string))
                                .collect();
                            let health = Health::up()
                                .with_detail("location", snapshot.location.clone())
                                .with_detail("version", snapshot.version.clone())
                                .with_detail("files", snapshot.files.len())
                                .with_detail("broken", broken);
                            // Still serving what it has: UP, with the reason it is stale.
                            match repository.failing() {
                                Some(error) => health.with_detail("refreshFailing", error),
                                None => health,
                            }
                        }
                        Err(error) => Health::down().with_detail("error", error.to_string()),
                    }
                }
            });
        let credentials = self.credentials.clone();
        let management = self.management.clone();
        let actuator = match &management {
            Some(management) => actuator.management(management.clone()),
            None => actuator,
        };
        let oracle = Router::new()
            .route("/encrypt", axum::routing::post(encrypt))
            .route("/decrypt", axum::routing::post(decrypt))
            .with_state(self.clone())
            .route_layer(middleware::from_fn({
                let credentials = credentials.clone();
                move |req: Request, next: Next| {
                    let allowed =
                        oracle_allowed(credentials.as_ref(), management.as_ref(), req.headers());
                    async move {
                        match allowed {
                            Ok(()) => next.run(req).await,
                            Err(refused) => refused,
                        }
                    }
                }
            }));
        let api = Router::new()
            .route("/{file}", get(one_segment))
            .route("/{first}/{second}", get(two_segments))
            .route(
                "/{application}/{profiles}/{label}",
                get(environment_with_label),
            )
            .route("/_msa/watch/{application}/{profiles}", get(watch))
            .route(
                "/_msa/watch/{application}/{profiles}/{label}",
                get(watch_with_label),
            )
            .with_state(self);
        let api = api.merge(actuator.router());
        let api = match credentials {
            Some(auth) => api.layer(middleware::from_fn(move |req: Request, next: Next| {
                let auth = auth.clone();
                async move {
                    // Probes and the info page stay open; everything else, the actuator's
                    // metrics and refresh included, needs the credentials.
                    let path = req.uri().path();
                    let open = path == "/actuator/health"
                        || path.starts_with("/actuator/health/")
                        || path == "/actuator/info";
                    if open || auth.allows(req.headers()) {
                        next.run(req).await
                    } else {
                        auth.challenge()
                    }
                }
            })),
            None => api,
        };
        api.merge(oracle).layer(ServerLayer::new())
    }
}

/// Whether `/encrypt` and `/decrypt` may be called: with the Basic credentials where the
/// server has them, else as the management settings allow; 403 with no settings at all.
#[allow(clippy::result_large_err)]
fn oracle_allowed(
    credentials: Option<&Authorization>,
    management: Option<&Management>,
    headers: &HeaderMap,
) -> Result<(), Response> {
    if credentials.is_some_and(|c| c.allows(headers)) {
        return Ok(());
    }
    match (management, credentials) {
        (Some(management), _) => management
            .check(headers)
            .map_err(|refused| match credentials {
                Some(credentials) => credentials.challenge(),
                None => refused,
            }),
        (None, Some(credentials)) => Err(credentials.challenge()),
        (None, None) => Err((
            StatusCode::FORBIDDEN,
            "/encrypt and /decrypt need management settings (--management-token-file, or a \
             loopback --bind or --management-bind) or --user and --password",
        )
            .into_response()),
    }
}

/// `(_)` in a path segment stands for `/`.
fn unescape(segment: &str) -> String {
    segment.replace("(_)", "/")
}

fn profiles(list: &str) -> Vec<String> {
    let profiles: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if profiles.is_empty() {
        vec!["default".to_owned()]
    } else {
        profiles
    }
}

fn failed(failure: Failure) -> Response {
    match failure {
        Failure::Parse(error) => broken(error),
        Failure::Label(LabelError::Unknown(label)) => error_response(
            StatusCode::NOT_FOUND,
            format!("no label {label:?}: not a branch, tag or commit of the repository"),
        ),
        Failure::Label(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

fn broken(error: ParseError) -> Response {
    tracing::warn!(%error, "config file does not parse");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("cannot read config file {error}"),
    )
}

fn environment_response(env: &Environment) -> Response {
    let etag = format!("\"{}\"", env.content_version());
    ([(header::ETAG, etag)], axum::Json(env)).into_response()
}

impl ConfigServer {
    async fn environment(
        &self,
        application: &str,
        profiles: &str,
        label: Option<&str>,
    ) -> Result<Environment, Failure> {
        let label = label.map(unescape);
        let snapshot = self.repository.snapshot(label.as_deref()).await?;
        let mut env = environment::resolve(
            &snapshot,
            &unescape(application),
            &self::profiles(profiles),
            label.as_deref(),
        )?;
        for source in &mut env.property_sources {
            cipher::decrypt_source(self.cipher.as_ref(), &mut source.source);
        }
        Ok(env)
    }
}

async fn environment_with_label(
    State(server): State<ConfigServer>,
    Path((application, profiles, label)): Path<(String, String, String)>,
) -> Response {
    match server
        .environment(&application, &profiles, Some(&label))
        .await
    {
        Ok(env) => environment_response(&env),
        Err(failure) => failed(failure),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlatQuery {
    resolve_placeholders: Option<bool>,
}

/// The formats of the flat view, by extension.
fn flat_format(file: &str) -> Option<(&str, &'static str)> {
    for (ext, kind) in [
        (".yml", "yml"),
        (".yaml", "yml"),
        (".properties", "properties"),
        (".json", "json"),
    ] {
        if let Some(stem) = file.strip_suffix(ext) {
            return Some((stem, kind));
        }
    }
    None
}

async fn one_segment(
    State(server): State<ConfigServer>,
    Path(file): Path<String>,
    Query(query): Query<FlatQuery>,
) -> Response {
    flat(&server, None, &file, query).await
}

async fn two_segments(
    State(server): State<ConfigServer>,
    Path((first, second)): Path<(String, String)>,
    Query(query): Query<FlatQuery>,
) -> Response {
    if flat_format(&second).is_some() {
        return flat(&server, Some(&first), &second, query).await;
    }
    match server.environment(&first, &second, None).await {
        Ok(env) => environment_response(&env),
        Err(failure) => failed(failure),
    }
}

async fn flat(
    server: &ConfigServer,
    label: Option<&str>,
    file: &str,
    query: FlatQuery,
) -> Response {
    let Some((stem, kind)) = flat_format(file) else {
        return (
            StatusCode::NOT_FOUND,
            format!("{file:?} is not a config view: use {{application}}-{{profiles}}.yml, .yaml, .properties or .json"),
        )
            .into_response();
    };
    // `order-service-dev`: the application is everything before the last `-`.
    let (application, profiles) = stem.rsplit_once('-').unwrap_or((stem, "default"));
    let env = match server.environment(application, profiles, label).await {
        Ok(env) => env,
        Err(failure) => return failed(failure),
    };
    let mut merged = env.merged();
    if query.resolve_placeholders.unwrap_or(true) {
        environment::resolve_placeholders(&mut merged);
    }
    let (content_type, body) = match kind {
        "yml" => ("text/yaml; charset=utf-8", format::to_yaml(&merged)),
        "properties" => ("text/plain; charset=utf-8", format::to_properties(&merged)),
        _ => (
            "application/json",
            serde_json::to_string(&format::unflatten(&merged)).unwrap_or_default(),
        ),
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[derive(Debug, Deserialize)]
struct WatchQuery {
    /// How long to wait: `30s`, `500ms`, or seconds.
    wait: Option<String>,
}

async fn watch(
    State(server): State<ConfigServer>,
    Path((application, profiles)): Path<(String, String)>,
    Query(query): Query<WatchQuery>,
    headers: HeaderMap,
) -> Response {
    watch_environment(server, application, profiles, None, query, headers).await
}

async fn watch_with_label(
    State(server): State<ConfigServer>,
    Path((application, profiles, label)): Path<(String, String, String)>,
    Query(query): Query<WatchQuery>,
    headers: HeaderMap,
) -> Response {
    watch_environment(server, application, profiles, Some(label), query, headers).await
}

/// Answers as soon as the environment's `ETag` differs from `If-None-Match`.
async fn watch_environment(
    server: ConfigServer,
    application: String,
    profiles: String,
    label: Option<String>,
    query: WatchQuery,
    headers: HeaderMap,
) -> Response {
    let wait = match msa_core::wait::parse_wait(query.wait.as_deref()) {
        Ok(wait) => wait,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let known = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_owned()
        });
    let mut changes = server.repository.changes();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        changes.mark_unchanged();
        let env = match server
            .environment(&application, &profiles, label.as_deref())
            .await
        {
            Ok(env) => env,
            Err(failure) => return failed(failure),
        };
        if known.as_deref() != Some(env.content_version().as_str()) {
            return environment_response(&env);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(true) => continue,
            Ok(false) | Err(_) => {
                let etag = format!("\"{}\"", env.content_version());
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
            }
        }
    }
}

fn no_key() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "description": "No key was installed for encryption service (start with --encrypt-key-file)",
            "status": "NO_KEY",
        })),
    )
        .into_response()
}

async fn encrypt(State(server): State<ConfigServer>, body: String) -> Response {
    let Some(cipher) = &server.cipher else {
        return no_key();
    };
    match cipher.encrypt(&body) {
        Ok(hex) => ([(header::CONTENT_TYPE, "text/plain")], hex).into_response(),
        Err(error) => error_response(StatusCode::INTERNAL_SERVER_ERROR, error),
    }
}

async fn decrypt(State(server): State<ConfigServer>, body: String) -> Response {
    let Some(cipher) = &server.cipher else {
        return no_key();
    };
    match cipher.decrypt(&body) {
        Ok(plain) => ([(header::CONTENT_TYPE, "text/plain")], plain).into_response(),
        Err(error) => error_response(StatusCode::BAD_REQUEST, format!("cannot decrypt: {error}")),
    }
}
