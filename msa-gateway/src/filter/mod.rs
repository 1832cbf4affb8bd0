//! Route filters: Spring Cloud Gateway's set, built in, and a team's own written in Rust
//! ([`GatewayFilter`], registered by name in [`Filters`]; see the `custom_filter`
//! example). Each changes the request on its way to the upstream, the response on its way
//! back, or answers in the upstream's place.

// Spring's filters are an enum (`Filter`) matched exhaustively: a request step (arguments
// checked at load), a response step, or around the upstream call (CircuitBreaker, Retry
// and CacheRequestBody, in `resilience`); RequestRateLimiter's buckets are in
// `rate_limit`, JwtAuth and ApiKey in `auth`.

mod args;
pub(crate) mod auth;
mod custom;
mod headers;
mod path;
pub(crate) mod rate_limit;
pub(crate) mod resilience;

pub use self::custom::{FilterFuture, Filters, GatewayFilter, MAX_SHAPED_BODY};

pub(crate) use self::args::status;
pub(crate) use self::headers::oversized_field;

use self::args::{java_replacement, number, size};
use self::headers::{SECURE_HEADERS, expand, oversized_header, substitute};
use self::path::substitute_path;

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};
use regex::Regex;

use crate::config::Definition;
use crate::error::Outcome;

/// The filters msa-gateway implements, by the names the routes file gives them.
pub(crate) const BUILT_IN: &[&str] = &[
    "AddRequestHeader",
    "AddRequestHeadersIfNotPresent",
    "SetRequestHeader",
    "RemoveRequestHeader",
    "MapRequestHeader",
    "PreserveHostHeader",
    "PrefixPath",
    "StripPrefix",
    "RewritePath",
    "SetPath",
    "AddRequestParameter",
    "RemoveRequestParameter",
    "RequestHeaderSize",
    "RequestSize",
    "RedirectTo",
    "AddResponseHeader",
    "SetResponseHeader",
    "RemoveResponseHeader",
    "DedupeResponseHeader",
    "RewriteResponseHeader",
    "RewriteLocationResponseHeader",
    "SecureHeaders",
    "SetStatus",
    "CircuitBreaker",
    "Retry",
    "CacheRequestBody",
    "RequestRateLimiter",
    "JwtAuth",
    "ApiKey",
];

/// The request as filters see and change it.
#[derive(Debug)]
pub struct Exchange {
    /// The path to send upstream (starts as the request's normalized path).
    pub(crate) path: String,
    /// The query to send upstream, without `?`.
    pub(crate) query: Option<String>,
    pub(crate) headers: HeaderMap,
    /// Path and host variables the predicates captured.
    pub(crate) vars: Vec<(String, String)>,
    /// Keep the client's Host header upstream (PreserveHostHeader).
    pub(crate) preserve_host: bool,
    /// The most body bytes to accept (RequestSize); `None`: no limit.
    pub(crate) max_body: Option<u64>,
    /// The client's address.
    pub(crate) remote: std::net::SocketAddr,
    /// Headers request filters add to the response (RequestRateLimiter's).
    pub(crate) response_headers: HeaderMap,
    /// A CORS configuration judged the request: the upstream's CORS headers give way to
    /// the gateway's (in `response_headers`).
    pub(crate) cors: bool,
}

