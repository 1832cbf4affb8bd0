//! CORS as Spring Cloud Gateway does it: `globalcors.cors-configurations` by path pattern,
//! and per route under `metadata.cors`, with Spring's `CorsConfiguration` keys
//! (`allowedOrigins`, `allowedOriginPatterns`, `allowedMethods`, `allowedHeaders`,
//! `exposedHeaders`, `allowCredentials`, `maxAge`).
//!
//! A cross-origin request (its `Origin` is not the gateway's own) that a configuration
//! covers is judged by the gateway, as Spring's `DefaultCorsProcessor` judges it: a
//! preflight is answered without calling the upstream, and an origin, method or header
//! outside the configuration gets 403 `Invalid CORS request` — an origin outside the list
//! is never echoed. An allowed request goes on, and its answer carries the gateway's CORS
//! headers in place of any the upstream sent.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use regex::Regex;
use serde_json::Value;

use super::pattern::Pattern;

/// One CORS configuration, as Spring's `CorsConfiguration`.
#[derive(Debug)]
pub(crate) struct CorsConfig {
    /// `*`, or exact origins (`https://shop.example`).
    origins: Vec<String>,
    any_origin: bool,
    /// `allowedOriginPatterns`: `*` matches any run of characters (`https://*.example`).
    origin_patterns: Vec<Regex>,
    /// `None`: any method (`*`).
    methods: Option<Vec<Method>>,
    /// `None`: any header (`*`); lowercase.
    headers: Option<Vec<String>>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<u64>,
}

/// The global configurations, by path pattern, in the file's order.
#[derive(Debug, Default)]
pub(crate) struct GlobalCors {
    configurations: Vec<(Pattern, CorsConfig)>,
}

impl GlobalCors {
    /// `globalcors`: `cors-configurations` (`'[/**]': {...}`); its other keys
    /// (`add-to-simple-url-handler-mapping`) are what msa does anyway. `Err` is the key
    /// below `globalcors` and what is wrong.
    pub(crate) fn parse(value: &Value) -> Result<Self, (String, String)> {
        let Value::Object(section) = value else {
            return Err((String::new(), "expected a mapping".into()));
        };
        let mut configurations = Vec::new();
        for (key, value) in section {
            match kebab(key).as_str() {
                "cors-configurations" => {
                    let Value::Object(map) = value else {
                        return Err((key.clone(), "expected a mapping of path patterns".into()));
                    };
                    for (pattern, config) in map {
                        let at = |inner: String| match inner.is_empty() {
                            true => format!("{key}.{pattern}"),
                            false => format!("{key}.{pattern}.{inner}"),
                        };
                        // Spring's map-key syntax: `'[/**]'`.
                        let path = pattern.trim_start_matches('[').trim_end_matches(']');
                        let compiled = Pattern::path(path).map_err(|e| (at(String::new()), e))?;
                        let config = CorsConfig::parse(config).map_err(|(k, e)| (at(k), e))?;
                        configurations.push((compiled, config));
                    }
                }
                "add-to-simple-url-handler-mapping" => {}
                _ => return Err((key.clone(), "not a globalcors setting".into())),
            }
        }
        Ok(GlobalCors { configurations })
    }

    /// The first configuration whose pattern matches `path`.
    pub(crate) fn find(&self, path: &str) -> Option<&CorsConfig> {
        let mut vars = Vec::new();
        self.configurations
            .iter()
            .find(|(pattern, _)| pattern.matches(path, &mut vars))
            .map(|(_, config)| config)
    }

    /// Whether there is any.
    pub(crate) fn is_empty(&self) -> bool {
        self.configurations.is_empty()
    }
}

/// A key as Spring Boot binds it, in kebab-case.
fn kebab(key: &str) -> String {
    msa_breaker::section::kebab(key)
}

/// A string or list value as a list (a string is split at commas).
fn list(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => Ok(s
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.trim().to_owned()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err("expected a list of strings".to_owned()),
            })
            .collect(),
        _ => Err("expected a string or a list".into()),
    }
}

