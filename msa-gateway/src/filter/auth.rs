//! Authentication filters: `JwtAuth` (bearer tokens signed with HS256, RS256 or ES256) and
//! `ApiKey`. A request that fails gets 401 with a `WWW-Authenticate` header saying why.

use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, StatusCode};
use msa_core::jwt::JwtVerifier;

use crate::config::Args;

/// JwtAuth: msa-core's [`JwtVerifier`] (the one services use too), configured from the
/// filter's arguments.
#[derive(Debug)]
pub(crate) struct JwtAuth {
    verifier: JwtVerifier,
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
            .map_err(|e| format!("leeway: {e}"))?,
            None => std::time::Duration::from_secs(60),
        };
        let verifier = if let Some(secret) = secret {
            JwtVerifier::hs256(&secret).map_err(|e| format!("hs256-secret: {e}"))?
        } else if let Some(file) = file {
            let pem = std::fs::read(&file).map_err(|e| format!("public-key-file {file}: {e}"))?;
            JwtVerifier::public_key_pem(&pem).map_err(|e| format!("public-key-file {file}: {e}"))?
        } else {
            let uri = jwks.unwrap_or_default();
            JwtVerifier::jwk_set_uri(&uri, reqwest::Client::new()).map_err(|e| e.to_string())?
        };
        let mut verifier = verifier.leeway(leeway).realm("msa-gateway");
        if let Some(issuer) = args.text("issuer", usize::MAX)? {
            verifier = verifier.issuer(issuer);
        }
        if let Some(audience) = args.text("audience", usize::MAX)? {
            verifier = verifier.audiences([audience]);
        }
        Ok(JwtAuth { verifier })
    }

    /// `Ok` when the request carries a valid token; otherwise the 401 to answer.
    pub(crate) fn check(&self, headers: &HeaderMap) -> crate::error::Outcome {
        match self.verifier.verify_headers(headers) {
            Ok(_) => Ok(()),
            Err(error) => Err(unauthorized(self.verifier.challenge(error))),
        }
    }
}

fn unauthorized(challenge: HeaderValue) -> Box<http::Response<axum::body::Body>> {
    let mut response =
        crate::error::error_response(StatusCode::UNAUTHORIZED, "authentication required");
    response.headers_mut().insert(WWW_AUTHENTICATE, challenge);
    Box::new(response)
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

    pub(crate) fn check(&self, headers: &HeaderMap) -> crate::error::Outcome {
        let given = headers.get(&self.header).map(HeaderValue::as_bytes);
        // Compare against every key in constant time, so timing tells nothing.
        let accepted = given.is_some_and(|given| {
            self.keys.iter().fold(false, |found, key| {
                found | msa_core::secrets::same_secret(given, key.as_bytes())
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
