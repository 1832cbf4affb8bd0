//! The downstream HTTP/1.1 connection: a lean loop for what a gateway mostly serves, and
//! hyper for the rest.
//!
//! Most requests through a gateway are a head and then no body, or a small one that has
//! already arrived. For those this loop reads into a per-thread scratch buffer, keeps only
//! the request's own bytes (one exactly sized copy, the header values sliced from it), and
//! writes each response head with the first of its body in one `write`. Between requests a
//! connection holds no buffer at all: its task is about 1.4 KB, where hyper keeps an
//! 8 KiB read buffer and an 8 KiB write buffer for every connection.
//!
//! Everything else — an HTTP/2 preface, `Upgrade` and `CONNECT`, `Expect`, chunked or large
//! request bodies — is handed to hyper mid-connection: the bytes read so far are replayed
//! to it first ([`Rewind`]), so it serves the connection from that request on.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::wire::{self, HopByHop, Name, RawHead, ResponseHead};
use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The most headers a request may carry (hyper's limit too); more is a 431.
const MAX_HEADERS: usize = 100;

/// Request bodies up to this size are read whole before the request is handled; a larger
/// one goes to hyper, which streams it.
const INLINE_BODY: u64 = 64 * 1024;

/// How much one read takes from the socket.
const READ_SIZE: usize = 16 * 1024;

/// Response bytes gathered before they are written.
const WRITE_BATCH: usize = 64 * 1024;

/// How an HTTP/2 connection with prior knowledge (h2c, gRPC) begins.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

thread_local! {
    /// Reads land here first; a connection keeps only what a request needs.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
    /// The `Date` header for the current second.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [0; 29])) };
}

/// How a connection's loop ended.
#[derive(Debug)]
pub(crate) enum End<S> {
    /// The connection is done with (closed by either side, or broken).
    Closed,
    /// The rest of the connection is hyper's, starting with the bytes `Rewind` holds.
    HandOff(Rewind<S>),
}

/// The stream a client connection is read from and written to: plain TCP, or TLS over it.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin {}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for S {}

/// A request as it arrived: its bytes (head and body), kept whole. The gateway forwards
/// its header lines as they are, or builds a [`Request`] from it ([`into_request`]).
///
/// [`into_request`]: RawRequest::into_request
#[derive(Debug)]
pub(crate) struct RawRequest {
    pub(crate) method: Method,
    pub(crate) http10: bool,
    /// Whether it came over TLS (set by the server): the upstream is told `https`.
    pub(crate) tls: bool,
    head: RawHead,
    target: std::ops::Range<usize>,
    head_len: usize,
}

impl RawRequest {
    /// The request target as sent: usually a path and query.
    pub(crate) fn target(&self) -> &str {
        // httparse read it as text.
        std::str::from_utf8(self.target_bytes()).unwrap_or_default()
    }

    /// The same, as bytes.
    pub(crate) fn target_bytes(&self) -> &[u8] {
        &self.head.bytes()[self.target.clone()]
    }

    /// The head's header fields.
    pub(crate) fn head(&self) -> &RawHead {
        &self.head
    }

    /// The length of the request line and header lines.
    pub(crate) fn head_len(&self) -> usize {
        self.head_len
    }

    /// The body (all of it arrived with the head).
    pub(crate) fn body(&self) -> Bytes {
        self.head.rest(self.head_len..self.head.bytes().len())
    }

    /// The request as an `http::Request`, its target and header values sliced from the
    /// bytes that arrived; `Err` says why `http` refuses its target or a header (a 400).
    pub(crate) fn into_request(self) -> Result<Request<Body>, &'static str> {
        let uri = Uri::from_maybe_shared(self.head.rest(self.target.clone()))
            .map_err(|_| "the request target is not a URI")?;
        // Room for what the proxy adds (X-Forwarded-*, Forwarded, a trace context), so
        // the map is not grown and rehashed on the way upstream.
        let headers = self.head.header_map(6)?;
        let body = self.body();
        let mut request = Request::new(if body.is_empty() {
            Body::empty()
        } else {
            Body::from(body)
        });
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        *request.version_mut() = if self.http10 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        *request.headers_mut() = headers;
        if self.tls {
            request.extensions_mut().insert(OverTls);
        }
        Ok(request)
    }
}

