//! W3C Trace Context and Baggage propagation over HTTP headers.
//!
//! [`init`](super::Telemetry::init) installs a composite propagator for `traceparent`,
//! `tracestate` and `baggage` as OpenTelemetry's global propagator, and [`extract`] reads
//! these headers with a strict W3C parser that allocates nothing for a request without
//! `tracestate` or `baggage`. When telemetry was not set up by msa, or a propagator was
//! chosen with [`Telemetry::propagator`](super::Telemetry::propagator), [`extract`] and
//! [`inject`] go through OpenTelemetry's global propagator instead, so B3 or Jaeger headers
//! work in msa's layers too.

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapCompositePropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use std::sync::atomic::{AtomicBool, Ordering};

/// The W3C propagators msa installs: Trace Context (`traceparent`, `tracestate`) and Baggage.
pub fn w3c_propagator() -> TextMapCompositePropagator {
    TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ])
}

/// Reads a remote context (trace parent, trace state, baggage) from request headers.
///
/// Headers that are missing or malformed yield an empty context, so a new trace starts.
///
/// # Examples
///
/// ```
/// use opentelemetry::trace::TraceContextExt;
///
/// opentelemetry::global::set_text_map_propagator(msa_core::telemetry::propagation::w3c_propagator());
/// let mut headers = http::HeaderMap::new();
/// headers.insert(
///     "traceparent",
///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
/// );
/// let cx = msa_core::telemetry::propagation::extract(&headers);
/// assert_eq!(
///     cx.span().span_context().trace_id().to_string(),
///     "4bf92f3577b34da6a3ce929d0e0e4736"
/// );
/// ```
pub fn extract(headers: &HeaderMap) -> Context {
    if !W3C_ONLY.load(Ordering::Acquire) {
        return opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&HeaderExtractor(headers))
        });
    }
    // The headers are the whole remote context: start from an empty one, not the caller's.
    let mut cx = Context::new();
    if let Some(sc) = headers
        .get(TRACEPARENT)
        .and_then(|tp| parse_traceparent(tp.as_bytes()))
    {
        let trace_state = headers
            .get(TRACESTATE)
            .and_then(|ts| ts.to_str().ok())
            .and_then(|ts| ts.parse().ok())
            .unwrap_or_default();
        cx = cx.with_remote_span_context(SpanContext::new(sc.0, sc.1, sc.2, true, trace_state));
    }
    if headers.contains_key(BAGGAGE) {
        cx = BaggagePropagator::new().extract_with_context(&cx, &HeaderExtractor(headers));
    }
    cx
}

/// Whether [`extract`] may read the W3C headers directly: msa installed the W3C
/// propagator and nobody chose another through msa.
static W3C_ONLY: AtomicBool = AtomicBool::new(false);

pub(super) fn set_w3c_only(on: bool) {
    W3C_ONLY.store(on, Ordering::Release);
}

/// Whether a request's trace context is all the installed telemetry needs of it: msa set
/// telemetry up with W3C propagation and without a trace exporter, so a span would be
/// recorded for no one.
static CONTEXT_ONLY: AtomicBool = AtomicBool::new(false);

pub(super) fn set_context_only(on: bool) {
    CONTEXT_ONLY.store(on, Ordering::Release);
}

/// Whether a request's trace context is all that telemetry needs of it: msa installed
/// telemetry ([`Telemetry::init`](super::Telemetry::init)) with W3C propagation, the
/// default sampler and no trace exporter, so a span for the request would be recorded for
/// no one.
///
/// A proxy may then pass a [`TraceParent`] on instead of making a span: the trace goes on
/// through it unbroken, for the price of a random number. `false` under any other
/// subscriber, propagator or exporter: spans are made as usual.
pub fn context_only() -> bool {
    CONTEXT_ONLY.load(Ordering::Acquire)
}

/// A request's place in a trace without a span: the trace it belongs to (the caller's, or
/// a new one), a span id of its own for what it sends on, and the caller's sampled flag.
///
/// What a proxy passes on in [`context_only`] mode: the `traceparent` it writes makes its
/// span id the parent of the upstream's, as a span would.
///
/// # Examples
///
/// ```
/// use msa_core::telemetry::propagation::TraceParent;
///
/// let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let child = TraceParent::child_of(Some(incoming));
/// assert!(child.continued());
/// let header = child.header();
/// let header = std::str::from_utf8(&header).unwrap();
/// assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
/// assert!(header.ends_with("-01"));
/// assert_ne!(&header[36..52], "00f067aa0ba902b7");
///
/// // Nothing (or nothing valid) came in: a new trace, sampled.
/// let root = TraceParent::child_of(Some(b"00-zz"));
/// assert!(!root.continued() && root.sampled());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
    continued: bool,
}

