//! Paths as the gateway reads them: refused shapes, dot segments resolved, the host, and
//! the upstream URI built from its parts.

use axum::body::Body;
use http::header;
use http::{Response, StatusCode, Uri};

use crate::error::error_response;

/// 400 for a path that holds an encoded `/`, `\` or NUL, or a raw `\`, as Spring
/// Security's StrictHttpFirewall refuses them: decoded into a capture and written into
/// another path, they could leave the route's template (`..%2F..%2Fadmin`), and upstreams
/// differ on what they mean. (Encoded dots are dot segments where a whole segment is one,
/// resolved by `normalize`; a capture that decodes to one is refused where it would be
/// written into a path, see `filter::substitute_path`.)
pub(crate) fn firewall(path: &str) -> Option<Response<Body>> {
    let bytes = path.as_bytes();
    // On every request, and paths are short: a plain loop (memchr's set-up costs more than
    // it saves here, ~300 instructions a request under callgrind).
    let first = bytes.iter().position(|&b| b == b'%' || b == b'\\')?;
    let reason = bytes
        .iter()
        .enumerate()
        .skip(first)
        .find_map(|(at, &b)| match b {
            b'\\' => Some("a backslash"),
            b'%' => match bytes.get(at + 1..at + 3) {
                Some([b'2', b'f' | b'F']) => Some("an encoded slash (%2F)"),
                Some([b'5', b'c' | b'C']) => Some("an encoded backslash (%5C)"),
                Some([b'0', b'0']) => Some("an encoded NUL (%00)"),
                _ => None,
            },
            _ => None,
        })?;
    let message = format!("the path holds {reason}, which the gateway refuses");
    Some(error_response(StatusCode::BAD_REQUEST, &message))
}

/// The path with `.` and `..` segments resolved (also written `%2e`), or `None` if it
/// climbs above the root.
pub(crate) fn normalize(path: &str) -> Option<String> {
    // One pass over the path for what would need work: "/.", "//", "%2e" or "%2E".
    let bytes = path.as_bytes();
    let needs = bytes.iter().enumerate().any(|(i, &b)| match b {
        b'/' => matches!(bytes.get(i + 1), Some(b'.' | b'/')),
        b'%' => bytes.get(i + 1) == Some(&b'2') && matches!(bytes.get(i + 2), Some(b'e' | b'E')),
        _ => false,
    });
    if !needs {
        return Some(if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        });
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, segment) in segments.iter().enumerate() {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        match decoded.as_str() {
            "." => trailing = i == last,
            ".." => {
                out.pop()?;
                trailing = i == last;
            }
            "" if i != last => {}
            _ => {
                out.push(segment);
                trailing = false;
            }
        }
    }
    let mut normalized = format!("/{}", out.join("/"));
    if (trailing || path.ends_with('/')) && !normalized.ends_with('/') {
        normalized.push('/');
    }
    Some(normalized)
}

pub(crate) fn host(parts: &http::request::Parts) -> Option<String> {
    parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
}

/// The host name without its port, lowercased (borrowed when it already is).
pub(crate) fn strip_port(host: &str) -> std::borrow::Cow<'_, str> {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => host
            .bytes()
            .position(|b| b == b':')
            .map_or(host, |colon| &host[..colon]),
    };
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        name.to_ascii_lowercase().into()
    } else {
        name.into()
    }
}

/// `scheme://authority/path?query`, built from its parts (no text to parse again).
pub(crate) fn upstream_uri(
    scheme: Option<http::uri::Scheme>,
    authority: Option<http::uri::Authority>,
    path: &str,
    query: Option<&str>,
) -> Result<Uri, ()> {
    let mut target = Vec::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    target.extend_from_slice(path.as_bytes());
    if let Some(query) = query {
        target.push(b'?');
        target.extend_from_slice(query.as_bytes());
    }
    let mut parts = http::uri::Parts::default();
    parts.scheme = scheme;
    parts.authority = authority;
    parts.path_and_query = Some(
        http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::from(target)).map_err(|_| ())?,
    );
    Uri::from_parts(parts).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_resolved_before_matching() {
        assert_eq!(normalize("/api/orders").as_deref(), Some("/api/orders"));
        assert_eq!(normalize("/api/./orders").as_deref(), Some("/api/orders"));
        assert_eq!(
            normalize("/api/x/../orders").as_deref(),
            Some("/api/orders")
        );
        assert_eq!(normalize("/api/%2e%2E/admin").as_deref(), Some("/admin"));
        assert_eq!(normalize("/api//orders/").as_deref(), Some("/api/orders/"));
        assert_eq!(normalize("/a/.."), Some("/".to_owned()));
        assert_eq!(normalize("/../etc/passwd"), None);
        assert_eq!(normalize("/%2e%2e/etc"), None);
    }
}