/// Marks an `http::Request` that came over TLS (an extension the server adds): the
/// upstream is told `https` in X-Forwarded-Proto and Forwarded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OverTls;

/// What the handler answers: a response, or an upstream's answer with its head as the
/// upstream sent it (written on with its hop-by-hop fields left out).
pub(crate) enum Reply {
    Http(Response<Body>),
    Raw(ResponseHead, Body),
}

/// A request ready to be served, and how its connection goes on after it.
#[derive(Debug)]
struct Incoming {
    request: RawRequest,
    /// The client asked to close after this request (or speaks HTTP/1.0 without
    /// keep-alive).
    close: bool,
}

/// What one look at the buffered bytes found.
#[derive(Debug)]
// Unboxed: a request is what the common path returns, and boxing it would cost an
// allocation per request to keep the rare variants' size down.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// A complete request, made of the first `used` bytes.
    Request(Incoming, usize),
    /// Not enough bytes yet.
    Partial,
    /// Something this loop leaves to hyper.
    HandOff,
    /// Malformed: answer with this status and reason, then close.
    Reject(StatusCode, &'static str),
}

/// The next thing a connection has for the loop.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // as `Parsed`
enum Next {
    Request(Incoming),
    HandOff,
    Reject(StatusCode, &'static str),
    Closed,
}

/// What one connection may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    /// The longest request head (request line and headers); beyond it the answer is 431.
    pub(crate) max_head: usize,
    /// How long a request may take to arrive once its first byte has; past it, 408.
    pub(crate) header_read: Duration,
    /// How long the connection may wait for a request's first byte; past it, it is closed.
    pub(crate) idle: Duration,
}

/// Serves HTTP/1.1 requests on `stream` with `handler` until the client closes, `stop`
/// completes between two requests, a request needs hyper, or a request does not arrive
/// within `bounds`.
pub(crate) async fn serve<S: Stream, H, F>(
    stream: S,
    bounds: Bounds,
    handler: H,
    stop: impl Future<Output = ()>,
) -> End<S>
where
    H: Fn(RawRequest) -> F,
    F: Future<Output = Reply>,
{
    let mut connection = Connection {
        stream,
        pending: BytesMut::new(),
        max_head: bounds.max_head,
        deadline: Box::pin(tokio::time::sleep(bounds.idle)),
        bounds,
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let next = tokio::select! {
            biased;
            next = connection.next() => next,
            () = &mut stop => return End::Closed,
        };
        let incoming = match next {
            Next::Request(incoming) => incoming,
            Next::Closed => return End::Closed,
            Next::HandOff => {
                return End::HandOff(Rewind {
                    prefix: connection.pending.freeze(),
                    stream: connection.stream,
                });
            }
            Next::Reject(status, reason) => {
                let _ = connection
                    .stream
                    .write_all(&rejection(status, reason))
                    .await;
                let _ = connection.stream.shutdown().await;
                return End::Closed;
            }
        };
        let Incoming { request, close } = incoming;
        let head_request = request.method == Method::HEAD;
        let http10 = request.http10;
        let response = handler(request).await;
        match write_response(
            &mut connection.stream,
            response,
            head_request,
            http10,
            close,
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                let _ = connection.stream.shutdown().await;
                return End::Closed;
            }
            Err(error) => {
                tracing::debug!(%error, "writing a response failed");
                return End::Closed;
            }
        }
    }
}

