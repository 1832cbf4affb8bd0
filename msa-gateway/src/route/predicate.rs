//! Route predicates: Spring Cloud Gateway's set, each a test on the request.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, Method};
use ipnet::IpNet;
use regex::Regex;

use super::pattern::Pattern;
use crate::config::Definition;

/// What predicates look at.
#[derive(Debug)]
pub(crate) struct RequestInfo<'a> {
    pub(crate) method: &'a Method,
    /// Normalized (dot segments resolved).
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    pub(crate) headers: &'a HeaderMap,
    /// Lower-cased, without the port.
    pub(crate) host: Option<&'a str>,
    pub(crate) remote: SocketAddr,
    /// One draw per weight group, made on first use.
    pub(crate) draws: Vec<(u32, u32)>,
}

impl RequestInfo<'_> {
    fn draw(&mut self, group: u32, total: u32) -> u32 {
        if let Some((_, draw)) = self.draws.iter().find(|(g, _)| *g == group) {
            return *draw;
        }
        let draw = fastrand::u32(0..total.max(1));
        self.draws.push((group, draw));
        draw
    }
}

#[derive(Debug)]
pub(crate) enum Predicate {
    After(jiff::Timestamp),
    Before(jiff::Timestamp),
    Between(jiff::Timestamp, jiff::Timestamp),
    Cookie(String, Regex),
    Header(HeaderName, Option<Regex>),
    Host(Vec<Pattern>),
    Method(Vec<Method>),
    Path {
        patterns: Vec<Pattern>,
        match_trailing_slash: bool,
    },
    Query(String, Option<Regex>),
    RemoteAddr(Vec<IpNet>),
    XForwardedRemoteAddr(Vec<IpNet>),
    /// A share of a traffic split: matches when the group's draw is in `[low, high)`.
    Weight {
        group: String,
        weight: u32,
        group_id: u32,
        low: u32,
        high: u32,
        total: u32,
    },
}