impl CorsConfig {
    /// One configuration's keys; `Err` is the key and what is wrong.
    pub(crate) fn parse(value: &Value) -> Result<Self, (String, String)> {
        let Value::Object(map) = value else {
            return Err((String::new(), "expected a mapping".into()));
        };
        let mut config = CorsConfig {
            origins: Vec::new(),
            any_origin: false,
            origin_patterns: Vec::new(),
            // Spring's default: GET and HEAD.
            methods: Some(vec![Method::GET, Method::HEAD]),
            headers: Some(Vec::new()),
            exposed: None,
            credentials: false,
            max_age: None,
        };
        for (key, value) in map {
            let fail = |message: String| (key.clone(), message);
            match kebab(key).as_str() {
                "allowed-origins" => {
                    let origins = list(value).map_err(fail)?;
                    config.any_origin = origins.iter().any(|o| o == "*");
                    config.origins = origins
                        .into_iter()
                        .filter(|o| o != "*")
                        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                        .collect();
                }
                "allowed-origin-patterns" => {
                    for pattern in list(value).map_err(fail)? {
                        let pattern = pattern.trim_end_matches('/').to_ascii_lowercase();
                        let regex =
                            format!("^{}$", regex::escape(&pattern).replace(r"\*", "[^/]*"));
                        let regex = Regex::new(&regex)
                            .map_err(|e| fail(format!("{pattern:?} is not a pattern: {e}")))?;
                        config.origin_patterns.push(regex);
                    }
                }
                "allowed-methods" => {
                    let methods = list(value).map_err(fail)?;
                    config.methods = match methods.iter().any(|m| m == "*") {
                        true => None,
                        false => Some(
                            methods
                                .iter()
                                .map(|m| {
                                    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                                        .map_err(|_| fail(format!("{m:?} is not a method")))
                                })
                                .collect::<Result<_, _>>()?,
                        ),
                    };
                }
                "allowed-headers" => {
                    let headers = list(value).map_err(fail)?;
                    config.headers = match headers.iter().any(|h| h == "*") {
                        true => None,
                        false => Some(headers.iter().map(|h| h.to_ascii_lowercase()).collect()),
                    };
                }
                "exposed-headers" => {
                    let exposed = list(value).map_err(fail)?;
                    if exposed.iter().any(|h| h == "*") {
                        return Err(fail("`*` cannot be exposed: name the headers".into()));
                    }
                    config.exposed = Some(
                        HeaderValue::from_str(&exposed.join(", "))
                            .map_err(|_| fail("not header names".into()))?,
                    );
                }
                "allow-credentials" => {
                    config.credentials = value
                        .as_bool()
                        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                        .ok_or_else(|| fail("expected true or false".into()))?;
                }
                "max-age" => {
                    let seconds = match value {
                        Value::Number(n) => n.as_u64(),
                        Value::String(s) => msa_core::duration::parse(s)
                            .ok()
                            .map(|d| d.as_secs())
                            .or_else(|| s.parse().ok()),
                        _ => None,
                    };
                    config.max_age = Some(seconds.ok_or_else(|| fail("expected seconds".into()))?);
                }
                _ => return Err(fail("not a CORS setting".into())),
            }
        }
        if config.credentials && config.any_origin {
            let key = map.keys().find(|k| kebab(k) == "allowed-origins");
            return Err((
                key.cloned().unwrap_or_default(),
                "`*` cannot be allowed with allowCredentials: true (list the origins, or \
                 use allowedOriginPatterns)"
                    .into(),
            ));
        }
        Ok(config)
    }

    /// The value to answer in `Access-Control-Allow-Origin`, or `None` when `origin` is
    /// not allowed.
    fn allow_origin(&self, origin: &str) -> Option<HeaderValue> {
        let lower = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.any_origin {
            return Some(HeaderValue::from_static("*"));
        }
        let listed = self.origins.contains(&lower)
            || self.origin_patterns.iter().any(|p| p.is_match(&lower));
        listed.then(|| HeaderValue::from_str(origin).ok()).flatten()
    }

    fn allows_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// The requested headers, if all are allowed.
    fn allow_headers(&self, requested: &[String]) -> Option<Vec<String>> {
        match &self.headers {
            None => Some(requested.to_vec()),
            Some(allowed) => requested
                .iter()
                .all(|h| allowed.contains(&h.to_ascii_lowercase()))
                .then(|| requested.to_vec()),
        }
    }