/// One client connection and the bytes read from it that no request has taken yet.
struct Connection<S> {
    stream: S,
    /// A partial head, a body still arriving, or a pipelined request. Usually empty and
    /// unallocated.
    pending: BytesMut,
    max_head: usize,
    bounds: Bounds,
    /// A timer that fires no later than the request being waited for must have arrived:
    /// it may be an earlier request's, and is moved on when it fires too soon (once an
    /// idle period, rather than a timer reset for every request).
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl<S: Stream> Connection<S> {
    /// Reads until a request is complete (or the connection ends, or needs hyper, or the
    /// request does not arrive in time).
    async fn next(&mut self) -> Next {
        let mut arriving = !self.pending.is_empty();
        let wait = if arriving {
            self.bounds.header_read
        } else {
            self.bounds.idle
        };
        let mut limit = tokio::time::Instant::now() + wait;
        if limit < self.deadline.deadline() {
            self.deadline.as_mut().reset(limit);
        }
        loop {
            if !self.pending.is_empty() {
                if !arriving {
                    arriving = true;
                    let head = tokio::time::Instant::now() + self.bounds.header_read;
                    if head < limit {
                        limit = head;
                        if head < self.deadline.deadline() {
                            self.deadline.as_mut().reset(head);
                        }
                    }
                }
                match parse(&self.pending, self.max_head) {
                    Parsed::Request(incoming, used) => {
                        self.pending.advance(used);
                        if self.pending.is_empty() {
                            // Release the buffer: an idle connection keeps nothing.
                            self.pending = BytesMut::new();
                        }
                        return Next::Request(incoming);
                    }
                    Parsed::Partial => {}
                    Parsed::HandOff => return Next::HandOff,
                    Parsed::Reject(status, reason) => return Next::Reject(status, reason),
                }
            }
            let read = poll_fn(|cx| match self.poll_read(cx) {
                Poll::Ready(next) => Poll::Ready(Some(next)),
                Poll::Pending => loop {
                    match self.deadline.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if tokio::time::Instant::now() >= limit => {
                            return Poll::Ready(None);
                        }
                        // An earlier request's deadline: move it on, and wait again.
                        Poll::Ready(()) => self.deadline.as_mut().reset(limit),
                    }
                },
            })
            .await;
            match read {
                Some(Some(next)) => return next,
                Some(None) => {}
                None if arriving => {
                    return Next::Reject(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request did not arrive in time",
                    );
                }
                None => return Next::Closed,
            }
        }
    }

    /// One read into the thread's scratch buffer. A request found whole in it is taken
    /// from there (the common case: no per-connection buffer); anything else is kept in
    /// `pending`, and `None` says to look at `pending` again.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "reading a request failed");
                    return Poll::Ready(Some(Next::Closed));
                }
                Poll::Ready(Ok(())) => {}
            }
            let read = buf.filled();
            if read.is_empty() {
                return Poll::Ready(Some(Next::Closed));
            }
            if !self.pending.is_empty() {
                self.pending.extend_from_slice(read);
                return Poll::Ready(None);
            }
            Poll::Ready(match parse(read, self.max_head) {
                Parsed::Request(incoming, used) => {
                    if used < read.len() {
                        self.pending.extend_from_slice(&read[used..]);
                    }
                    Some(Next::Request(incoming))
                }
                Parsed::Partial => {
                    self.pending.extend_from_slice(read);
                    None
                }
                Parsed::HandOff => {
                    self.pending.extend_from_slice(read);
                    Some(Next::HandOff)
                }
                Parsed::Reject(status, reason) => Some(Next::Reject(status, reason)),
            })
        })
    }
}