impl Predicate {
    pub(crate) fn build(definition: &Definition) -> Result<Self, String> {
        let args = &definition.args;
        Ok(match definition.name.as_str() {
            "After" => Predicate::After(time(&args.required("datetime", 0)?)?),
            "Before" => Predicate::Before(time(&args.required("datetime", 0)?)?),
            "Between" => {
                let from = time(&args.required("datetime1", 0)?)?;
                let to = time(&args.required("datetime2", 1)?)?;
                if to <= from {
                    return Err("datetime2 must be after datetime1".into());
                }
                Predicate::Between(from, to)
            }
            "Cookie" => Predicate::Cookie(
                args.required("name", 0)?,
                whole(&args.required("regexp", 1)?)?,
            ),
            "Header" => Predicate::Header(
                header_name(&args.required("header", 0)?)?,
                args.text("regexp", 1)?.map(|r| whole(&r)).transpose()?,
            ),
            "Host" => Predicate::Host(
                nonempty(args.list("patterns", 0)?, "patterns")?
                    .iter()
                    .map(|p| Pattern::host(p))
                    .collect::<Result<_, _>>()?,
            ),
            "Method" => Predicate::Method(
                nonempty(args.list("methods", 0)?, "methods")?
                    .iter()
                    .map(|m| {
                        Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                            .map_err(|_| format!("{m:?} is not an HTTP method"))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "Path" => {
                let mut patterns = args.list("patterns", 0)?;
                // The shortcut form may end with the matchTrailingSlash flag.
                let mut match_trailing_slash = true;
                if let Some(flag) = args.text("matchTrailingSlash", usize::MAX)? {
                    match_trailing_slash = flag
                        .parse()
                        .map_err(|_| "matchTrailingSlash must be true or false")?;
                } else if let Some(last) = patterns.last()
                    && (last == "true" || last == "false")
                {
                    match_trailing_slash = last == "true";
                    patterns.pop();
                }
                Predicate::Path {
                    patterns: nonempty(patterns, "patterns")?
                        .iter()
                        .map(|p| Pattern::path(p))
                        .collect::<Result<_, _>>()?,
                    match_trailing_slash,
                }
            }
            "Query" => Predicate::Query(
                args.required("param", 0)?,
                args.text("regexp", 1)?.map(|r| whole(&r)).transpose()?,
            ),
            "RemoteAddr" => Predicate::RemoteAddr(cidrs(&args.list("sources", 0)?)?),
            "XForwardedRemoteAddr" => {
                Predicate::XForwardedRemoteAddr(cidrs(&args.list("sources", 0)?)?)
            }
            "Weight" => {
                let group = args.required("group", 0)?;
                let weight = args.required("weight", 1)?;
                let weight = weight
                    .parse()
                    .map_err(|_| format!("weight {weight:?} is not a whole number"))?;
                Predicate::Weight {
                    group,
                    weight,
                    group_id: 0,
                    low: 0,
                    high: 0,
                    total: 0,
                }
            }
            other => return Err(format!("unknown predicate {other:?}")),
        })
    }

    /// Whether the request matches; path and host variables are pushed to `vars`.
    pub(crate) fn test(&self, req: &mut RequestInfo<'_>, vars: &mut Vec<(String, String)>) -> bool {
        match self {
            Predicate::After(t) => jiff::Timestamp::now() > *t,
            Predicate::Before(t) => jiff::Timestamp::now() < *t,
            Predicate::Between(from, to) => {
                let now = jiff::Timestamp::now();
                *from < now && now < *to
            }
            Predicate::Cookie(name, regex) => {
                cookies(req.headers).any(|(k, v)| k == name && regex.is_match(v))
            }
            Predicate::Header(name, regex) => req.headers.get_all(name).iter().any(|v| {
                regex
                    .as_ref()
                    .is_none_or(|r| v.to_str().is_ok_and(|v| r.is_match(v)))
            }),
            Predicate::Host(patterns) => req
                .host
                .is_some_and(|host| patterns.iter().any(|p| p.matches(host, vars))),
            Predicate::Method(methods) => methods.contains(req.method),
            Predicate::Path {
                patterns,
                match_trailing_slash,
            } => patterns.iter().any(|p| {
                p.matches(req.path, vars)
                    || (*match_trailing_slash
                        && req.path.len() > 1
                        && req.path.ends_with('/')
                        && p.matches(&req.path[..req.path.len() - 1], vars))
            }),
            Predicate::Query(param, regex) => query_pairs(req.query)
                .any(|(k, v)| k == param.as_str() && regex.as_ref().is_none_or(|r| r.is_match(&v))),
            Predicate::RemoteAddr(nets) => contains(nets, req.remote.ip()),
            Predicate::XForwardedRemoteAddr(nets) => {
                // The address the nearest proxy saw: the last X-Forwarded-For entry.
                let forwarded = req
                    .headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(','))
                    .filter_map(|a| a.trim().parse::<IpAddr>().ok())
                    .next_back();
                forwarded.is_some_and(|ip| contains(nets, ip))
            }
            Predicate::Weight {
                group_id,
                low,
                high,
                total,
                ..
            } => {
                let draw = req.draw(*group_id, *total);
                *low <= draw && draw < *high
            }
        }
    }

    /// Whether it looks at the request's headers (other than Host, which is read anyway).
    pub(crate) fn reads_headers(&self) -> bool {
        matches!(
            self,
            Predicate::Cookie(..) | Predicate::Header(..) | Predicate::XForwardedRemoteAddr(_)
        )
    }

    /// The path patterns, if this is a Path predicate (for the route index).
    pub(crate) fn path_patterns(&self) -> Option<&[Pattern]> {
        match self {
            Predicate::Path { patterns, .. } => Some(patterns),
            _ => None,
        }
    }
}

fn nonempty(list: Vec<String>, name: &str) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err(format!("`{name}` needs at least one value"));
    }
    Ok(list)
}