    /// The answer to a preflight (`OPTIONS` with `Access-Control-Request-Method`).
    pub(crate) fn preflight(
        &self,
        origin: &str,
        headers: &HeaderMap,
    ) -> Response<axum::body::Body> {
        let mut vary = HeaderMap::new();
        vary_on(&mut vary, true);
        let Some(allow_origin) = self.allow_origin(origin) else {
            return rejected(vary);
        };
        let method = headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok());
        let Some(method) = method.filter(|m| self.allows_method(m)) else {
            return rejected(vary);
        };
        let requested: Vec<String> = headers
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        let Some(allow_headers) = self.allow_headers(&requested) else {
            return rejected(vary);
        };
        let mut response = Response::new(axum::body::Body::empty());
        let out = response.headers_mut();
        out.extend(vary);
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        let methods = match &self.methods {
            Some(methods) => methods
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(","),
            None => method.as_str().to_owned(),
        };
        if let Ok(methods) = HeaderValue::from_str(&methods) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        if !allow_headers.is_empty()
            && let Ok(value) = HeaderValue::from_str(&allow_headers.join(", "))
        {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, value);
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(max_age) = self.max_age {
            out.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
        }
        response
    }

    /// The CORS headers for an actual request's answer; `Err` is the 403 when its origin
    /// or method is not allowed.
    pub(crate) fn actual(
        &self,
        origin: &str,
        method: &Method,
    ) -> Result<HeaderMap, Box<Response<axum::body::Body>>> {
        let mut out = HeaderMap::new();
        vary_on(&mut out, false);
        let Some(allow_origin) = self.allow_origin(origin) else {
            return Err(Box::new(rejected(out)));
        };
        if !self.allows_method(method) {
            return Err(Box::new(rejected(out)));
        }
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if let Some(exposed) = &self.exposed {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        Ok(out)
    }
}

/// `Vary` as Spring writes it on every CORS answer.
fn vary_on(headers: &mut HeaderMap, preflight: bool) {
    let value = match preflight {
        true => "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        false => "Origin",
    };
    headers.insert(header::VARY, HeaderValue::from_static(value));
}

/// Spring's refusal: 403 `Invalid CORS request`, with no CORS header.
fn rejected(vary: HeaderMap) -> Response<axum::body::Body> {
    let mut response = Response::new(axum::body::Body::from("Invalid CORS request"));
    *response.status_mut() = StatusCode::FORBIDDEN;
    response.headers_mut().extend(vary);
    response
}

/// The request's `Origin` when it is cross-origin: another host or port than the
/// gateway's own as the client addressed it (`Host`), over HTTP or HTTPS.
pub(crate) fn cross_origin<'a>(headers: &'a HeaderMap, host: Option<&str>) -> Option<&'a str> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    let same = host.is_some_and(|host| {
        let (rest, port) = match (
            origin.strip_prefix("http://"),
            origin.strip_prefix("https://"),
        ) {
            (Some(rest), _) => (rest, ":80"),
            (_, Some(rest)) => (rest, ":443"),
            _ => return false,
        };
        // The scheme's default port may be written or left out on either side.
        let bare = |text: &'a str| text.strip_suffix(port).unwrap_or(text);
        bare(rest).eq_ignore_ascii_case(host.strip_suffix(port).unwrap_or(host))
    });
    (!same).then_some(origin)
}

/// Whether a request is a CORS preflight.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The CORS response headers' names: an upstream's are replaced by the gateway's when a
/// configuration covers the request.
pub(crate) const RESPONSE_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> CorsConfig {
        CorsConfig::parse(&json).unwrap()
    }

    #[test]
    fn origins_are_matched_exactly_or_by_pattern_and_never_echoed_otherwise() {
        let c = config(serde_json::json!({
            "allowedOrigins": "https://shop.example",
            "allowedOriginPatterns": ["https://*.partner.example"],
            "allowCredentials": true,
        }));
        assert_eq!(
            c.allow_origin("https://shop.example").unwrap(),
            "https://shop.example"
        );
        assert!(c.allow_origin("https://eu.partner.example").is_some());
        assert!(c.allow_origin("https://evil.example").is_none());
        assert!(
            c.allow_origin("https://shop.example.evil.example")
                .is_none()
        );
        assert!(c.allow_origin("https://a/b.partner.example").is_none());
        let error = CorsConfig::parse(&serde_json::json!({
            "allowedOrigins": "*",
            "allowCredentials": true,
        }))
        .unwrap_err();
        assert_eq!(error.0, "allowedOrigins");
        let error = CorsConfig::parse(&serde_json::json!({"allowedOrigin": "*"})).unwrap_err();
        assert_eq!(error, ("allowedOrigin".into(), "not a CORS setting".into()));
    }

    #[test]
    fn same_origin_requests_are_not_cors() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, "http://gw.example:8080".parse().unwrap());
        assert_eq!(cross_origin(&headers, Some("gw.example:8080")), None);
        headers.insert(header::ORIGIN, "https://gw.example".parse().unwrap());
        assert_eq!(cross_origin(&headers, Some("gw.example")), None);
        assert_eq!(cross_origin(&headers, Some("gw.example:443")), None);
        assert!(cross_origin(&headers, Some("gw.example:8443")).is_some());
        headers.insert(header::ORIGIN, "http://gw.example:8080".parse().unwrap());
        assert_eq!(
            cross_origin(&headers, Some("other.example")),
            Some("http://gw.example:8080")
        );
    }
}