/// Looks for one complete request at the start of `buf`.
fn parse(buf: &[u8], max_head: usize) -> Parsed {
    if buf.len() < H2_PREFACE.len() {
        if H2_PREFACE.starts_with(buf) {
            return Parsed::Partial;
        }
    } else if buf.starts_with(H2_PREFACE) {
        return Parsed::HandOff;
    }
    // Left uninitialised: httparse writes the ones it uses (3 KiB not zeroed per request).
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Parsed::Partial,
        Ok(_) => {
            return Parsed::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request head is larger than the gateway accepts",
            );
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the request has more than 100 headers",
            );
        }
        Err(httparse::Error::Version) => {
            return Parsed::Reject(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "only HTTP/1.0, HTTP/1.1 and HTTP/2 are served",
            );
        }
        Err(_) => {
            return Parsed::Reject(StatusCode::BAD_REQUEST, "the request head is malformed");
        }
    };
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Parsed::Reject(StatusCode::BAD_REQUEST, "the request line is incomplete");
    };
    if method == "CONNECT" {
        return Parsed::HandOff;
    }
    let http10 = minor == 0;
    let (mut close, mut keep_alive) = (false, false);
    let mut content_length: Option<u64> = None;
    for field in parsed.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let Some(length) = wire::decimal(field.value) else {
                return Parsed::Reject(StatusCode::BAD_REQUEST, "Content-Length is not a number");
            };
            if content_length.is_some_and(|earlier| earlier != length) {
                return Parsed::Reject(
                    StatusCode::BAD_REQUEST,
                    "the request has two different Content-Length headers",
                );
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Parsed::HandOff;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in field.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Parsed::HandOff;
                }
            }
        }
    }
    // HTTP/1.0 closes after each request unless the client asks otherwise.
    close |= http10 && !keep_alive;
    let body_len = content_length.unwrap_or(0);
    if body_len > INLINE_BODY {
        return Parsed::HandOff;
    }
    // Both fit in memory: `INLINE_BODY` is small and `head_len` was read.
    let used = head_len + body_len as usize;
    if buf.len() < used {
        return Parsed::Partial;
    }

    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Reject(StatusCode::BAD_REQUEST, "the method is not a token");
    };
    // One copy of the request's bytes; the target and header fields are ranges of it.
    let Ok(head) = RawHead::new(Bytes::copy_from_slice(&buf[..used]), buf, parsed.headers) else {
        return Parsed::Reject(StatusCode::BAD_REQUEST, "the request head is malformed");
    };
    let target_start = target.as_ptr() as usize - buf.as_ptr() as usize;
    let request = RawRequest {
        method,
        http10,
        head,
        target: target_start..target_start + target.len(),
        head_len,
        tls: false,
    };
    Parsed::Request(Incoming { request, close }, used)
}

/// A complete response for a request the loop refuses; the connection closes after it.
fn rejection(status: StatusCode, reason: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    )
    .into_bytes()
}

