//! Authentication filters: `JwtAuth` (bearer tokens signed with HS256, RS256 or ES256) and
//! `ApiKey`. A request that fails gets 401 with a `WWW-Authenticate` header saying why.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, StatusCode};
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::Args;

/// A verification key and the one algorithm it may be used with.
#[derive(Clone)]
struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// JwtAuth's settings and keys.
#[derive(Debug)]
pub(crate) struct JwtAuth {
    keys: Arc<RwLock<Vec<Key>>>,
    /// Asks the JWKS refresher for new keys (an unknown `kid`).
    refresh: Option<Arc<tokio::sync::Notify>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl JwtAuth {
    pub(crate) fn build(args: &Args) -> Result<Self, String> {
        let secret = args.text("hs256-secret", usize::MAX)?;
        let file = args.text("public-key-file", usize::MAX)?;
        let jwks = args.text("jwks-uri", usize::MAX)?;
        let given = [secret.is_some(), file.is_some(), jwks.is_some()]
            .iter()
            .filter(|g| **g)
            .count();
        if given != 1 {
            return Err("give exactly one of hs256-secret, public-key-file and jwks-uri".into());
        }
        let leeway = match args.text("leeway", usize::MAX)? {
            Some(text) => msa_core::duration::deserialize(serde_json::Value::String(
                if text.chars().all(|c| c.is_ascii_digit()) {
                    format!("{text}s")
                } else {
                    text
                },
            ))
            .map_err(|e| format!("leeway: {e}"))?
            .as_secs(),
            None => 60,
        };
        let mut refresh = None;
        let keys = Arc::new(RwLock::new(Vec::new()));
        if let Some(secret) = secret {
            if secret.len() < 32 {
                return Err("hs256-secret must be at least 32 bytes (256 bits)".into());
            }
            keys.write().unwrap_or_else(|e| e.into_inner()).push(Key {
                id: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        } else if let Some(file) = file {
            let pem = std::fs::read(&file).map_err(|e| format!("public-key-file {file}: {e}"))?;
            let key = match (
                DecodingKey::from_rsa_pem(&pem),
                DecodingKey::from_ec_pem(&pem),
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
                _ => {
                    return Err(format!(
                        "public-key-file {file}: not an RSA or P-256 public key in PEM"
                    ));
                }
            };
            keys.write().unwrap_or_else(|e| e.into_inner()).push(key);
        } else if let Some(uri) = jwks {
            if !uri.starts_with("http://") && !uri.starts_with("https://") {
                return Err(format!("jwks-uri {uri:?} must be an http(s) URL"));
            }
            let notify = Arc::new(tokio::sync::Notify::new());
            let handle = tokio::runtime::Handle::try_current()
                .map_err(|_| "jwks-uri needs a running tokio runtime".to_owned())?;
            handle.spawn(refresh_jwks(uri, Arc::downgrade(&keys), notify.clone()));
            refresh = Some(notify);
        }
        Ok(JwtAuth {
            keys,
            refresh,
            issuer: args.text("issuer", usize::MAX)?,
            audience: args.text("audience", usize::MAX)?,
            leeway,
        })
    }

    /// `Ok` when the request carries a valid token; otherwise the 401 to answer.
    pub(crate) fn check(&self, headers: &HeaderMap) -> crate::filter::Outcome {
        let Some(token) = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
        else {
            return Err(unauthorized(HeaderValue::from_static(
                "Bearer realm=\"msa-gateway\"",
            )));
        };
        let invalid = |why: &str| {
            let value = format!(
                "Bearer realm=\"msa-gateway\", error=\"invalid_token\", error_description=\"{why}\""
            );
            unauthorized(
                HeaderValue::from_str(&value)
                    .unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\"")),
            )
        };
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("malformed token"))?;
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
            return Err(invalid("no key for this token's algorithm and key id"));
        };
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = self.leeway;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation)
            .map(|_| ())
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                invalid(match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet",
                    ErrorKind::InvalidSignature => "the signature does not verify",
                    ErrorKind::InvalidIssuer => "wrong issuer",
                    ErrorKind::InvalidAudience => "wrong audience",
                    ErrorKind::MissingRequiredClaim(_) => "a required claim (exp) is missing",
                    ErrorKind::InvalidAlgorithm => "the algorithm is not accepted",
                    _ => "invalid token",
                })
            })
    }
}

fn unauthorized(challenge: HeaderValue) -> Box<http::Response<axum::body::Body>> {
    let mut response =
        crate::proxy::error_response(StatusCode::UNAUTHORIZED, "authentication required");
    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    Box::new(response)
}

/// Fetches the JWKS now, every 5 minutes, and when asked (at most every 10 s).
async fn refresh_jwks(
    uri: String,
    keys: std::sync::Weak<RwLock<Vec<Key>>>,
    notify: Arc<tokio::sync::Notify>,
) {
    let http = reqwest::Client::new();
    loop {
        let Some(target) = keys.upgrade() else { return };
        match fetch_jwks(&http, &uri).await {
            Ok(fetched) => {
                tracing::debug!(%uri, keys = fetched.len(), "JWKS fetched");
                *target.write().unwrap_or_else(|e| e.into_inner()) = fetched;
            }
            Err(error) => {
                tracing::warn!(%uri, %error, "JWKS fetch failed; keeping the keys there are")
            }
        }
        drop(target);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(300)) => {}
            () = notify.notified() => tokio::time::sleep(Duration::from_secs(10)).await,
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
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| format!("not a JWKS: {e}"))?;
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

/// ApiKey: the request's key header must hold one of the accepted keys.
#[derive(Debug)]
pub(crate) struct ApiKey {
    pub(crate) header: HeaderName,
    keys: Vec<String>,
}

impl ApiKey {
    pub(crate) fn build(args: &Args) -> Result<Self, String> {
        let header = args
            .text("header", usize::MAX)?
            .unwrap_or_else(|| "X-API-Key".into());
        let header = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| format!("{header:?} is not a header name"))?;
        let keys = args.list("keys", 0)?;
        if keys.is_empty() {
            return Err("`keys` needs at least one accepted key".into());
        }
        Ok(ApiKey { header, keys })
    }

    pub(crate) fn check(&self, headers: &HeaderMap) -> crate::filter::Outcome {
        let given = headers.get(&self.header).map(HeaderValue::as_bytes);
        // Compare against every key in constant time, so timing tells nothing.
        let accepted = given.is_some_and(|given| {
            self.keys.iter().fold(false, |found, key| {
                found | constant_time_eq(key.as_bytes(), given)
            })
        });
        if accepted {
            return Ok(());
        }
        let challenge = format!("ApiKey header=\"{}\"", self.header);
        Err(unauthorized(
            HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("ApiKey")),
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