impl Exchange {
    /// A request's exchange before any filter: its normalized path, query and headers, and
    /// the variables the predicates captured.
    pub(crate) fn new(
        path: String,
        query: Option<&str>,
        headers: HeaderMap,
        vars: Vec<(String, String)>,
        remote: std::net::SocketAddr,
    ) -> Exchange {
        Exchange {
            path,
            query: query.map(str::to_owned),
            headers,
            vars,
            preserve_host: false,
            max_body: None,
            remote,
            response_headers: HeaderMap::new(),
            cors: false,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Filter {
    AddRequestHeader(HeaderName, String),
    AddRequestHeadersIfNotPresent(Vec<(HeaderName, String)>),
    SetRequestHeader(HeaderName, String),
    RemoveRequestHeader(HeaderName),
    MapRequestHeader(HeaderName, HeaderName),
    PreserveHostHeader,
    PrefixPath(String),
    StripPrefix(usize),
    RewritePath(Regex, String),
    SetPath(String),
    AddRequestParameter(String, String),
    RemoveRequestParameter(String),
    RequestHeaderSize(usize),
    RequestSize(u64),
    RedirectTo(StatusCode, String),
    AddResponseHeader(HeaderName, String),
    SetResponseHeader(HeaderName, String),
    RemoveResponseHeader(HeaderName),
    DedupeResponseHeader(Vec<HeaderName>, Dedupe),
    RewriteResponseHeader(HeaderName, Regex, String),
    RewriteLocationResponseHeader(Regex),
    SecureHeaders,
    SetStatus(StatusCode),
    CircuitBreaker(crate::filter::resilience::BreakerFilter),
    Retry(crate::filter::resilience::RetryFilter),
    CacheRequestBody,
    RequestRateLimiter(Box<crate::filter::rate_limit::RateLimit>),
    JwtAuth(crate::filter::auth::JwtAuth),
    ApiKey(crate::filter::auth::ApiKey),
    /// A team's own, built by a factory in [`Filters`], or one of its global filters.
    Custom(std::sync::Arc<dyn GatewayFilter>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Dedupe {
    First,
    Last,
    Unique,
}

impl Filter {
    /// Whether it only changes the path or query sent upstream: no header, body or
    /// response of the request's is touched, so the request's header lines can be passed
    /// on as they arrived.
    pub(crate) fn only_rewrites_target(&self) -> bool {
        matches!(
            self,
            Filter::PrefixPath(_)
                | Filter::StripPrefix(_)
                | Filter::RewritePath(..)
                | Filter::SetPath(_)
                | Filter::AddRequestParameter(..)
                | Filter::RemoveRequestParameter(_)
        )
    }

    pub(crate) fn build(
        definition: &Definition,
        resilience: resilience::Resilience<'_>,
        custom: &Filters,
        route_id: &str,
    ) -> Result<Self, String> {
        let a = &definition.args;
        let header = |name: &str, pos: usize| -> Result<HeaderName, String> {
            let value = a.required(name, pos)?;
            HeaderName::from_bytes(value.as_bytes())
                .map_err(|_| format!("{value:?} is not a header name"))
        };
        Ok(match definition.name.as_str() {
            "AddRequestHeader" => {
                Filter::AddRequestHeader(header("name", 0)?, a.required("value", 1)?)
            }
            "AddRequestHeadersIfNotPresent" => {
                let pairs = a.list("headers", 0)?;
                let pairs = pairs
                    .iter()
                    .map(|pair| {
                        let (name, value) = pair
                            .split_once(':')
                            .ok_or_else(|| format!("{pair:?} is not name:value"))?;
                        let name = HeaderName::from_bytes(name.trim().as_bytes())
                            .map_err(|_| format!("{name:?} is not a header name"))?;
                        Ok((name, value.trim().to_owned()))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                if pairs.is_empty() {
                    return Err("`headers` needs at least one name:value".into());
                }
                Filter::AddRequestHeadersIfNotPresent(pairs)
            }
            "SetRequestHeader" => {
                Filter::SetRequestHeader(header("name", 0)?, a.required("value", 1)?)
            }
            "RemoveRequestHeader" => Filter::RemoveRequestHeader(header("name", 0)?),
            "MapRequestHeader" => {
                Filter::MapRequestHeader(header("fromHeader", 0)?, header("toHeader", 1)?)
            }
            "PreserveHostHeader" => Filter::PreserveHostHeader,
            "PrefixPath" => {
                let prefix = a.required("prefix", 0)?;
                if !prefix.starts_with('/') {
                    return Err(format!("prefix {prefix:?} must start with /"));
                }
                Filter::PrefixPath(prefix.trim_end_matches('/').to_owned())
            }
            "StripPrefix" => Filter::StripPrefix(number(&a.required("parts", 0)?, "parts")?),
            "RewritePath" => {
                let regexp = a.required("regexp", 0)?;
                let regex =
                    Regex::new(&regexp).map_err(|e| format!("bad regexp {regexp:?}: {e}"))?;
                Filter::RewritePath(regex, java_replacement(&a.required("replacement", 1)?))
            }
            "SetPath" => Filter::SetPath(a.required("template", 0)?),
            "AddRequestParameter" => {
                Filter::AddRequestParameter(a.required("name", 0)?, a.required("value", 1)?)
            }
            "RemoveRequestParameter" => Filter::RemoveRequestParameter(a.required("name", 0)?),
            "RequestHeaderSize" => {
                Filter::RequestHeaderSize(size(&a.required("maxSize", 0)?)? as usize)
            }
            "RequestSize" => Filter::RequestSize(size(&a.required("maxSize", 0)?)?),
            "RedirectTo" => {
                let status = status(&a.required("status", 0)?)?;
                if !status.is_redirection() {
                    return Err(format!("status {status} is not a 3xx redirection"));
                }
                Filter::RedirectTo(status, a.required("url", 1)?)
            }
            "AddResponseHeader" => {
                Filter::AddResponseHeader(header("name", 0)?, a.required("value", 1)?)
            }
            "SetResponseHeader" => {
                Filter::SetResponseHeader(header("name", 0)?, a.required("value", 1)?)
            }
            "RemoveResponseHeader" => Filter::RemoveResponseHeader(header("name", 0)?),
            "DedupeResponseHeader" => {
                let names = a.required("name", 0)?;
                let names = names
                    .split_whitespace()
                    .map(|n| {
                        HeaderName::from_bytes(n.as_bytes())
                            .map_err(|_| format!("{n:?} is not a header name"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let strategy = match a.text("strategy", 1)?.as_deref() {
                    None | Some("RETAIN_FIRST") => Dedupe::First,
                    Some("RETAIN_LAST") => Dedupe::Last,
                    Some("RETAIN_UNIQUE") => Dedupe::Unique,
                    Some(other) => {
                        return Err(format!(
                            "strategy {other:?} is not RETAIN_FIRST, RETAIN_LAST or RETAIN_UNIQUE"
                        ));
                    }
                };
                Filter::DedupeResponseHeader(names, strategy)
            }
            "RewriteResponseHeader" => {
                let regexp = a.required("regexp", 1)?;
                let regex =
                    Regex::new(&regexp).map_err(|e| format!("bad regexp {regexp:?}: {e}"))?;
                Filter::RewriteResponseHeader(
                    header("name", 0)?,
                    regex,
                    java_replacement(&a.required("replacement", 2)?),
                )
            }
            "RewriteLocationResponseHeader" => {
                // Rewrites the upstream's host in Location to the request's: the common use.
                let protocols = a
                    .text("protocols", 3)?
                    .unwrap_or_else(|| "https?|ftps?".into());
                let regex = Regex::new(&format!("^({protocols})://[^/]+"))
                    .map_err(|e| format!("bad protocols {protocols:?}: {e}"))?;
                Filter::RewriteLocationResponseHeader(regex)
            }
            "SecureHeaders" => Filter::SecureHeaders,
            "SetStatus" => Filter::SetStatus(status(&a.required("status", 0)?)?),
            "CircuitBreaker" => {
                Filter::CircuitBreaker(resilience::BreakerFilter::build(a, resilience)?)
            }
            "Retry" => Filter::Retry(resilience::RetryFilter::build(
                a,
                route_id,
                resilience.retry,
            )?),
            "CacheRequestBody" => Filter::CacheRequestBody,
            "RequestRateLimiter" => Filter::RequestRateLimiter(Box::new(
                crate::filter::rate_limit::RateLimit::build(a, route_id)?,
            )),
            "JwtAuth" => Filter::JwtAuth(crate::filter::auth::JwtAuth::build(a)?),
            "ApiKey" => Filter::ApiKey(crate::filter::auth::ApiKey::build(a)?),
            other => match custom.build(other, a) {
                Some(built) => Filter::Custom(built?),
                None => return Err(format!("unknown filter {other:?}")),
            },
        })
    }

    /// On the way in, for the filters that need no waiting (all but a team's own and
    /// RequestRateLimiter with buckets in Redis: see [`run`]).
    pub(crate) fn request(&self, ex: &mut Exchange) -> Outcome {
        match self {
            Filter::AddRequestHeader(name, value) => {
                if let Some(value) = expand(value, &ex.vars) {
                    ex.headers.append(name, value);
                }
            }
            Filter::AddRequestHeadersIfNotPresent(pairs) => {
                for (name, value) in pairs {
                    if !ex.headers.contains_key(name)
                        && let Some(value) = expand(value, &ex.vars)
                    {
                        ex.headers.insert(name, value);
                    }
                }
            }
            Filter::SetRequestHeader(name, value) => {
                if let Some(value) = expand(value, &ex.vars) {
                    ex.headers.insert(name, value);
                }
            }
            Filter::RemoveRequestHeader(name) => {
                ex.headers.remove(name);
            }
            Filter::MapRequestHeader(from, to) => {
                let values: Vec<HeaderValue> = ex.headers.get_all(from).iter().cloned().collect();
                for value in values {
                    ex.headers.append(to, value);
                }
            }
            Filter::PreserveHostHeader => ex.preserve_host = true,
            Filter::PrefixPath(prefix) => ex.path = format!("{prefix}{}", ex.path),
            Filter::StripPrefix(parts) => {
                let rest: Vec<&str> = ex
                    .path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .skip(*parts)
                    .collect();
                let trailing = ex.path.ends_with('/') && !rest.is_empty();
                ex.path = format!("/{}{}", rest.join("/"), if trailing { "/" } else { "" });
            }
            Filter::RewritePath(regex, replacement) => {
                ex.path = regex
                    .replace_all(&ex.path, replacement.as_str())
                    .into_owned();
                if !ex.path.starts_with('/') {
                    ex.path.insert(0, '/');
                }
            }
            Filter::SetPath(template) => {
                ex.path = substitute_path(template, &ex.vars).map_err(|reason| {
                    Box::new(crate::error::error_response(
                        StatusCode::BAD_REQUEST,
                        &reason,
                    ))
                })?;
            }
            Filter::AddRequestParameter(name, value) => {
                let value = substitute(value, &ex.vars);
                let pair: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair(name, &value)
                    .finish();
                ex.query = Some(match ex.query.take().filter(|q| !q.is_empty()) {
                    Some(query) => format!("{query}&{pair}"),
                    None => pair,
                });
            }
            Filter::RemoveRequestParameter(name) => {
                if let Some(query) = &ex.query {
                    let kept: String = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(
                            form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != name),
                        )
                        .finish();
                    ex.query = (!kept.is_empty()).then_some(kept);
                }
            }
            Filter::RequestHeaderSize(max) => {
                if let Some((name, size)) = oversized_header(&ex.headers, *max) {
                    return Err(Box::new(crate::error::error_response(
                        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                        &format!("request header {name} is {size} bytes; the limit is {max}"),
                    )));
                }
            }
            Filter::RequestSize(max) => {
                let declared = ex
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(length) = declared
                    && length > *max
                {
                    let mut response = crate::error::error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("request size is {length} bytes; the limit is {max}"),
                    );
                    response.headers_mut().insert(
                        "errormessage",
                        HeaderValue::from_str(&format!(
                            "Request size is larger than permissible limit. Request size is {length} where permissible limit is {max}"
                        ))
                        .expect("ASCII"),
                    );
                    return Err(Box::new(response));
                }
                ex.max_body = Some(ex.max_body.map_or(*max, |m| m.min(*max)));
            }
            Filter::JwtAuth(jwt) => jwt.check(&ex.headers)?,
            Filter::ApiKey(api_key) => {
                api_key.check(&ex.headers)?;
                // The key stays at the gateway.
                ex.headers.remove(&api_key.header);
            }
            Filter::RequestRateLimiter(limit) if limit.is_local() => {
                let decision = limit.check(&ex.headers, ex.remote);
                limit.headers(decision, &mut ex.response_headers);
                if !decision.allowed {
                    return Err(crate::error::too_many_requests());
                }
            }
            // Buckets in Redis are asked by `run`, which awaits them.
            Filter::RequestRateLimiter(_) => {}
            Filter::RedirectTo(status, url) => {
                let mut response = http::Response::new(axum::body::Body::empty());
                *response.status_mut() = *status;
                if let Some(location) = expand(url, &ex.vars) {
                    response.headers_mut().insert(LOCATION, location);
                }
                return Err(Box::new(response));
            }
            // On the way out.
            Filter::AddResponseHeader(..)
            | Filter::SetResponseHeader(..)
            | Filter::RemoveResponseHeader(_)
            | Filter::DedupeResponseHeader(..)
            | Filter::RewriteResponseHeader(..)
            | Filter::RewriteLocationResponseHeader(_)
            | Filter::SecureHeaders
            | Filter::SetStatus(_) => {}
            // Around the upstream call (`resilience::Guards`).
            Filter::CircuitBreaker(_) | Filter::Retry(_) | Filter::CacheRequestBody => {}
            // Awaited by `run`.
            Filter::Custom(_) => {}
        }
        Ok(())
    }

    /// On the way out.
    pub(crate) fn response(
        &self,
        ex: &Exchange,
        host: Option<&str>,
        response: &mut http::response::Parts,
    ) {
        let vars = &ex.vars;
        let headers = &mut response.headers;
        match self {
            Filter::AddResponseHeader(name, value) => {
                if let Some(value) = expand(value, vars) {
                    headers.append(name, value);
                }
            }
            Filter::SetResponseHeader(name, value) => {
                if let Some(value) = expand(value, vars) {
                    headers.insert(name, value);
                }
            }
            Filter::RemoveResponseHeader(name) => {
                headers.remove(name);
            }
            Filter::DedupeResponseHeader(names, strategy) => {
                for name in names {
                    let values: Vec<String> = headers
                        .get_all(name)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()))
                        .collect();
                    if values.len() < 2 {
                        continue;
                    }
                    let kept = match strategy {
                        Dedupe::First => vec![values[0].clone()],
                        Dedupe::Last => vec![values[values.len() - 1].clone()],
                        Dedupe::Unique => {
                            let mut unique: Vec<String> = Vec::new();
                            for v in values {
                                if !unique.contains(&v) {
                                    unique.push(v);
                                }
                            }
                            unique
                        }
                    };
                    if let Ok(value) = HeaderValue::from_str(&kept.join(", ")) {
                        headers.insert(name, value);
                    }
                }
            }
            Filter::RewriteResponseHeader(name, regex, replacement) => {
                let rewritten: Vec<HeaderValue> = headers
                    .get_all(name)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(|v| {
                        HeaderValue::from_str(&regex.replace_all(v, replacement.as_str())).ok()
                    })
                    .collect();
                if !rewritten.is_empty() {
                    headers.remove(name);
                    for value in rewritten {
                        headers.append(name, value);
                    }
                }
            }
            Filter::RewriteLocationResponseHeader(regex) => {
                if let (Some(host), Some(location)) =
                    (host, headers.get(LOCATION).and_then(|v| v.to_str().ok()))
                {
                    let rewritten = regex.replace(location, |c: &regex::Captures<'_>| {
                        format!("{}://{host}", &c[1])
                    });
                    if let Ok(value) = HeaderValue::from_str(&rewritten) {
                        headers.insert(LOCATION, value);
                    }
                }
            }
            Filter::SecureHeaders => {
                for (name, value) in SECURE_HEADERS {
                    if !headers.contains_key(*name) {
                        headers.insert(*name, HeaderValue::from_static(value));
                    }
                }
            }
            Filter::SetStatus(status) => response.status = *status,
            Filter::Custom(filter) => filter.response(ex, response),
            // On the way in.
            Filter::AddRequestHeader(..)
            | Filter::AddRequestHeadersIfNotPresent(_)
            | Filter::SetRequestHeader(..)
            | Filter::RemoveRequestHeader(_)
            | Filter::MapRequestHeader(..)
            | Filter::PreserveHostHeader
            | Filter::PrefixPath(_)
            | Filter::StripPrefix(_)
            | Filter::RewritePath(..)
            | Filter::SetPath(_)
            | Filter::AddRequestParameter(..)
            | Filter::RemoveRequestParameter(_)
            | Filter::RequestHeaderSize(_)
            | Filter::RequestSize(_)
            | Filter::RedirectTo(..)
            | Filter::RequestRateLimiter(_)
            | Filter::JwtAuth(_)
            | Filter::ApiKey(_) => {}
            // Around the upstream call.
            Filter::CircuitBreaker(_) | Filter::Retry(_) | Filter::CacheRequestBody => {}
        }
    }
}

/// Runs `filters`' request steps in order, awaiting those that wait (a team's own, and
/// RequestRateLimiter with buckets in Redis); the first answer stops them.
pub(crate) async fn run(filters: &[Filter], ex: &mut Exchange) -> Outcome {
    for filter in filters {
        match filter {
            Filter::Custom(custom) => custom.request(ex).await.map_err(Box::new)?,
            Filter::RequestRateLimiter(limit) if !limit.is_local() => {
                let decision = Box::pin(limit.check_shared(&ex.headers, ex.remote)).await;
                limit.headers(decision, &mut ex.response_headers);
                if !decision.allowed {
                    return Err(crate::error::too_many_requests());
                }
            }
            _ => filter.request(ex)?,
        }
    }
    Ok(())
}

/// The upstream's answer, its body rewritten by the route's shaping filters (a team's own
/// that [`shape`](GatewayFilter::shape)); as it is when none does.
pub(crate) async fn shape(
    filters: &[Filter],
    ex: &Exchange,
    response: http::Response<axum::body::Body>,
) -> http::Response<axum::body::Body> {
    use http_body_util::BodyExt;
    let shapers = || {
        filters.iter().filter_map(|f| match f {
            Filter::Custom(custom) if custom.shapes_body() => Some(custom),
            _ => None,
        })
    };
    if shapers().next().is_none() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_SHAPED_BODY);
    let mut body = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let reason = match error.is::<http_body_util::LengthLimitError>() {
                true => format!(
                    "the upstream's answer is over {MAX_SHAPED_BODY} bytes, too large to shape"
                ),
                false => format!("the upstream's answer could not be read: {error}"),
            };
            return crate::error::error_response(StatusCode::BAD_GATEWAY, &reason);
        }
    };
    for shaper in shapers() {
        body = shaper.shape(ex, &mut parts, body);
    }
    parts.headers.remove(http::header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    http::Response::from_parts(parts, axum::body::Body::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(path: &str, query: Option<&str>) -> Exchange {
        Exchange::new(
            path.into(),
            query,
            HeaderMap::new(),
            vec![("segment".into(), "7".into())],
            "127.0.0.1:1".parse().unwrap(),
        )
    }

    fn run(shortcut: &str, ex: &mut Exchange) -> Outcome {
        let breakers =
            msa_breaker::circuit_breaker::CircuitBreakerRegistry::new(Default::default()).unwrap();
        let none = msa_breaker::Section::default();
        let resilience = resilience::Resilience {
            breakers: &breakers,
            retry: &none,
            time_limiter: &none,
        };
        Filter::build(
            &Definition::shortcut(shortcut).unwrap(),
            resilience,
            &Filters::new(),
            "r",
        )
        .unwrap()
        .request(ex)
    }

    #[test]
    fn path_filters() {
        let mut ex = exchange("/api/orders/7", None);
        run("StripPrefix=1", &mut ex).unwrap();
        assert_eq!(ex.path, "/orders/7");
        run("PrefixPath=/v2", &mut ex).unwrap();
        assert_eq!(ex.path, "/v2/orders/7");
        run("RewritePath=/v2/(?<rest>.*), /v3/$\\{rest}", &mut ex).unwrap();
        assert_eq!(ex.path, "/v3/orders/7");
        run("SetPath=/items/{segment}", &mut ex).unwrap();
        assert_eq!(ex.path, "/items/7");
        let mut ex = exchange("/a", None);
        run("StripPrefix=3", &mut ex).unwrap();
        assert_eq!(ex.path, "/");
    }

    #[test]
    fn query_and_header_filters() {
        let mut ex = exchange("/", Some("a=1&b=2"));
        run("AddRequestParameter=c, {segment}", &mut ex).unwrap();
        run("RemoveRequestParameter=a", &mut ex).unwrap();
        assert_eq!(ex.query.as_deref(), Some("b=2&c=7"));
        run("AddRequestHeader=X-Id, id-{segment}", &mut ex).unwrap();
        run("MapRequestHeader=X-Id, X-Other", &mut ex).unwrap();
        run("AddRequestHeadersIfNotPresent=X-Id:nope,X-New:yes", &mut ex).unwrap();
        assert_eq!(ex.headers["x-id"], "id-7");
        assert_eq!(ex.headers["x-other"], "id-7");
        assert_eq!(ex.headers["x-new"], "yes");
        run("RemoveRequestHeader=X-Id", &mut ex).unwrap();
        assert!(!ex.headers.contains_key("x-id"));
    }

    #[test]
    fn short_circuits() {
        let mut ex = exchange("/", None);
        ex.headers.insert("content-length", "2000".parse().unwrap());
        let response = run("RequestSize=1KB", &mut ex).unwrap_err();
        assert_eq!(response.status(), 413);
        let response = run("RedirectTo=302, https://example.org/{segment}", &mut ex).unwrap_err();
        assert_eq!(
            (response.status().as_u16(), &response.headers()["location"]),
            (302, &HeaderValue::from_static("https://example.org/7"))
        );
        ex.headers.insert("x-big", "x".repeat(100).parse().unwrap());
        assert_eq!(
            run("RequestHeaderSize=64B", &mut ex).unwrap_err().status(),
            431
        );
    }

    #[test]
    fn sizes_and_statuses() {
        assert_eq!(size("5MB").unwrap(), 5 << 20);
        assert_eq!(size("100").unwrap(), 100);
        assert!(size("5 parsecs").is_err());
        assert_eq!(status("NOT_FOUND").unwrap(), 404);
        assert_eq!(status("418").unwrap(), 418);
    }

    proptest::proptest! {
        /// Whatever a capture holds once decoded, written into a template it starts no query
        /// or fragment and climbs no directory; a capture with no `/` (every `{name}`
        /// capture: the firewall refuses encoded slashes) stays one segment.
        #[test]
        fn a_hostile_capture_stays_inside_its_segment(value in "\\PC{0,24}") {
            let vars = vec![("id".to_owned(), value.clone())];
            match substitute_path("/catalog/items/{id}/info", &vars) {
                Ok(path) => {
                    let inner = path
                        .strip_prefix("/catalog/items/")
                        .and_then(|rest| rest.strip_suffix("/info"))
                        .expect("the template's own parts stay");
                    proptest::prop_assert!(!inner.contains(['?', '#']), "{path}");
                    proptest::prop_assert!(value.contains('/') || !inner.contains('/'), "{path}");
                    proptest::prop_assert!(inner.split('/').all(|s| s != "." && s != ".."), "{path}");
                }
                Err(_) => proptest::prop_assert!(value.split('/').any(|s| s == "." || s == "..")),
            }
        }
    }
}
