//! Route filters: Spring Cloud Gateway's set. Each changes the request on its way to the
//! upstream, the response on its way back, or answers in the upstream's place.

pub(crate) mod auth;
pub(crate) mod rate_limit;
pub(crate) mod resilience;

use http::header::{HeaderName, HeaderValue, LOCATION};
use http::{HeaderMap, StatusCode};
use regex::Regex;

use crate::config::Definition;

/// The request as filters see and change it.
#[derive(Debug)]
pub(crate) struct Exchange {
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
        }
    }
}

/// What a filter decided: go on, or answer now.
pub(crate) type Outcome = Result<(), Box<http::Response<axum::body::Body>>>;

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
            other => return Err(format!("unknown filter {other:?}")),
        })
    }

    /// On the way in.
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
                    return Err(too_many_requests());
                }
            }
            Filter::RedirectTo(status, url) => {
                let mut response = http::Response::new(axum::body::Body::empty());
                *response.status_mut() = *status;
                if let Some(location) = expand(url, &ex.vars) {
                    response.headers_mut().insert(LOCATION, location);
                }
                return Err(Box::new(response));
            }
            _ => {}
        }
        Ok(())
    }

    /// On the way out.
    pub(crate) fn response(
        &self,
        vars: &[(String, String)],
        host: Option<&str>,
        response: &mut http::response::Parts,
    ) {
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
            _ => {}
        }
    }
}

/// RequestRateLimiter's refusal.
pub(crate) fn too_many_requests() -> Box<http::Response<axum::body::Body>> {
    let mut response = http::Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    Box::new(response)
}

/// SecureHeaders' defaults, as Spring Cloud Gateway sends them.
const SECURE_HEADERS: &[(&str, &str)] = &[
    ("x-xss-protection", "1 ; mode=block"),
    ("strict-transport-security", "max-age=631138519"),
    ("x-frame-options", "DENY"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    (
        "content-security-policy",
        "default-src 'self' https:; font-src 'self' https: data:; img-src 'self' https: data:; object-src 'none'; script-src https:; style-src 'self' https: 'unsafe-inline'",
    ),
    ("x-download-options", "noopen"),
    ("x-permitted-cross-domain-policies", "none"),
];

/// The first header (name or value) longer than `max` bytes, or the total when all
/// headers together are.
pub(crate) fn oversized_header(headers: &HeaderMap, max: usize) -> Option<(String, usize)> {
    oversized_field(
        headers
            .iter()
            .map(|(name, value)| (name.as_str().as_bytes(), value.as_bytes())),
        max,
    )
}

/// The first header field (name and value) longer than `max` bytes, or all of them
/// together if they are, and its size.
pub(crate) fn oversized_field<'a>(
    fields: impl Iterator<Item = (&'a [u8], &'a [u8])>,
    max: usize,
) -> Option<(String, usize)> {
    let mut total = 0;
    for (name, value) in fields {
        let size = name.len() + value.len();
        if size > max {
            return Some((String::from_utf8_lossy(name).to_ascii_lowercase(), size));
        }
        total += size;
    }
    (total > max).then(|| ("(all headers)".to_owned(), total))
}

/// `{name}` in `template` replaced by captured variables.
fn substitute(template: &str, vars: &[(String, String)]) -> String {
    if !template.contains('{') {
        return template.to_owned();
    }
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// What a path keeps as it is: RFC 3986's unreserved characters and sub-delimiters, `:`,
/// `@` and `/`. Everything else in a capture is percent-encoded again.
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@')
    .remove(b'/');

/// `{name}` in a path template replaced by captured variables, encoded again: a capture
/// decoded from `%3F` or `%25` stays inside its segment rather than starting a query or
/// being decoded twice upstream. A capture with a dot segment (`%2e%2e` in `{name}.txt`)
/// is refused, as it would climb out of the template; encoded slashes and backslashes
/// never reach a capture (the gateway refuses them, see `proxy::firewall`).
fn substitute_path(template: &str, vars: &[(String, String)]) -> Result<String, String> {
    if !template.contains('{') {
        return Ok(template.to_owned());
    }
    let mut out = template.to_owned();
    for (name, value) in vars {
        if value
            .split('/')
            .any(|segment| segment == "." || segment == "..")
        {
            return Err(format!("the path variable {name} is a dot segment"));
        }
        let value = percent_encoding::utf8_percent_encode(value, PATH).to_string();
        out = out.replace(&format!("{{{name}}}"), &value);
    }
    Ok(out)
}

fn expand(template: &str, vars: &[(String, String)]) -> Option<HeaderValue> {
    HeaderValue::from_str(&substitute(template, vars)).ok()
}

/// Java's `$\{name}` (escaped for YAML) and `${name}` replacement syntax, as the regex
/// crate writes it.
fn java_replacement(replacement: &str) -> String {
    replacement.replace("$\\{", "${")
}

fn number(text: &str, name: &str) -> Result<usize, String> {
    text.parse()
        .map_err(|_| format!("`{name}` {text:?} is not a whole number"))
}

pub(crate) fn status(text: &str) -> Result<StatusCode, String> {
    let code = match text {
        "NOT_FOUND" => 404,
        "UNAUTHORIZED" => 401,
        "FORBIDDEN" => 403,
        "MOVED_PERMANENTLY" => 301,
        "FOUND" => 302,
        "SEE_OTHER" => 303,
        "TEMPORARY_REDIRECT" => 307,
        "PERMANENT_REDIRECT" => 308,
        "BAD_REQUEST" => 400,
        "SERVICE_UNAVAILABLE" => 503,
        "INTERNAL_SERVER_ERROR" => 500,
        "OK" => 200,
        other => other
            .parse()
            .map_err(|_| format!("status {other:?} is not a number or a known name"))?,
    };
    StatusCode::from_u16(code).map_err(|_| format!("{code} is not an HTTP status"))
}

/// `5MB`, `512KB`, `100` (bytes), as Spring's DataSize reads them.
fn size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("size {text:?} is not like 5MB or 1024"))?;
    let factor = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        other => return Err(format!("size unit {other:?} is not B, KB, MB or GB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
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
        Filter::build(&Definition::shortcut(shortcut).unwrap(), resilience, "r")
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
