//! Bearer tokens (JWT) checked as Spring Security's resource server checks them: one
//! implementation for msa-gateway's `JwtAuth` filter and for services behind it.
//!
//! A [`JwtVerifier`] holds the keys — an HS256 secret, a PEM public key, or a JWK Set
//! fetched from `jwk-set-uri` (or from the issuer's OpenID discovery document) and
//! refreshed — and the claims a token must carry (`iss`, one of the audiences, `exp`
//! within the leeway). [`JwtLayer`] puts it in front of axum routes: a request without a
//! valid token gets 401 with a `WWW-Authenticate` header saying why (RFC 6750); a valid
//! token's [`Claims`] go to handlers as an extractor; [`require_scope`] answers 403 to
//! tokens without a scope.
//!
//! # Examples
//!
//! ```
//! use axum::{Router, routing::get};
//! use msa_core::jwt::{Claims, JwtLayer, JwtVerifier, require_scope};
//!
//! let verifier = JwtVerifier::hs256("a secret of at least thirty-two bytes!!").unwrap()
//!     .issuer("https://auth.example.com");
//! let app: Router = Router::new()
//!     .route("/orders", get(|claims: Claims| async move {
//!         format!("hello {}", claims.subject().unwrap_or("?"))
//!     }).route_layer(require_scope("orders.read")))
//!     .layer(JwtLayer::new(verifier));
//! ```

use std::fmt;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The shortest HS256 secret accepted: 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest token read; a longer `Authorization` header is refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// How often a JWK Set is fetched again (and at most how often an unknown key id asks).
const JWKS_REFRESH: Duration = Duration::from_secs(300);
const JWKS_ASK_AT_MOST: Duration = Duration::from_secs(10);

/// A key that cannot be used, or settings that do not hold together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// Why a token was refused: the `error_description` of the 401's challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// Not three base64url parts with a JSON header, or too long.
    #[error("malformed token")]
    Malformed,
    /// No key for the token's algorithm and key id.
    #[error("no key for this token's algorithm and key id")]
    UnknownKey,
    /// `exp` is past (beyond the leeway).
    #[error("the token has expired")]
    Expired,
    /// `nbf` is ahead.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// `iss` is not the issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` names none of the audiences.
    #[error("wrong audience")]
    WrongAudience,
    /// A claim that must be there (`exp`) is not.
    #[error("a required claim (exp) is missing")]
    MissingClaim,
    /// The token's algorithm is not the key's.
    #[error("the algorithm is not accepted")]
    WrongAlgorithm,
    /// Anything else.
    #[error("invalid token")]
    Invalid,
}

/// A verification key and the one algorithm it may be used with.
#[derive(Clone)]
struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Checks bearer tokens; see the [module docs](self). Cheap to clone: clones share keys.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    keys: Arc<RwLock<Vec<Key>>>,
    /// Asks the JWKS refresher for new keys (a token with an unknown `kid`).
    refresh: Option<Arc<tokio::sync::Notify>>,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: Duration,
    realm: String,
}

impl JwtVerifier {
    fn with_keys(keys: Vec<Key>) -> Self {
        JwtVerifier {
            keys: Arc::new(RwLock::new(keys)),
            refresh: None,
            issuer: None,
            audiences: Vec::new(),
            leeway: Duration::from_secs(60),
            realm: "msa".to_owned(),
        }
    }

