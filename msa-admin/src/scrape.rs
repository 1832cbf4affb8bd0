//! Reading an instance's `/actuator/prometheus`: the few series the admin charts, summed
//! into [`Scrape`] counters, and the rates between two scrapes ([`Window`]). Requests to
//! `/actuator/**` are not the service's traffic and are left out.
//!
//! The text comes from a peer and is untrusted: the caller bounds its size, lines past
//! [`MAX_LINE`] are skipped, and at most [`MAX_TARGETS`] call targets and
//! [`MAX_BREAKERS`] breakers are told apart. Nothing here panics on any input.

use std::collections::BTreeMap;

/// Lines longer than this are skipped.
pub const MAX_LINE: usize = 4096;
/// Call targets (`client_name`, gateway route URIs) told apart per instance; more are
/// summed under `other`.
pub const MAX_TARGETS: usize = 64;
/// Circuit breakers told apart per instance; more are ignored.
pub const MAX_BREAKERS: usize = 64;

/// Cumulative counts of one histogram summed over its series: requests, server errors
/// (status 5xx, or a call that got no status), and the cumulative bucket counts by upper
/// bound.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Requests counted.
    pub count: f64,
    /// Of those, server errors or failures without a status.
    pub errors: f64,
    /// `(le, cumulative count)`, by ascending `le` (`+Inf` last).
    pub buckets: Vec<(f64, f64)>,
}

impl Histogram {
    fn add_bucket(&mut self, le: f64, value: f64) {
        if let Some((_, total)) = self.buckets.iter_mut().find(|(bound, _)| *bound == le) {
            *total += value;
        } else if self.buckets.len() < 64 {
            self.buckets.push((le, value));
            self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
}

/// One scrape, summed: what the admin keeps of it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// Requests this instance served (`http_server_requests_seconds`).
    pub server: Histogram,
    /// Calls this instance made, by target service (`http_client_requests_seconds` by
    /// `client_name`; a gateway's `spring_cloud_gateway_requests_seconds` by the `lb://`
    /// service of its route).
    pub calls: BTreeMap<String, Histogram>,
    /// Each circuit breaker's current state (`resilience4j_circuitbreaker_state` = 1).
    pub breakers: BTreeMap<String, String>,
    /// `process_start_time_seconds`.
    pub started: Option<f64>,
    /// `process_resident_memory_bytes`.
    pub rss: Option<f64>,
}

/// Parses Prometheus text exposition, keeping what [`Scrape`] holds.
pub fn parse(text: &str) -> Scrape {
    let mut scrape = Scrape::default();
    for line in text.lines() {
        if line.len() > MAX_LINE || line.starts_with('#') {
            continue;
        }
        let Some((name, labels, value)) = split(line) else {
            continue;
        };
        match name {
            // The service's own traffic: not its management endpoints (which the admin and
            // Prometheus poll).
            "http_server_requests_seconds_count" if !management(&labels) => {
                count(&mut scrape.server, &labels, value, "status");
            }
            "http_server_requests_seconds_bucket" if !management(&labels) => {
                if let Some(le) = le(&labels) {
                    scrape.server.add_bucket(le, value);
                }
            }
            "http_client_requests_seconds_count" | "http_client_requests_seconds_bucket" => {
                let target = label(&labels, "client_name").unwrap_or("unknown");
                call(&mut scrape, target, name, &labels, value, "status");
            }
            "spring_cloud_gateway_requests_seconds_count"
            | "spring_cloud_gateway_requests_seconds_bucket" => {
                let uri = label(&labels, "routeUri").unwrap_or("");
                let target = uri
                    .strip_prefix("lb://")
                    .map(|rest| rest.split(['/', ':']).next().unwrap_or(rest))
                    .unwrap_or(uri);
                let name = name.replace("spring_cloud_gateway_requests", "http_client_requests");
                call(&mut scrape, target, &name, &labels, value, "httpStatusCode");
            }
            "resilience4j_circuitbreaker_state" if value == 1.0 => {
                if let (Some(breaker), Some(state)) =
                    (label(&labels, "name"), label(&labels, "state"))
                    && (scrape.breakers.len() < MAX_BREAKERS
                        || scrape.breakers.contains_key(breaker))
                {
                    scrape
                        .breakers
                        .insert(breaker.to_owned(), state.to_ascii_uppercase());
                }
            }
            "process_start_time_seconds" => scrape.started = Some(value),
            "process_resident_memory_bytes" => scrape.rss = Some(value),
            _ => {}
        }
    }
    scrape
}

fn call(
    scrape: &mut Scrape,
    target: &str,
    name: &str,
    labels: &[(&str, String)],
    value: f64,
    status: &str,
) {
    let target = if target.is_empty() { "unknown" } else { target };
    let key = if scrape.calls.len() < MAX_TARGETS || scrape.calls.contains_key(target) {
        target
    } else {
        "other"
    };
    let histogram = scrape.calls.entry(key.to_owned()).or_default();
    if name.ends_with("_count") {
        count(histogram, labels, value, status);
    } else if let Some(le) = le(labels) {
        histogram.add_bucket(le, value);
    }
}

fn count(histogram: &mut Histogram, labels: &[(&str, String)], value: f64, status: &str) {
    histogram.count += value;
    let failed = label(labels, status).is_some_and(|code| code.starts_with('5'))
        || label(labels, "outcome").is_some_and(|o| o == "UNKNOWN" || o == "SERVER_ERROR");
    if failed {
        histogram.errors += value;
    }
}

fn management(labels: &[(&str, String)]) -> bool {
    label(labels, "uri").is_some_and(|uri| uri.starts_with("/actuator"))
}

fn le(labels: &[(&str, String)]) -> Option<f64> {
    match label(labels, "le")? {
        "+Inf" => Some(f64::INFINITY),
        bound => bound.parse().ok(),
    }
}

fn label<'a>(labels: &'a [(&str, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.as_str())
}

/// A sample's labels, as written (values unescaped).
type Labels<'a> = Vec<(&'a str, String)>;