impl TraceParent {
    /// A child of the `traceparent` value that came in (read strictly, as [`extract`]
    /// does), or the root of a new sampled trace when none came or it is not valid; its
    /// span id is new either way.
    pub fn child_of(incoming: Option<&[u8]>) -> TraceParent {
        use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
        let ids = RandomIdGenerator::default();
        let mut span_id = ids.new_span_id();
        while span_id == SpanId::INVALID {
            span_id = ids.new_span_id();
        }
        match incoming.and_then(parse_traceparent) {
            Some((trace_id, _, flags)) => TraceParent {
                trace_id,
                span_id,
                flags,
                continued: true,
            },
            None => {
                let mut trace_id = ids.new_trace_id();
                while trace_id == TraceId::INVALID {
                    trace_id = ids.new_trace_id();
                }
                TraceParent {
                    trace_id,
                    span_id,
                    flags: TraceFlags::SAMPLED,
                    continued: false,
                }
            }
        }
    }

    /// The trace's id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This request's own span id: the parent of whatever it calls.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }

    /// Whether the trace is sampled (the caller's flag; a new trace is).
    pub fn sampled(&self) -> bool {
        self.flags.is_sampled()
    }

    /// Whether it continues a trace that came in: then the caller's `tracestate` goes on
    /// with it; a new trace has none.
    pub fn continued(&self) -> bool {
        self.continued
    }

    /// The `traceparent` value to send on: `00-{trace id}-{span id}-{flags}`.
    pub fn header(&self) -> [u8; 55] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        fn write(out: &mut [u8], bytes: &[u8]) {
            for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
                pair[0] = DIGITS[usize::from(byte >> 4)];
                pair[1] = DIGITS[usize::from(byte & 0xf)];
            }
        }
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write(&mut out[3..35], &self.trace_id.to_bytes());
        write(&mut out[36..52], &self.span_id.to_bytes());
        write(&mut out[53..55], &[self.flags.to_u8()]);
        out
    }
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const BAGGAGE: &str = "baggage";

/// Parses a W3C `traceparent` value strictly: `version-traceid-spanid-flags` with lowercase
/// hex of exactly 2, 32, 16 and 2 digits, a version below `ff` (exactly 55 characters for
/// version `00`; later versions may append `-...`), and non-zero ids. Only the sampled flag
/// is kept, as the specification asks.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_ascii();
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex::<1>(&value[0..2])?[0];
    match version {
        0x00 if value.len() != 55 => return None,
        0xff => return None,
        _ if value.len() > 55 && value[55] != b'-' => return None,
        _ => {}
    }
    let trace_id = TraceId::from_bytes(hex::<16>(&value[3..35])?);
    let span_id = SpanId::from_bytes(hex::<8>(&value[36..52])?);
    let flags = TraceFlags::new(hex::<1>(&value[53..55])?[0]) & TraceFlags::SAMPLED;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID)
        .then_some((trace_id, span_id, flags))
}

/// Decodes exactly `2 * N` lowercase hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(d: u8) -> Option<u8> {
        match d {
            b'0'..=b'9' => Some(d - b'0'),
            b'a'..=b'f' => Some(d - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Writes `cx` (trace parent, trace state, baggage) into outgoing request headers.
///
/// Nothing is written for a context without a valid span, so no `traceparent` of zeros ever
/// leaves the process.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    // Injection always goes through the global propagator: it is what a custom propagator
    // needs, and for W3C it is one formatted header.
    if !cx.span().span_context().is_valid() && cx.baggage().is_empty() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HeaderInjector(headers))
    });
}

/// Whether `name` (any case) is a header field the installed propagator reads and
/// writes: `traceparent`, `tracestate` and `baggage` for W3C's.
pub fn is_field(name: &[u8]) -> bool {
    if W3C_ONLY.load(Ordering::Acquire) {
        // msa's own propagator: its fields are known, no need to lock the global one.
        return [TRACEPARENT, TRACESTATE, BAGGAGE]
            .iter()
            .any(|field| field.as_bytes().eq_ignore_ascii_case(name));
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.fields()
            .any(|field| field.as_bytes().eq_ignore_ascii_case(name))
    })
}

use opentelemetry::baggage::BaggageExt as _;

