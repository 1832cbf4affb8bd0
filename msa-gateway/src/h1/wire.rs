//! HTTP/1.1 wire format shared by the gateway's client ([`client`](super::client)) and server
//! ([`server`](super::server)) sides: a message head kept as the bytes that arrived, with its
//! header fields as ranges of them, and the hop-by-hop rules a proxy applies to it.
//!
//! A head kept this way is passed on line by line, as received (names keep their case):
//! nothing is hashed, and nothing allocated per header. [`RawHead::header_map`] builds a
//! `HeaderMap` (its values sliced from the same bytes) for whatever needs one.

use std::ops::Range;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header fields the gateway itself reads or writes, recognised once when a head is
/// parsed: later looks at a head compare these tags, and skip a name that is absent
/// without scanning the fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Name {
    Other,
    Host,
    Connection,
    ContentLength,
    ContentType,
    TransferEncoding,
    Date,
    XForwardedFor,
    XForwardedProto,
    XForwardedHost,
    Forwarded,
    Traceparent,
    Tracestate,
    Baggage,
    KeepAlive,
    ProxyConnection,
    ProxyAuthenticate,
    ProxyAuthorization,
    Te,
    Trailer,
    Upgrade,
    Origin,
}

impl Name {
    /// Which one `name` is (ASCII case ignored): its length and first letter leave at
    /// most one candidate to compare.
    pub(crate) fn of(name: &[u8]) -> Name {
        let Some(first) = name.first() else {
            return Name::Other;
        };
        let (known, which): (&[u8], Name) = match (name.len(), first.to_ascii_lowercase()) {
            (2, b't') => (b"te", Name::Te),
            (4, b'h') => (b"host", Name::Host),
            (4, b'd') => (b"date", Name::Date),
            (6, b'o') => (b"origin", Name::Origin),
            (7, b't') => (b"trailer", Name::Trailer),
            (7, b'u') => (b"upgrade", Name::Upgrade),
            (7, b'b') => (b"baggage", Name::Baggage),
            (9, b'f') => (b"forwarded", Name::Forwarded),
            (10, b'c') => (b"connection", Name::Connection),
            (10, b'k') => (b"keep-alive", Name::KeepAlive),
            (10, b't') => (b"tracestate", Name::Tracestate),
            (11, b't') => (b"traceparent", Name::Traceparent),
            (12, b'c') => (b"content-type", Name::ContentType),
            (14, b'c') => (b"content-length", Name::ContentLength),
            (15, b'x') => (b"x-forwarded-for", Name::XForwardedFor),
            (16, b'x') => (b"x-forwarded-host", Name::XForwardedHost),
            (16, b'p') => (b"proxy-connection", Name::ProxyConnection),
            (17, b't') => (b"transfer-encoding", Name::TransferEncoding),
            (17, b'x') => (b"x-forwarded-proto", Name::XForwardedProto),
            (18, b'p') => (b"proxy-authenticate", Name::ProxyAuthenticate),
            (19, b'p') => (b"proxy-authorization", Name::ProxyAuthorization),
            _ => return Name::Other,
        };
        // The known names are lowercase letters and `-`: a byte matches when it is the
        // same with the lowercase bit set (no other byte valid in a name does).
        if name.iter().zip(known).all(|(b, k)| b | 0x20 == *k) {
            which
        } else {
            Name::Other
        }
    }

    /// Headers that describe one connection, not the message (RFC 9110 §7.6.1), and the
    /// `Proxy-Connection` older clients send: a proxy does not pass them on.
    pub(crate) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Name::Connection
                | Name::KeepAlive
                | Name::ProxyAuthenticate
                | Name::ProxyAuthorization
                | Name::ProxyConnection
                | Name::Te
                | Name::Trailer
                | Name::TransferEncoding
                | Name::Upgrade
        )
    }

    fn bit(self) -> u32 {
        1 << self as u8
    }
}

/// One header field: which it is, and the ranges of its name and value in the head's
/// bytes.
#[derive(Debug, Clone, Copy)]
struct Field {
    known: Name,
    name: (u32, u32),
    value: (u32, u32),
}

/// A message head as received: its bytes (and possibly a body after them) and where each
/// header field is in them.
#[derive(Debug, Clone)]
pub(crate) struct RawHead {
    bytes: Bytes,
    fields: Vec<Field>,
    /// The [`Name`]s present, one bit each.
    present: u32,
}

