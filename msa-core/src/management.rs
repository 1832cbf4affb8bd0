//! Who may call the endpoints that change state or reveal configuration: gateway routes
//! and refresh, `/actuator/refresh`, the config server's `/encrypt` and `/decrypt`.
//!
//! With a management token (`--management-token-file PATH`, or [`TOKEN_ENV`]) they need
//! `Authorization: Bearer <token>`, and answer 401 without it. With none, they are served
//! only on a listener bound to a loopback address (every msa default bind is one), and
//! answer 403 on any other: an operator who binds `0.0.0.0` must choose a token first.
//!
//! ```
//! use axum::{Router, routing::post};
//! use msa_core::management::Management;
//!
//! let exposed = Management::none("0.0.0.0:8080".parse().unwrap());
//! let sensitive: Router = Router::new().route("/actuator/refresh", post(|| async { "ok" }));
//! let guarded = exposed.guard(sensitive); // 403: no token, and not on loopback
//! # let _ = guarded;
//! ```

use std::net::SocketAddr;
use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::http::Authorization;

/// The environment variable a management token may come from.
pub const TOKEN_ENV: &str = "MSA_MANAGEMENT_TOKEN";

/// The management token, or its absence, for the listener the endpoints are served on.
#[derive(Clone, Debug)]
pub struct Management {
    token: Option<Authorization>,
    loopback: bool,
}

impl Management {
    /// For a listener bound to `bind`: the token from `token_file` (trimmed) if given, else
    /// from [`TOKEN_ENV`], else none. A file that cannot be read, or an empty token, is an
    /// error naming it.
    pub fn from_settings(bind: SocketAddr, token_file: Option<&Path>) -> Result<Self, String> {
        let token = match token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| format!("--management-token-file {}: {e}", file.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var(TOKEN_ENV).ok(),
        };
        match token {
            Some(token) if token.is_empty() => Err(match token_file {
                Some(file) => format!(
                    "--management-token-file {}: the file is empty",
                    file.display()
                ),
                None => format!("{TOKEN_ENV} is set but empty"),
            }),
            Some(token) => Ok(Self::token(bind, &token)),
            None => Ok(Self::none(bind)),
        }
    }

    /// No token: the endpoints are served only if `bind` is a loopback address.
    pub fn none(bind: SocketAddr) -> Self {
        Management {
            token: None,
            loopback: bind.ip().is_loopback(),
        }
    }

    /// The endpoints need `Authorization: Bearer <token>`.
    pub fn token(bind: SocketAddr, token: &str) -> Self {
        Management {
            token: Some(Authorization::bearer(token, "msa-management")),
            loopback: bind.ip().is_loopback(),
        }
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `Ok` if a request with these headers may call a guarded endpoint; else the answer
    /// (401 with a challenge, or 403 with the reason).
    #[allow(clippy::result_large_err)]
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), Response> {
        match &self.token {
            Some(token) if token.allows(headers) => Ok(()),
            Some(token) => Err(token.challenge()),
            None if self.loopback => Ok(()),
            None => Err((
                StatusCode::FORBIDDEN,
                "this endpoint needs a management token (--management-token-file or \
                 MSA_MANAGEMENT_TOKEN) on a listener that is not bound to a loopback address",
            )
                .into_response()),
        }
    }

    /// `router`'s routes, each checked first (see [`check`](Self::check)).
    pub fn guard<S: Clone + Send + Sync + 'static>(&self, router: Router<S>) -> Router<S> {
        let management = self.clone();
        router.route_layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let allowed = management.check(request.headers());
                async move {
                    match allowed {
                        Ok(()) => next.run(request).await,
                        Err(refused) => refused,
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: Option<&str>) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert("authorization", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn without_a_token_only_a_loopback_listener_serves() {
        let local = Management::none("127.0.0.1:8080".parse().unwrap());
        assert!(local.check(&headers(None)).is_ok());
        let exposed = Management::none("0.0.0.0:8080".parse().unwrap());
        assert_eq!(exposed.check(&headers(None)).unwrap_err().status(), 403);
        let v6 = Management::none("[::1]:8080".parse().unwrap());
        assert!(v6.check(&headers(None)).is_ok());
    }

    #[test]
    fn with_a_token_every_listener_needs_it() {
        for bind in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            let m = Management::token(bind.parse().unwrap(), "s3cret");
            assert_eq!(m.check(&headers(None)).unwrap_err().status(), 401);
            assert_eq!(
                m.check(&headers(Some("Bearer nope"))).unwrap_err().status(),
                401
            );
            assert!(m.check(&headers(Some("Bearer s3cret"))).is_ok());
        }
    }

    #[test]
    fn a_token_file_is_read_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let bind = "0.0.0.0:1".parse().unwrap();
        let m = Management::from_settings(bind, Some(&file)).unwrap();
        assert!(m.check(&headers(Some("Bearer s3cret"))).is_ok());
        std::fs::write(&file, "  \n").unwrap();
        let error = Management::from_settings(bind, Some(&file)).unwrap_err();
        assert!(error.ends_with("the file is empty"), "{error}");
        let missing = Management::from_settings(bind, Some(&dir.path().join("none")));
        assert!(missing.unwrap_err().starts_with("--management-token-file"));
    }
}