    /// Tokens signed with HS256 and `secret` (at least [`MIN_SECRET_BYTES`]).
    pub fn hs256(secret: &str) -> Result<Self, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError(format!(
                "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes (256 bits)"
            )));
        }
        Ok(Self::with_keys(vec![Key {
            id: None,
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(secret.as_bytes()),
        }]))
    }

    /// Tokens signed with RS256 or ES256 by the holder of the public key in `pem`.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = match (
            DecodingKey::from_rsa_pem(pem),
            DecodingKey::from_ec_pem(pem),
        ) {
            (Ok(key), _) => Key {
                id: None,
                algorithm: Algorithm::RS256,
                key,
            },
            (_, Ok(key)) => Key {
                id: None,
                algorithm: Algorithm::ES256,
                key,
            },
            _ => return Err(KeyError("not an RSA or P-256 public key in PEM".into())),
        };
        Ok(Self::with_keys(vec![key]))
    }

    /// Tokens signed with the keys of the JWK Set at `uri`, fetched now (in the
    /// background), every 5 minutes, and when a token names a key id not yet known (at
    /// most every 10 s). Needs a tokio runtime.
    pub fn jwk_set_uri(uri: &str, http: reqwest::Client) -> Result<Self, KeyError> {
        if !uri.starts_with("http://") && !uri.starts_with("https://") {
            return Err(KeyError(format!(
                "jwk-set-uri {uri:?} must be an http(s) URL"
            )));
        }
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| KeyError("jwk-set-uri needs a running tokio runtime".into()))?;
        let mut verifier = Self::with_keys(Vec::new());
        let notify = Arc::new(tokio::sync::Notify::new());
        handle.spawn(refresh_jwks(
            http,
            uri.to_owned(),
            Arc::downgrade(&verifier.keys),
            notify.clone(),
        ));
        verifier.refresh = Some(notify);
        Ok(verifier)
    }

    /// Tokens from the OpenID Connect issuer at `issuer_uri`: its discovery document
    /// (`{issuer}/.well-known/openid-configuration`) names the JWK Set, and `iss` must be
    /// the issuer — Spring's `spring.security.oauth2.resourceserver.jwt.issuer-uri`.
    pub async fn from_issuer(issuer_uri: &str, http: reqwest::Client) -> Result<Self, KeyError> {
        let document = format!(
            "{}/.well-known/openid-configuration",
            issuer_uri.trim_end_matches('/')
        );
        let shown = crate::secrets::mask_url(&document);
        let discovered: Value = http
            .get(&document)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| KeyError(format!("{shown}: {}", e.without_url())))?
            .json()
            .await
            .map_err(|e| KeyError(format!("{shown}: not a discovery document: {e}")))?;
        let issuer = discovered["issuer"].as_str().unwrap_or(issuer_uri);
        if issuer.trim_end_matches('/') != issuer_uri.trim_end_matches('/') {
            return Err(KeyError(format!(
                "{shown} names issuer {issuer:?}, not {issuer_uri:?}"
            )));
        }
        let jwks = discovered["jwks_uri"]
            .as_str()
            .ok_or_else(|| KeyError(format!("{shown} names no jwks_uri")))?;
        Ok(Self::jwk_set_uri(jwks, http)?.issuer(issuer))
    }

    /// Tokens must come from `issuer` (`iss`).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Tokens must be meant for one of `audiences` (`aud`); any audience when empty.
    pub fn audiences(mut self, audiences: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.audiences = audiences.into_iter().map(Into::into).collect();
        self
    }

    /// How far clocks may disagree on `exp` and `nbf` (default 60 s, Spring's).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The realm named in challenges (default `msa`).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The request's bearer token, verified.
    pub fn verify_headers(&self, headers: &HeaderMap) -> Result<Claims, JwtError> {
        let token = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(JwtError::Missing)?;
        self.verify(token)
    }

    /// `token`, verified: its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        let key = {
            let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
            keys.iter()
                .find(|k| {
                    k.algorithm == header.alg
                        && (header.kid.is_none() || k.id.is_none() || k.id == header.kid)
                })
                .cloned()
        };
        let Some(key) = key else {
            if let Some(refresh) = &self.refresh {
                refresh.notify_one();
            }
            return Err(JwtError::UnknownKey);
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway.as_secs();
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
        }
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map(|data| Claims(Arc::new(data.claims)))
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    ErrorKind::ImmatureSignature => JwtError::NotYetValid,
                    ErrorKind::InvalidSignature => JwtError::BadSignature,
                    ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
                    ErrorKind::InvalidAudience => JwtError::WrongAudience,
                    ErrorKind::MissingRequiredClaim(_) => JwtError::MissingClaim,
                    ErrorKind::InvalidAlgorithm => JwtError::WrongAlgorithm,
                    _ => JwtError::Invalid,
                }
            })
    }

    /// The `WWW-Authenticate` challenge for a refused request (RFC 6750): the realm, and
    /// for a token that was given, `invalid_token` and why.
    pub fn challenge(&self, error: JwtError) -> HeaderValue {
        let value = match error {
            JwtError::Missing => format!("Bearer realm=\"{}\"", self.realm),
            other => format!(
                "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{other}\"",
                self.realm
            ),
        };
        HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("Bearer"))
    }

    /// The 401 for a refused request.
    pub fn unauthorized(&self, error: JwtError) -> Response {
        let mut response = crate::http::error_response(
            StatusCode::UNAUTHORIZED,
            format!("authentication required: {error}"),
        );
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, self.challenge(error));
        response
    }
}

/// A verified token's claims, for handlers (an axum extractor: a handler that takes
/// `Claims` answers 401 when the request carries none).
#[derive(Clone, Debug, PartialEq)]
pub struct Claims(Arc<Map<String, Value>>);

impl Claims {
    /// A claim.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Every claim.
    pub fn all(&self) -> &Map<String, Value> {
        &self.0
    }

    /// `sub`: who the token speaks for.
    pub fn subject(&self) -> Option<&str> {
        self.0.get("sub").and_then(Value::as_str)
    }

    /// The token's scopes: `scope` (space-separated, OAuth 2) or `scp` (a list or a
    /// string), as Spring Security reads them.
    pub fn scopes(&self) -> Vec<&str> {
        let mut scopes = Vec::new();
        for claim in ["scope", "scp"] {
            match self.0.get(claim) {
                Some(Value::String(text)) => scopes.extend(text.split_whitespace()),
                Some(Value::Array(items)) => scopes.extend(items.iter().filter_map(Value::as_str)),
                _ => {}
            }
        }
        scopes
    }

