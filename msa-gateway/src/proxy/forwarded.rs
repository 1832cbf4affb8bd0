//! What the upstream is told of the client and what is not passed on: X-Forwarded-*,
//! Forwarded, and the hop-by-hop headers.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::h1::wire::Name;

/// Removes the hop-by-hop headers (the one list: [`Name::is_hop_by_hop`], which the raw
/// path applies to header lines as they arrived) and those the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let hop = |name: &HeaderName| Name::of(name.as_str().as_bytes()).is_hop_by_hop();
    if !headers.keys().any(hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .chain(headers.keys().filter(|name| hop(name)).cloned())
        .collect();
    for name in &named {
        headers.remove(name);
    }
}

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// X-Forwarded-For/-Proto/-Host and Forwarded, appended to what earlier proxies said.
///
/// On every proxied request: one buffer per header, no formatting machinery.
pub(crate) fn forwarded(
    headers: &mut HeaderMap,
    remote: SocketAddr,
    host: Option<&str>,
    proto: Proto,
) {
    let ip = remote.ip().to_canonical();
    let mut ip_text = [0u8; 48];
    let ip_text = write_ip(ip, &mut ip_text);
    let host = host.filter(|h| HeaderValue::from_str(h).is_ok());

    let mut value = Vec::with_capacity(64);
    let earlier = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::as_bytes);
    forwarded_for(&mut value, earlier, ip_text);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto.as_str()));
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(X_FORWARDED_HOST, host);
    }

    let mut value = Vec::with_capacity(96);
    let earlier = headers
        .get_all(header::FORWARDED)
        .iter()
        .map(HeaderValue::as_bytes);
    forwarded_element(&mut value, earlier, (ip, ip_text), proto, host);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
        headers.insert(header::FORWARDED, value);
    }
}

/// The X-Forwarded-For value: what earlier proxies said (every such field, in order),
/// then the client's address.
pub(crate) fn forwarded_for<'a>(
    value: &mut Vec<u8>,
    earlier: impl Iterator<Item = &'a [u8]>,
    ip: &[u8],
) {
    for earlier in earlier {
        value.extend_from_slice(earlier);
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(ip);
}

/// The scheme the client spoke to the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proto {
    Http,
    /// Over TLS the gateway terminated.
    Https,
}

impl Proto {
    /// `http` or `https`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
        }
    }

    /// `Https` when `tls`.
    pub(crate) fn of(tls: bool) -> Proto {
        match tls {
            true => Proto::Https,
            false => Proto::Http,
        }
    }
}

/// The Forwarded value: what earlier proxies said, then `for=...;proto=...;host="..."`.
pub(crate) fn forwarded_element<'a>(
    value: &mut Vec<u8>,
    earlier: impl Iterator<Item = &'a [u8]>,
    (ip, ip_text): (std::net::IpAddr, &[u8]),
    proto: Proto,
    host: Option<&str>,
) {
    for earlier in earlier {
        value.extend_from_slice(earlier);
        value.extend_from_slice(b", ");
    }
    value.extend_from_slice(b"for=");
    if ip.is_ipv6() {
        value.extend_from_slice(b"\"[");
        value.extend_from_slice(ip_text);
        value.extend_from_slice(b"]\"");
    } else {
        value.extend_from_slice(ip_text);
    }
    value.extend_from_slice(b";proto=");
    value.extend_from_slice(proto.as_str().as_bytes());
    if let Some(host) = host {
        // A quoted-string (RFC 7239, RFC 9110 §5.6.4): a client's `"` or `\` cannot end
        // it and add parameters of its own.
        value.extend_from_slice(b";host=\"");
        if !host.bytes().any(|b| b == b'"' || b == b'\\') {
            value.extend_from_slice(host.as_bytes());
        } else {
            for &b in host.as_bytes() {
                if b == b'"' || b == b'\\' {
                    value.push(b'\\');
                }
                value.push(b);
            }
        }
        value.push(b'"');
    }
}

/// `ip` as text in `buffer`: IPv4 by hand (the common case, on every request), IPv6
/// through `Display`.
pub(crate) fn write_ip(ip: std::net::IpAddr, buffer: &mut [u8; 48]) -> &[u8] {
    use std::io::Write;
    let mut len = 0;
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buffer[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    buffer[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    buffer[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                buffer[len] = b'0' + octet % 10;
                len += 1;
            }
        }
        std::net::IpAddr::V6(v6) => {
            let mut cursor = std::io::Cursor::new(&mut buffer[..]);
            let _ = write!(cursor, "{v6}");
            len = cursor.position() as usize;
        }
    }
    &buffer[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go_including_those_connection_names() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    #[test]
    fn forwarded_headers_append() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        forwarded(
            &mut headers,
            "10.0.0.1:5000".parse().unwrap(),
            Some("shop.example.org"),
            Proto::Http,
        );
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 10.0.0.1");
        assert_eq!(headers["x-forwarded-host"], "shop.example.org");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(
            headers["forwarded"],
            "for=10.0.0.1;proto=http;host=\"shop.example.org\""
        );
        // Over TLS the gateway terminated, the client spoke https.
        let mut headers = HeaderMap::new();
        forwarded(
            &mut headers,
            "10.0.0.1:5000".parse().unwrap(),
            None,
            Proto::Https,
        );
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert_eq!(headers["forwarded"], "for=10.0.0.1;proto=https");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let mut buffer = [0u8; 48];
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.100.9.199",
            "192.0.2.1",
            "::1",
            "2001:db8::8:800:200c:417a",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            assert_eq!(write_ip(parsed, &mut buffer), parsed.to_string().as_bytes());
        }
        let mut headers = HeaderMap::new();
        forwarded(
            &mut headers,
            "[2001:db8::1]:443".parse().unwrap(),
            None,
            Proto::Http,
        );
        assert_eq!(headers["x-forwarded-for"], "2001:db8::1");
        assert_eq!(headers["forwarded"], "for=\"[2001:db8::1]\";proto=http");
        let mut headers = HeaderMap::new();
        forwarded(
            &mut headers,
            "[::ffff:10.1.2.3]:443".parse().unwrap(),
            None,
            Proto::Http,
        );
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
    }
}