fn time(text: &str) -> Result<jiff::Timestamp, String> {
    if let Ok(millis) = text.parse::<i64>() {
        return jiff::Timestamp::from_millisecond(millis).map_err(|e| e.to_string());
    }
    text.parse::<jiff::Timestamp>()
        .or_else(|_| text.parse::<jiff::Zoned>().map(|z| z.timestamp()))
        .map_err(|e| {
            format!("{text:?} is not a date-time like 2027-01-20T17:42:47.789-07:00[America/Denver]: {e}")
        })
}

/// A regex that must match the whole value, as Java's `matches` does.
fn whole(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| format!("bad regexp {pattern:?}: {e}"))
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))
}

fn cidrs(sources: &[String]) -> Result<Vec<IpNet>, String> {
    if sources.is_empty() {
        return Err("`sources` needs at least one address".into());
    }
    sources
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an address or CIDR block"))
        })
        .collect()
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    nets.iter().any(|net| net.contains(&ip))
}

/// `name=value` pairs of every Cookie header.
pub(crate) fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// Decoded query pairs.
pub(crate) fn query_pairs(
    query: Option<&str>,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(
        method: &'a Method,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestInfo<'a> {
        RequestInfo {
            method,
            path,
            query,
            headers,
            host: Some("shop.example.org"),
            remote: "10.1.2.3:5000".parse().unwrap(),
            draws: Vec::new(),
        }
    }

    fn build(shortcut: &str) -> Predicate {
        Predicate::build(&Definition::shortcut(shortcut).unwrap()).unwrap()
    }

    #[test]
    fn each_predicate_on_a_request() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", "123".parse().unwrap());
        headers.insert("cookie", "chocolate=ch.p; other=1".parse().unwrap());
        headers.insert("x-forwarded-for", "192.168.1.7, 10.0.0.9".parse().unwrap());
        let get = Method::GET;
        let mut req = info(&get, "/red/7/", Some("green=greet&x=%20y"), &headers);
        let mut vars = Vec::new();
        let mut t = |p: &str| build(p).test(&mut req, &mut vars);
        assert!(t("After=2017-01-20T17:42:47.789-07:00[America/Denver]"));
        assert!(!t("Before=2017-01-20T17:42:47.789-07:00[America/Denver]"));
        assert!(t(
            "Between=2017-01-20T17:42:47.789-07:00[America/Denver], 2999-01-21T17:42:47.789-07:00[America/Denver]"
        ));
        assert!(t("Cookie=chocolate, ch.p"));
        assert!(!t("Cookie=chocolate, ch"));
        assert!(t("Header=X-Request-Id, \\d+"));
        assert!(!t("Header=X-Request-Id, [a-z]+"));
        assert!(t("Header=X-Request-Id"));
        assert!(t("Host=**.example.org"));
        assert!(!t("Host=**.example.com"));
        assert!(t("Method=POST,GET"));
        assert!(!t("Method=POST"));
        assert!(t("Path=/red/{segment},/blue/{segment}"));
        assert!(!t("Path=/red/{segment},false"));
        assert!(t("Query=green"));
        assert!(t("Query=green, gree."));
        assert!(t("Query=x, \\sy"));
        assert!(!t("Query=red"));
        assert!(t("RemoteAddr=10.1.0.0/16"));
        assert!(!t("RemoteAddr=192.168.0.0/16"));
        assert!(t("XForwardedRemoteAddr=10.0.0.0/24"));
        assert!(!t("XForwardedRemoteAddr=192.168.1.0/24"));
    }

    #[test]
    fn bad_arguments_are_explained() {
        let err = |s: &str| Predicate::build(&Definition::shortcut(s).unwrap()).unwrap_err();
        assert!(err("Path=red").contains("must start with /"));
        assert!(err("After=yesterday").contains("is not a date-time"));
        assert!(err("Header=X, (").contains("bad regexp"));
        assert!(err("RemoteAddr=10.0.0.0/33").contains("not an address"));
        assert!(err("Method=GE T").contains("not an HTTP method"));
        assert!(err("Nope=1").contains("unknown predicate"));
        assert!(err("Weight=g, x").contains("not a whole number"));
    }
}