/// `name{a="1",b="2"} value [timestamp]` as its parts; `None` for anything else.
fn split(line: &str) -> Option<(&str, Labels<'_>, f64)> {
    let line = line.trim();
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        parse_labels(&line[name_end + 1..])?
    } else {
        (Vec::new(), &line[name_end..])
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    value.is_finite().then_some((name, labels, value))
}

/// The labels up to the closing brace, and what follows it.
fn parse_labels(mut text: &str) -> Option<(Labels<'_>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim();
        text = text[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = text.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        text = &text[end + 1..];
        if labels.len() < 32 {
            labels.push((key, value));
        }
    }
}

/// Rates between two scrapes of one histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Window {
    /// Requests per second.
    pub rate: f64,
    /// Percentage of them that failed (0–100); 0 without requests.
    pub error_pct: f64,
    /// The 99th percentile duration in milliseconds, interpolated in its bucket; `None`
    /// without requests.
    pub p99_ms: Option<f64>,
}

impl Window {
    /// The window from `before` to `after`, `seconds` apart. A counter that went back
    /// (the instance restarted) counts from zero.
    pub fn between(before: &Histogram, after: &Histogram, seconds: f64) -> Window {
        let reset = after.count < before.count;
        let empty = Histogram::default();
        let before = if reset { &empty } else { before };
        let count = after.count - before.count;
        if count <= 0.0 || seconds <= 0.0 {
            return Window::default();
        }
        let errors = (after.errors - before.errors).max(0.0);
        let buckets: Vec<(f64, f64)> = after
            .buckets
            .iter()
            .map(|&(le, total)| {
                let earlier = before
                    .buckets
                    .iter()
                    .find(|(bound, _)| *bound == le)
                    .map_or(0.0, |(_, n)| *n);
                (le, (total - earlier).max(0.0))
            })
            .collect();
        Window {
            rate: count / seconds,
            error_pct: (errors / count * 100.0).min(100.0),
            p99_ms: quantile(&buckets, 0.99).map(|seconds| seconds * 1000.0),
        }
    }
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside its bucket as
/// Prometheus's `histogram_quantile` does.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, cumulative) in buckets {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let inside = cumulative - lower.1;
            let fraction = if inside > 0.0 {
                (rank - lower.1) / inside
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, cumulative);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP http_server_requests_seconds Duration
# TYPE http_server_requests_seconds histogram
http_server_requests_seconds_bucket{application="orders",method="POST",uri="/orders",status="201",outcome="SUCCESS",exception="none",le="0.01"} 90
http_server_requests_seconds_bucket{application="orders",method="POST",uri="/orders",status="201",outcome="SUCCESS",exception="none",le="0.1"} 99
http_server_requests_seconds_bucket{application="orders",method="POST",uri="/orders",status="201",outcome="SUCCESS",exception="none",le="+Inf"} 100
http_server_requests_seconds_count{application="orders",method="POST",uri="/orders",status="201",outcome="SUCCESS",exception="none"} 100
http_server_requests_seconds_count{application="orders",method="POST",uri="/orders",status="503",outcome="SERVER_ERROR",exception="none"} 10
http_server_requests_seconds_count{application="orders",method="GET",uri="/actuator/health",status="200",outcome="SUCCESS",exception="none"} 1000
http_client_requests_seconds_count{client_name="payments",status="200",outcome="SUCCESS"} 7
http_client_requests_seconds_count{client_name="payments",status="CLIENT_ERROR",outcome="UNKNOWN"} 3
spring_cloud_gateway_requests_seconds_count{routeId="orders",routeUri="lb://orders",outcome="SUCCESSFUL",status="OK",httpStatusCode="201",httpMethod="POST"} 5
resilience4j_circuitbreaker_state{name="payments",state="closed"} 0
resilience4j_circuitbreaker_state{name="payments",state="open"} 1
process_start_time_seconds 1.7e9
weird{label="a \"quoted\" } brace"} 1
broken{label="unterminated} 1
"#;

    #[test]
    fn keeps_what_the_pages_chart() {
        let scrape = parse(TEXT);
        assert_eq!(scrape.server.count, 110.0);
        assert_eq!(scrape.server.errors, 10.0);
        assert_eq!(
            scrape.server.buckets,
            [(0.01, 90.0), (0.1, 99.0), (f64::INFINITY, 100.0)]
        );
        assert_eq!(scrape.calls["payments"].count, 10.0);
        assert_eq!(scrape.calls["payments"].errors, 3.0);
        assert_eq!(scrape.calls["orders"].count, 5.0);
        assert_eq!(scrape.breakers["payments"], "OPEN");
        assert_eq!(scrape.started, Some(1.7e9));
    }

    #[test]
    fn windows_give_rates_errors_and_p99() {
        let before = Histogram::default();
        let after = parse(TEXT).server;
        let window = Window::between(&before, &after, 10.0);
        assert_eq!(window.rate, 11.0);
        assert!((window.error_pct - 100.0 * 10.0 / 110.0).abs() < 1e-9);
        // 99 of 100 within 0.1 s: the 99th is at the top of the (0.01, 0.1] bucket.
        assert!((window.p99_ms.unwrap() - 100.0).abs() < 1e-6, "{window:?}");
        // A restart (counters back to fewer) counts from zero.
        assert_eq!(Window::between(&after, &before, 1.0), Window::default());
    }

    #[test]
    fn hostile_text_never_panics_and_targets_are_bounded() {
        let mut text = String::new();
        for n in 0..1000 {
            text.push_str(&format!(
                "http_client_requests_seconds_count{{client_name=\"host-{n}\"}} 1\n"
            ));
        }
        text.push_str(&"x".repeat(MAX_LINE + 1));
        text.push_str("\n{{{ \"\"\" =\n=1\nname{a=\"\\\n");
        let scrape = parse(&text);
        assert_eq!(scrape.calls.len(), MAX_TARGETS + 1);
        assert_eq!(scrape.calls["other"].count, (1000 - MAX_TARGETS) as f64);
    }
}
