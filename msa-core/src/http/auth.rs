//! Requiring an `Authorization` header on a server's endpoints.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};

/// The `Authorization` header a server requires, built once and compared in constant time.
///
/// # Examples
///
/// ```
/// use msa_core::http::Authorization;
///
/// let auth = Authorization::bearer("s3cret", "msa-registry");
/// let mut headers = http::HeaderMap::new();
/// assert!(!auth.allows(&headers));
/// headers.insert("authorization", "Bearer s3cret".parse().unwrap());
/// assert!(auth.allows(&headers));
/// assert_eq!(auth.challenge().status(), 401);
/// ```
#[derive(Clone)]
pub struct Authorization {
    expected: Arc<[u8]>,
    /// Also allowed: HTTP Basic with any user and this password (see
    /// [`Authorization::token`]).
    basic_password: Option<Arc<[u8]>>,
    challenge: HeaderValue,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

impl Authorization {
    fn new(expected: String, challenge: String) -> Self {
        Authorization {
            expected: expected.into_bytes().into(),
            basic_password: None,
            // A realm with characters a header cannot hold loses its realm, not its check.
            challenge: HeaderValue::try_from(challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Basic")),
        }
    }

    /// HTTP Basic with these credentials.
    pub fn basic(user: &str, password: &str, realm: &str) -> Self {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Self::new(format!("Basic {token}"), format!("Basic realm=\"{realm}\""))
    }

    /// A bearer token.
    pub fn bearer(token: &str, realm: &str) -> Self {
        Self::new(
            format!("Bearer {token}"),
            format!("Bearer realm=\"{realm}\""),
        )
    }

    /// A token, sent as a bearer token or as the password of HTTP Basic (any user name), as
    /// Spring's Eureka clients send credentials from a `defaultZone` URL.
    ///
    /// ```
    /// use msa_core::http::Authorization;
    ///
    /// let auth = Authorization::token("s3cret", "msa-registry");
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("authorization", "Bearer s3cret".parse().unwrap());
    /// assert!(auth.allows(&headers));
    /// // user:s3cret
    /// headers.insert("authorization", "Basic dXNlcjpzM2NyZXQ=".parse().unwrap());
    /// assert!(auth.allows(&headers));
    /// // user:wrong
    /// headers.insert("authorization", "Basic dXNlcjp3cm9uZw==".parse().unwrap());
    /// assert!(!auth.allows(&headers));
    /// ```
    pub fn token(token: &str, realm: &str) -> Self {
        let mut auth = Self::bearer(token, realm);
        auth.basic_password = Some(token.as_bytes().into());
        auth
    }

    /// Challenges with HTTP Basic (`realm`), so that a browser asks for the credentials
    /// (it asks for a user and password; with [`Authorization::token`], the token is the
    /// password).
    pub fn basic_challenge(mut self, realm: &str) -> Self {
        if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
            self.challenge = value;
        }
        self
    }

    /// Whether `headers` carry the expected `Authorization`.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        headers.get(AUTHORIZATION).is_some_and(|given| {
            let given = given.as_bytes();
            if crate::secrets::same_secret(given, &self.expected) {
                return true;
            }
            let Some(password) = &self.basic_password else {
                return false;
            };
            let Some(encoded) = given.strip_prefix(b"Basic ") else {
                return false;
            };
            let Ok(decoded) =
                base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii())
            else {
                return false;
            };
            decoded
                .iter()
                .position(|&b| b == b':')
                .is_some_and(|colon| crate::secrets::same_secret(&decoded[colon + 1..], password))
        })
    }

    /// The 401 answer, with its `WWW-Authenticate` challenge.
    pub fn challenge(&self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, self.challenge.clone())],
            "authentication required",
        )
            .into_response()
    }
}