/// Writes `response` for a request (`HEAD` or not, HTTP/1.0 or 1.1). Returns whether the
/// connection can carry another request.
async fn write_response(
    stream: &mut impl Stream,
    reply: Reply,
    head_request: bool,
    http10: bool,
    mut close: bool,
) -> io::Result<bool> {
    let mut out = Vec::with_capacity(256);
    let mut fields = Fields::default();
    let (status, mut body) = match reply {
        Reply::Http(response) => {
            let (parts, body) = response.into_parts();
            status_line(&mut out, parts.status);
            for (name, value) in &parts.headers {
                if *name == header::CONNECTION {
                    close |=
                        wire::tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close"));
                    continue;
                }
                let known = if *name == header::CONTENT_LENGTH {
                    Name::ContentLength
                } else if *name == header::TRANSFER_ENCODING {
                    Name::TransferEncoding
                } else if *name == header::DATE {
                    Name::Date
                } else {
                    Name::Other
                };
                fields.push(&mut out, known, name.as_str().as_bytes(), value.as_bytes());
            }
            (parts.status, body)
        }
        Reply::Raw(head, body) => {
            status_line(&mut out, head.status);
            // The upstream's own connection headers (its `Connection: close` too) stay
            // on its connection.
            let hop = HopByHop::of(&head.raw);
            // A body the upstream sent chunked has no length of its own (RFC 9112 §6.3).
            let chunked = head.raw.has(Name::TransferEncoding);
            for (known, name, value) in head.raw.fields() {
                let dropped =
                    hop.contains(known, name) || (chunked && known == Name::ContentLength);
                if !dropped {
                    fields.push(&mut out, known, name, value);
                }
            }
            (head.status, body)
        }
    };
    let bodyless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut length = fields.length;
    if !fields.dated {
        out.extend_from_slice(b"date: ");
        date(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    let mut chunked = false;
    if head_request && length.is_none() {
        // What a GET would have carried, when the handler says.
        if let Some(exact) = body.size_hint().exact().filter(|n| *n > 0) {
            let _ = write!(out, "content-length: {exact}\r\n");
        }
    } else if !bodyless && length.is_none() {
        if let Some(exact) = body.size_hint().exact() {
            length = Some(exact);
            let _ = write!(out, "content-length: {exact}\r\n");
        } else if http10 {
            // Delimited by closing the connection.
            close = true;
        } else {
            chunked = true;
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if bodyless {
        send(stream, &out).await?;
        return Ok(!close);
    }

    // Whatever of the body is ready now goes out with the head.
    let mut sent = 0u64;
    loop {
        // Polled without a waker: only to see whether a frame is there already.
        let ready = Pin::new(&mut body).poll_frame(&mut Context::from_waker(Waker::noop()));
        match ready {
            Poll::Ready(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data()
                    && !append(&mut out, data, chunked, &mut sent, length, stream).await?
                {
                    return Ok(false);
                }
            }
            Poll::Ready(Some(Err(error))) => {
                tracing::debug!(%error, "the response body failed");
                stream.write_all(&out).await?;
                return Ok(false);
            }
            Poll::Ready(None) => return finish(stream, out, chunked, sent, length, close).await,
            Poll::Pending => break,
        }
    }
    if !out.is_empty() {
        send(stream, &out).await?;
        out.clear();
    }
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    if !append(&mut out, data, chunked, &mut sent, length, stream).await? {
                        return Ok(false);
                    }
                    if !out.is_empty() {
                        send(stream, &out).await?;
                        out.clear();
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "the response body failed");
                return Ok(false);
            }
        }
    }
    finish(stream, out, chunked, sent, length, close).await
}

/// `HTTP/1.1 {code} {reason}\r\n`.
fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The header lines of a response being written, and what they said about its framing.
#[derive(Default)]
struct Fields {
    /// The first valid Content-Length (any other is left out).
    length: Option<u64>,
    dated: bool,
}

impl Fields {
    fn push(&mut self, out: &mut Vec<u8>, known: Name, name: &[u8], value: &[u8]) {
        match known {
            Name::ContentLength => match wire::decimal(value) {
                Some(n) if self.length.is_none() => self.length = Some(n),
                _ => return,
            },
            // The framing is this connection's to choose.
            Name::TransferEncoding => return,
            Name::Date => self.dated = true,
            _ => {}
        }
        wire::push_field(out, name, value);
    }
}

/// Adds a data frame to what is to be written (flushing first when it is large). Returns
/// `false` when the body ran past its declared length (the rest is not sent).
async fn append(
    out: &mut Vec<u8>,
    data: Bytes,
    chunked: bool,
    sent: &mut u64,
    length: Option<u64>,
    stream: &mut impl Stream,
) -> io::Result<bool> {
    if data.is_empty() {
        return Ok(true);
    }
    *sent += data.len() as u64;
    if length.is_some_and(|length| *sent > length) {
        stream.write_all(out).await?;
        stream.flush().await?;
        return Ok(false);
    }
    if chunked {
        let _ = write!(out, "{:x}\r\n", data.len());
    }
    if out.len() + data.len() > WRITE_BATCH {
        stream.write_all(out).await?;
        out.clear();
        stream.write_all(&data).await?;
    } else {
        out.extend_from_slice(&data);
    }
    if chunked {
        out.extend_from_slice(b"\r\n");
    }
    Ok(true)
}

/// Ends the body (the last chunk, or a check of the length) and writes what is left.
async fn finish(
    stream: &mut impl Stream,
    mut out: Vec<u8>,
    chunked: bool,
    sent: u64,
    length: Option<u64>,
    close: bool,
) -> io::Result<bool> {
    if chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    send(stream, &out).await?;
    // A body shorter than its Content-Length: the client can only tell from a close.
    Ok(!close && length.is_none_or(|length| sent == length))
}

/// Writes `out` and flushes it: nothing more for TCP, while TLS may hold the last record
/// until asked (a streamed body's part must reach the client before the next is awaited).
async fn send(stream: &mut impl Stream, out: &[u8]) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out).await?;
    }
    stream.flush().await
}