/// An [`Extractor`] over an [`http::HeaderMap`].
#[derive(Debug)]
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// An [`Injector`] over an [`http::HeaderMap`]; values that are not valid header values are
/// skipped, and an empty value removes the field rather than sending it empty (W3C Trace
/// Context: a `tracestate` with no entries is left out).
#[derive(Debug)]
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
            return;
        };
        if value.is_empty() {
            self.0.remove(name);
        } else if let Ok(value) = HeaderValue::from_str(&value) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sdk(traceparent: &str) -> Option<SpanContext> {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_str(traceparent).ok()?);
        let cx = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let sc = cx.span().span_context().clone();
        sc.is_valid().then_some(sc)
    }

    fn ours(traceparent: &str) -> Option<SpanContext> {
        let (trace, span, flags) = parse_traceparent(traceparent.as_bytes())?;
        Some(SpanContext::new(
            trace,
            span,
            flags,
            true,
            Default::default(),
        ))
    }

    #[test]
    fn accepts_the_specification_examples() {
        let sc = ours("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled());
        assert!(
            !ours("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .is_sampled()
        );
        // A later version may carry more fields.
        assert!(ours("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra").is_some());
        // Unknown flags are dropped, the sampled bit kept.
        assert_eq!(
            ours("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff")
                .unwrap()
                .trace_flags(),
            TraceFlags::SAMPLED
        );
    }

    #[test]
    fn an_empty_trace_state_is_left_out_and_a_full_one_is_sent() {
        let sc = ours("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut headers = HeaderMap::new();
        headers.insert("tracestate", HeaderValue::from_static("stale=1"));
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
        assert!(headers.contains_key(TRACEPARENT));
        assert!(!headers.contains_key("tracestate"), "{headers:?}");

        let state = "vendor=abc".parse().unwrap();
        let sc = SpanContext::new(sc.trace_id(), sc.span_id(), sc.trace_flags(), true, state);
        let cx = Context::new().with_remote_span_context(sc);
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut headers));
        assert_eq!(headers["tracestate"], "vendor=abc");
    }

    #[test]
    fn a_trace_parent_continues_the_trace_under_a_span_id_of_its_own() {
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let child = TraceParent::child_of(Some(incoming));
        let (trace_id, span_id, flags) = parse_traceparent(&child.header()).unwrap();
        assert_eq!(trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span_id, child.span_id());
        assert_ne!(span_id.to_string(), "00f067aa0ba902b7");
        assert!(
            !flags.is_sampled() && !child.sampled(),
            "unsampled stays unsampled"
        );
        assert!(child.continued());
        let again = TraceParent::child_of(Some(incoming));
        assert_ne!(again.span_id(), child.span_id(), "a new span id each time");

        for bad in [
            &b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"[..],
            b"",
            b"-",
        ] {
            let root = TraceParent::child_of(Some(bad));
            let (trace_id, _, flags) = parse_traceparent(&root.header()).unwrap();
            assert_eq!(trace_id, root.trace_id());
            assert!(flags.is_sampled() && !root.continued());
        }
        let root = TraceParent::child_of(None);
        assert_ne!(root.trace_id(), TraceParent::child_of(None).trace_id());
    }

    #[test]
    fn rejects_what_the_specification_rejects() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-abc-def-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(ours(bad), None, "{bad:?}");
        }
    }

    /// `len` characters: usually clean lowercase hex, sometimes with a stray character.
    fn hex_string(len: usize) -> impl Strategy<Value = String> {
        let clean = proptest::collection::vec("[0-9a-f]", len).prop_map(|c| c.concat());
        let dirty =
            proptest::collection::vec(prop_oneof![8 => "[0-9a-f]", 1 => "[0-9A-Fg+ -]"], len)
                .prop_map(|c| c.concat());
        prop_oneof![3 => clean, 1 => dirty]
    }

    proptest! {
        /// Whatever msa accepts, OpenTelemetry's own extractor accepts identically; on
        /// well-formed headers the two agree exactly. (The SDK also takes short ids,
        /// which the W3C specification forbids and msa rejects.)
        #[test]
        fn agrees_with_the_sdk(
            version in prop_oneof![4 => Just("00".to_owned()), 1 => hex_string(2)],
            trace in prop_oneof![4 => hex_string(32), 1 => hex_string(31), 1 => Just("0".repeat(32))],
            span in prop_oneof![4 => hex_string(16), 1 => hex_string(17), 1 => Just("0".repeat(16))],
            flags in hex_string(2),
            tail in prop_oneof![4 => Just(String::new()), 1 => "-[a-z0-9]{0,4}", 1 => "[a-z]{1,2}"],
        ) {
            let header = format!("{version}-{trace}-{span}-{flags}{tail}");
            let mine = ours(&header);
            let theirs = sdk(&header);
            if let Some(mine) = &mine {
                prop_assert_eq!(Some(mine), theirs.as_ref(), "{}", header);
            }
            let well_formed = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if version == "00" && well_formed(&trace, 32) && well_formed(&span, 16) && well_formed(&flags, 2) && tail.is_empty() {
                prop_assert_eq!(mine, theirs, "{}", header);
            }
        }
    }
}