    /// Whether the token has `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().contains(&scope)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Claims {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Claims>().cloned().ok_or_else(|| {
            crate::http::error_response(
                StatusCode::UNAUTHORIZED,
                "authentication required: no bearer token",
            )
        })
    }
}

/// Checks every request's bearer token with a [`JwtVerifier`]; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct JwtLayer {
    verifier: JwtVerifier,
}

impl JwtLayer {
    /// A layer checking tokens with `verifier`.
    pub fn new(verifier: JwtVerifier) -> Self {
        JwtLayer { verifier }
    }
}

impl<S> tower::Layer<S> for JwtLayer {
    type Service = Jwt<S>;

    fn layer(&self, inner: S) -> Jwt<S> {
        Jwt {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// The service [`JwtLayer`] makes.
#[derive(Clone, Debug)]
pub struct Jwt<S> {
    inner: S,
    verifier: JwtVerifier,
}

impl<S> tower::Service<Request> for Jwt<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match self.verifier.verify_headers(request.headers()) {
            Ok(claims) => {
                request.extensions_mut().insert(claims);
                futures_util::future::Either::Left(self.inner.call(request))
            }
            Err(error) => {
                tracing::debug!(%error, path = %request.uri().path(), "bearer token refused");
                futures_util::future::Either::Right(std::future::ready(Ok(self
                    .verifier
                    .unauthorized(error))))
            }
        }
    }
}

/// A route layer answering 403 (`insufficient_scope`) to tokens without `scope`; put it
/// on routes behind a [`JwtLayer`].
pub fn require_scope(scope: impl Into<Arc<str>>) -> RequireScope {
    RequireScope {
        scope: scope.into(),
    }
}

/// The layer [`require_scope`] makes.
#[derive(Clone, Debug)]
pub struct RequireScope {
    scope: Arc<str>,
}

impl<S> tower::Layer<S> for RequireScope {
    type Service = Scoped<S>;

    fn layer(&self, inner: S) -> Scoped<S> {
        Scoped {
            inner,
            scope: self.scope.clone(),
        }
    }
}

/// The service [`RequireScope`] makes.
#[derive(Clone, Debug)]
pub struct Scoped<S> {
    inner: S,
    scope: Arc<str>,
}

impl<S> tower::Service<Request> for Scoped<S>
where
    S: tower::Service<Request, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future =
        futures_util::future::Either<S::Future, std::future::Ready<Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let scope = &*self.scope;
        match request.extensions().get::<Claims>() {
            Some(claims) if claims.has_scope(scope) => {
                futures_util::future::Either::Left(self.inner.call(request))
            }
            Some(_) => {
                let mut response = crate::http::error_response(
                    StatusCode::FORBIDDEN,
                    format!("the token lacks the scope {scope:?}"),
                );
                let challenge = format!(
                    "Bearer error=\"insufficient_scope\", error_description=\"the token lacks the scope\", scope=\"{scope}\""
                );
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    response.headers_mut().insert(WWW_AUTHENTICATE, value);
                }
                futures_util::future::Either::Right(std::future::ready(Ok(response)))
            }
            None => futures_util::future::Either::Right(std::future::ready(Ok(
                JwtError::Missing.into_response()
            ))),
        }
    }
}

impl IntoResponse for JwtError {
    fn into_response(self) -> Response {
        crate::http::error_response(
            StatusCode::UNAUTHORIZED,
            format!("authentication required: {self}"),
        )
    }
}

/// Fetches the JWK Set now, every 5 minutes, and when asked (at most every 10 s).
async fn refresh_jwks(
    http: reqwest::Client,
    uri: String,
    keys: std::sync::Weak<RwLock<Vec<Key>>>,
    notify: Arc<tokio::sync::Notify>,
) {
    let shown = crate::secrets::mask_url(&uri);
    loop {
        let Some(target) = keys.upgrade() else { return };
        match fetch_jwks(&http, &uri).await {
            Ok(fetched) => {
                tracing::debug!(uri = %shown, keys = fetched.len(), "JWK Set fetched");
                *target.write().unwrap_or_else(|e| e.into_inner()) = fetched;
            }
            Err(error) => {
                tracing::warn!(uri = %shown, %error, "JWK Set fetch failed; keeping the keys there are")
            }
        }
        drop(target);
        tokio::select! {
            () = tokio::time::sleep(JWKS_REFRESH) => {}
            () = notify.notified() => tokio::time::sleep(JWKS_ASK_AT_MOST).await,
        }
    }
}

async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet = http
        .get(uri)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.without_url().to_string())?
        .json()
        .await
        .map_err(|e| format!("not a JWK Set: {}", e.without_url()))?;
    Ok(set
        .keys
        .iter()
        .filter_map(|jwk| {
            let algorithm = match (jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(KeyAlgorithm::RS256), _) => Algorithm::RS256,
                (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
                _ => return None,
            };
            Some(Key {
                id: jwk.common.key_id.clone(),
                algorithm,
                key: DecodingKey::from_jwk(jwk).ok()?,
            })
        })
        .collect())
}