/// Appends the current `Date` value (formatted once a second per thread).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == text.len() {
                text.copy_from_slice(formatted.as_bytes());
                *cached = second;
            }
        }
        out.extend_from_slice(text);
    });
}

/// A connection whose first bytes were already read: reads return those again first.
#[derive(Debug)]
pub(crate) struct Rewind<S> {
    prefix: Bytes,
    stream: S,
}

impl<S: Stream> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: Stream> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    type Answer = Pin<Box<dyn Future<Output = Reply> + Send>>;

    /// Heads up to `max_head`, and the default timeouts (30 s for a request to arrive,
    /// 60 s idle).
    fn bounds(max_head: usize) -> Bounds {
        Bounds {
            max_head,
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }

    /// Answers with what it received: method, target, version and body.
    fn echo(request: RawRequest) -> Answer {
        Box::pin(async move {
            let request = match request.into_request() {
                Ok(request) => request,
                Err(reason) => {
                    let refused = crate::error::error_response(StatusCode::BAD_REQUEST, reason);
                    return Reply::Http(refused);
                }
            };
            Reply::Http(echo_http(request).await)
        })
    }

    async fn echo_http(request: Request<Body>) -> Response<Body> {
        {
            let line = format!(
                "{} {} {:?} {}",
                request.method(),
                request.uri(),
                request.version(),
                request
                    .headers()
                    .get("x-tag")
                    .map_or("-", |v| v.to_str().unwrap_or("?"))
            );
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let text = format!("{line} body={}", String::from_utf8_lossy(&body));
            if line.contains("/stream") {
                // A body of unknown length, in two frames that are not ready at once.
                let frames = futures_util::stream::iter(["one,", "two"]).then(|frame| async move {
                    tokio::task::yield_now().await;
                    Ok::<_, std::convert::Infallible>(frame)
                });
                return Response::new(Body::from_stream(frames));
            }
            if line.contains("/empty") {
                return Response::builder().status(204).body(Body::empty()).unwrap();
            }
            Response::new(Body::from(text))
        }
    }

    /// Serves one connection with `echo`; returns the client's end and how the loop ended.
    async fn connect() -> (TcpStream, tokio::task::JoinHandle<End<TcpStream>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream, bounds(1024), echo, std::future::pending()).await
        });
        (TcpStream::connect(addr).await.unwrap(), server)
    }

    /// Sends `bytes`, closes the client's writing side, and reads everything answered.
    async fn exchange(bytes: &[u8]) -> (String, End<TcpStream>) {
        let (mut client, server) = connect().await;
        client.write_all(bytes).await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        (answer, server.await.unwrap())
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order() {
        let (answer, end) = exchange(
            b"GET /a HTTP/1.1\r\nhost: x\r\nx-tag: 1\r\n\r\n\
              POST /b?q=1 HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello\
              GET /c HTTP/1.1\r\nhost: x\r\n\r\n",
        )
        .await;
        assert!(matches!(end, End::Closed));
        let bodies: Vec<&str> = answer
            .split("HTTP/1.1 200 OK\r\n")
            .skip(1)
            .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
            .collect();
        assert_eq!(
            bodies,
            [
                "GET /a HTTP/1.1 1 body=",
                "POST /b?q=1 HTTP/1.1 - body=hello",
                "GET /c HTTP/1.1 - body="
            ]
        );
        assert!(answer.contains("content-length: 23\r\n"), "{answer}");
        assert!(answer.contains("date: "), "{answer}");
    }

    #[tokio::test]
    async fn a_head_and_body_split_across_reads_are_put_together() {
        let (mut client, server) = connect().await;
        for part in [
            &b"POST /split HT"[..],
            b"TP/1.1\r\nhost: x\r\ncontent-le",
            b"ngth: 6\r\n\r\nab",
            b"cdef",
        ] {
            // Sent as separate segments (the socket has no Nagle delay); how the server's
            // reads fall is the kernel's choice, so the parser's side of this is also
            // checked byte by byte below.
            client.write_all(part).await.unwrap();
            client.flush().await.unwrap();
        }
        client.shutdown().await.unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.ends_with("\r\n\r\nPOST /split HTTP/1.1 - body=abcdef"),
            "{answer}"
        );
        assert!(matches!(server.await.unwrap(), End::Closed));
    }

    #[test]
    fn every_prefix_of_a_request_asks_for_more_bytes() {
        let request: &[u8] = b"POST /p?q HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabcGET";
        let whole = request.len() - 3; // the pipelined "GET" is not part of it
        for end in 0..whole {
            assert!(
                matches!(parse(&request[..end], 1024), Parsed::Partial),
                "{:?}",
                String::from_utf8_lossy(&request[..end])
            );
        }
        let Parsed::Request(incoming, used) = parse(request, 1024) else {
            panic!("not parsed");
        };
        assert_eq!(used, whole);
        assert_eq!(incoming.request.target(), "/p?q");
        assert_eq!(incoming.request.head().get(Name::Host), Some(&b"x"[..]));
        assert_eq!(incoming.request.body(), "abc");
        assert!(!incoming.close);
    }

    #[tokio::test]
    async fn http10_closes_unless_asked_to_keep_alive() {
        let (answer, _) = exchange(b"GET /a HTTP/1.0\r\n\r\nGET /never HTTP/1.0\r\n\r\n").await;
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(!answer.contains("/never"), "{answer}");

        let (answer, _) =
            exchange(b"GET /a HTTP/1.0\r\nconnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n")
                .await;
        assert!(answer.contains("connection: keep-alive\r\n"), "{answer}");
        assert!(answer.contains("GET /b HTTP/1.0"), "{answer}");
    }

    #[tokio::test]
    async fn connection_close_ends_the_connection_after_the_answer() {
        let (answer, _) =
            exchange(b"GET /a HTTP/1.1\r\nconnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n")
                .await;
        assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");
        assert!(answer.contains("connection: close\r\n"), "{answer}");
    }

    #[tokio::test]
    async fn bodies_of_unknown_length_are_chunked_and_head_gets_none() {
        let (answer, _) = exchange(b"GET /stream HTTP/1.1\r\n\r\n").await;
        assert!(
            answer.contains("transfer-encoding: chunked\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\n4\r\none,\r\n3\r\ntwo\r\n0\r\n\r\n"),
            "{answer}"
        );

        // HTTP/1.0 has no chunks: the body ends with the connection.
        let (answer, _) = exchange(b"GET /stream HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
        assert!(answer.contains("connection: close\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\none,two"), "{answer}");

        let (answer, _) = exchange(b"HEAD /a HTTP/1.1\r\n\r\nGET /empty HTTP/1.1\r\n\r\n").await;
        let (head, no_content) = answer.split_once("HTTP/1.1 204").unwrap();
        assert!(head.contains("content-length: 24\r\n"), "{answer}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD gets no body: {answer}");
        assert!(!no_content.contains("content-length"), "{answer}");
        assert!(no_content.ends_with("\r\n\r\n"), "{answer}");
    }

    #[tokio::test]
    async fn malformed_and_oversized_requests_get_4xx_with_a_reason() {
        let (answer, _) = exchange(b"GET /a HTTP/1.1\r\nbad header\r\n\r\n").await;
        assert!(
            answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{answer}"
        );
        assert!(
            answer.ends_with("the request head is malformed\n"),
            "{answer}"
        );

        let (answer, _) = exchange(b"GET /a HTTP/1.1\r\ncontent-length: 1x\r\n\r\n").await;
        assert!(
            answer.ends_with("Content-Length is not a number\n"),
            "{answer}"
        );

        let (answer, _) =
            exchange(b"GET /a HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

        let big = format!("GET /a HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(2000));
        let (answer, _) = exchange(big.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

        // The limit holds while the head is still arriving, too.
        let (answer, _) =
            exchange(format!("GET /a HTTP/1.1\r\nx-big: {}", "a".repeat(2000)).as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

        let many: String = (0..101).map(|n| format!("x-{n}: 1\r\n")).collect();
        let (answer, _) = exchange(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()).await;
        assert!(answer.ends_with("more than 100 headers\n"), "{answer}");
    }

    #[tokio::test]
    async fn what_the_loop_does_not_serve_is_handed_over_from_its_first_byte() {
        for request in [
            &b"POST /up HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            b"GET /ws HTTP/1.1\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            b"PUT /x HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 3\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n",
            b"POST /big HTTP/1.1\r\ncontent-length: 1000000\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (mut client, server) = connect().await;
            // A request answered first: the hand-over starts after it.
            client
                .write_all(b"GET /first HTTP/1.1\r\n\r\n")
                .await
                .unwrap();
            let mut first = [0u8; 12];
            client.read_exact(&mut first).await.unwrap();
            assert_eq!(&first, b"HTTP/1.1 200");
            client.write_all(request).await.unwrap();
            let End::HandOff(mut rewind) = server.await.unwrap() else {
                panic!("not handed over: {}", String::from_utf8_lossy(request));
            };
            let mut replayed = vec![0; request.len()];
            rewind.read_exact(&mut replayed).await.unwrap();
            assert_eq!(replayed, request);
        }
    }

    #[tokio::test]
    async fn stop_closes_an_idle_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            serve(stream, bounds(1024), echo, async {
                let _ = stopped.await;
            })
            .await
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
        let mut status = [0u8; 12];
        client.read_exact(&mut status).await.unwrap();
        stop.send(()).unwrap();
        // Bounded, so a loop that ignores the stop fails the test instead of hanging it.
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the idle connection closes once told to stop");
        assert!(matches!(end.unwrap(), End::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_stops_arriving_is_answered_408() {
        let (mut client, server) = connect().await;
        let started = tokio::time::Instant::now();
        client
            .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert!(matches!(server.await.unwrap(), End::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_idle_past_the_timeout_is_closed_and_not_before() {
        let (mut client, server) = connect().await;
        for _ in 0..3 {
            // 59 s of quiet, three times over: each request starts the wait afresh.
            tokio::time::sleep(Duration::from_secs(59)).await;
            client
                .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut status = [0u8; 12];
            client.read_exact(&mut status).await.unwrap();
            assert_eq!(&status, b"HTTP/1.1 200");
            let mut rest = [0u8; 1024];
            let _ = client.read(&mut rest).await.unwrap();
        }
        let idle = tokio::time::Instant::now();
        let mut after = Vec::new();
        client.read_to_end(&mut after).await.unwrap();
        assert!(after.is_empty(), "closed without an answer");
        assert!(idle.elapsed() >= Duration::from_secs(60));
        assert!(matches!(server.await.unwrap(), End::Closed));
    }

    proptest::proptest! {
        /// Hostile heads: any bytes, and requests with bytes changed or inserted, parse as a
        /// request, a partial one, a hand-off or a refusal, never a panic, and a request
        /// never takes more bytes than there are.
        /// Longer runs: `PROPTEST_CASES=100000 cargo test -p msa-gateway --lib hostile`.
        #[test]
        fn hostile_heads_parse_or_are_refused(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), proptest::prelude::any::<bool>()),
                0..10,
            ),
            max_head in 16usize..4096,
        ) {
            let check = |buf: &[u8]| {
                if let Parsed::Request(_, used) = parse(buf, max_head) {
                    assert!(used <= buf.len());
                }
            };
            check(&noise);
            let mut request = b"POST /items/7?q=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, X-Name\r\n\r\nhello".to_vec();
            for (at, byte, insert) in edits {
                let at = at % (request.len() + 1);
                if insert || at == request.len() {
                    request.insert(at, byte);
                } else {
                    request[at] = byte;
                }
            }
            check(&request);
        }
    }
}