/// A header field the parser returned that does not lie in the bytes it parsed.
#[derive(Debug)]
pub(crate) struct Outside;

impl RawHead {
    /// The fields httparse found in `parsed` (which `bytes` is a copy of, from its start).
    pub(crate) fn new(
        bytes: Bytes,
        parsed: &[u8],
        headers: &[httparse::Header<'_>],
    ) -> Result<RawHead, Outside> {
        let base = parsed.as_ptr() as usize;
        let range = |part: &[u8]| -> Result<(u32, u32), Outside> {
            let start = (part.as_ptr() as usize).checked_sub(base).ok_or(Outside)?;
            let end = start + part.len();
            if end > bytes.len() {
                return Err(Outside);
            }
            Ok((
                u32::try_from(start).map_err(|_| Outside)?,
                u32::try_from(end).map_err(|_| Outside)?,
            ))
        };
        let mut fields = Vec::with_capacity(headers.len());
        let mut present = 0;
        for header in headers {
            let known = Name::of(header.name.as_bytes());
            present |= known.bit();
            fields.push(Field {
                known,
                name: range(header.name.as_bytes())?,
                value: range(header.value)?,
            });
        }
        Ok(RawHead {
            bytes,
            fields,
            present,
        })
    }

    /// The bytes the head was parsed from.
    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    fn part(&self, (start, end): (u32, u32)) -> &[u8] {
        &self.bytes[start as usize..end as usize]
    }

    /// The header fields in the order they arrived, as (which, name, value).
    pub(crate) fn fields(&self) -> impl Iterator<Item = (Name, &[u8], &[u8])> + '_ {
        self.fields
            .iter()
            .map(|field| (field.known, self.part(field.name), self.part(field.value)))
    }

    /// Whether a field named `name` is present.
    pub(crate) fn has(&self, name: Name) -> bool {
        self.present & name.bit() != 0
    }

    /// The values of the fields named `name`, in order.
    pub(crate) fn values(&self, name: Name) -> impl Iterator<Item = &[u8]> + '_ {
        let fields = if self.has(name) {
            &self.fields[..]
        } else {
            &[]
        };
        fields
            .iter()
            .filter(move |field| field.known == name)
            .map(|field| self.part(field.value))
    }

    /// The first value of the field named `name`.
    pub(crate) fn get(&self, name: Name) -> Option<&[u8]> {
        self.values(name).next()
    }

    /// Whether a field named `name` lists `token` (comma-separated, case ignored).
    pub(crate) fn has_token(&self, name: Name, token: &str) -> bool {
        self.values(name)
            .any(|value| tokens(value).any(|t| t.eq_ignore_ascii_case(token.as_bytes())))
    }

    /// The fields as a `HeaderMap`, with `spare` room for more; the values are slices of
    /// the head's bytes.
    pub(crate) fn header_map(&self, spare: usize) -> Result<HeaderMap, &'static str> {
        let mut map = HeaderMap::with_capacity(self.fields.len() + spare);
        for field in &self.fields {
            let name = HeaderName::from_bytes(self.part(field.name))
                .map_err(|_| "a header name is not a token")?;
            let value = HeaderValue::from_maybe_shared(
                self.bytes
                    .slice(field.value.0 as usize..field.value.1 as usize),
            )
            .map_err(|_| "a header value has control bytes")?;
            map.append(name, value);
        }
        Ok(map)
    }

    /// The bytes from `at` on (a body that arrived with the head).
    pub(crate) fn rest(&self, at: Range<usize>) -> Bytes {
        self.bytes.slice(at)
    }
}

/// The comma-separated tokens of a header value, trimmed; empty ones skipped.
pub(crate) fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Decides which fields of a received head are hop-by-hop: the standard ones
/// ([`Name::is_hop_by_hop`]) and those its `Connection` header names.
#[derive(Debug)]
pub(crate) struct HopByHop<'a> {
    head: &'a RawHead,
}

impl<'a> HopByHop<'a> {
    /// The rules for `head`.
    pub(crate) fn of(head: &'a RawHead) -> HopByHop<'a> {
        HopByHop { head }
    }

    /// Whether the field (`known`, `name`) stays behind.
    pub(crate) fn contains(&self, known: Name, name: &[u8]) -> bool {
        known.is_hop_by_hop()
            || (self.head.has(Name::Connection)
                && self
                    .head
                    .values(Name::Connection)
                    .any(|value| tokens(value).any(|t| t.eq_ignore_ascii_case(name))))
    }
}

/// Appends `name: value\r\n`.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.reserve(name.len() + value.len() + 4);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends `n` in decimal.
pub(crate) fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// A Content-Length value: ASCII digits only, no sign, no overflow.
pub(crate) fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// A response head as the upstream sent it.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: http::StatusCode,
    pub(crate) version: http::Version,
    /// Its bytes and header fields.
    pub(crate) raw: RawHead,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &'static [u8]) -> RawHead {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut slots);
        parsed.parse(text).unwrap();
        RawHead::new(Bytes::from_static(text), text, parsed.headers).unwrap()
    }

    #[test]
    fn fields_are_read_in_order_with_their_case() {
        let head = head(b"HTTP/1.1 200 OK\r\nX-One: 1\r\nSet-Cookie: a\r\nset-cookie: b\r\n\r\n");
        let fields: Vec<_> = head.fields().collect();
        assert_eq!(fields[0], (Name::Other, &b"X-One"[..], &b"1"[..]));
        assert!(!head.has(Name::Host));
        assert_eq!(head.get(Name::Host), None);
        let map = head.header_map(0).unwrap();
        assert_eq!(map.get_all("set-cookie").iter().count(), 2);
        assert_eq!(map["x-one"], "1");
    }

    #[test]
    fn hop_by_hop_fields_include_those_connection_names() {
        let head = head(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: 5\r\nX-Private: 1\r\nX-Public: 2\r\n\r\n",
        );
        let hop = HopByHop::of(&head);
        let kept: Vec<_> = head
            .fields()
            .filter(|(known, name, _)| !hop.contains(*known, name))
            .map(|(_, name, _)| name)
            .collect();
        assert_eq!(kept, [b"X-Public"]);
        assert!(head.has_token(Name::Connection, "KEEP-ALIVE"));
    }

    #[test]
    fn the_fields_the_gateway_handles_are_recognised_in_any_case() {
        let names = [
            ("te", Name::Te),
            ("Date", Name::Date),
            ("Trailer", Name::Trailer),
            ("Upgrade", Name::Upgrade),
            ("Baggage", Name::Baggage),
            ("Forwarded", Name::Forwarded),
            ("Connection", Name::Connection),
            ("Keep-Alive", Name::KeepAlive),
            ("Traceparent", Name::Traceparent),
            ("Content-Type", Name::ContentType),
            ("X-Forwarded-Host", Name::XForwardedHost),
            ("Transfer-Encoding", Name::TransferEncoding),
            ("X-Forwarded-Proto", Name::XForwardedProto),
            ("Proxy-Authenticate", Name::ProxyAuthenticate),
            ("Proxy-Authorization", Name::ProxyAuthorization),
            ("Host", Name::Host),
            ("CONTENT-LENGTH", Name::ContentLength),
            ("x-Forwarded-For", Name::XForwardedFor),
            ("Proxy-Connection", Name::ProxyConnection),
            ("tracestate", Name::Tracestate),
            ("TE", Name::Te),
            ("X-Hosts", Name::Other),
            ("hosts", Name::Other),
            ("content_length", Name::Other),
            ("x-forwarded-fOR", Name::XForwardedFor),
            ("x-forwarded-fox", Name::Other),
            ("", Name::Other),
        ];
        for (name, known) in names {
            assert_eq!(Name::of(name.as_bytes()), known, "{name}");
        }
        assert!(Name::Upgrade.is_hop_by_hop() && !Name::Host.is_hop_by_hop());
    }

    #[test]
    fn numbers_are_written_and_read_as_digits_only() {
        for n in [0, 7, 10, 65_536, u64::MAX / 10] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
            assert_eq!(decimal(&out), Some(n));
        }
        for bad in [&b""[..], b"+1", b"1 ", b"0x1", b"99999999999999999999"] {
            assert_eq!(decimal(bad), None, "{bad:?}");
        }
    }
}
