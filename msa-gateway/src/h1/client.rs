//! A lean HTTP/1.1 client connection for the proxy's hot path: the request's own task
//! writes the request and reads the response, with no connection task and no channel
//! between them. Plain TCP only; upgrades, TLS and HTTP/2 go through hyper.
//!
//! Framing follows RFC 9112: a request body is sent with its length when known, else
//! chunked; a response body is delimited by nothing (HEAD, 1xx, 204, 304), by chunked
//! transfer coding, by Content-Length, or by the connection closing (then it is not
//! reused).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::wire::{self, Name, RawHead, ResponseHead};

/// The most bytes a response head may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers a response head may have.
const MAX_HEADERS: usize = 128;
/// A body's first part is written with the head when it is at most this long.
const COALESCE: usize = 16 * 1024;

/// An HTTP/1.1 connection to an upstream.
#[derive(Debug)]
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// The next request head is written here (kept, so a request allocates none).
    out: Vec<u8>,
    /// When its last response ended.
    idle_since: Option<std::time::Instant>,
}

/// How long a connection may have been idle and still be reused without first checking
/// that the upstream has not closed it. Upstreams keep idle connections open for seconds
/// (nginx 75 s, Tomcat 20 s, hyper until the client closes).
const PROBE_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// Why a request got no response.
#[derive(Debug)]
pub(crate) struct Failed<T = Request<Body>> {
    pub(crate) error: io::Error,
    /// The request, when it may be sent again on another connection as it was: it has no
    /// body, and the upstream answered nothing (it had closed the idle connection).
    pub(crate) unsent: Option<T>,
}

impl<T> From<io::Error> for Failed<T> {
    fn from(error: io::Error) -> Failed<T> {
        Failed {
            error,
            unsent: None,
        }
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            idle_since: None,
        }
    }

    /// Whether an idle connection may carry another request: nothing unasked is buffered,
    /// and the upstream has neither closed it nor sent anything since.
    ///
    /// For a request that cannot be sent again (`strict`: it carries a body), the socket
    /// itself is asked (one `recvfrom`), so a close the kernel has received counts even
    /// before the reactor has reported it. Otherwise the check costs no system call while
    /// the connection has been idle less than [`PROBE_AFTER`] (only the reactor's word
    /// after that): a connection the upstream closed meanwhile fails the request before
    /// any answer, and [`send`] gives the bodiless request back to be sent on another
    /// connection.
    pub(crate) fn is_reusable(&self, strict: bool) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        if strict {
            let mut probe = [std::mem::MaybeUninit::uninit()];
            let peeked = socket2::SockRef::from(&self.io).peek(&mut probe);
            return matches!(peeked, Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        }
        if self
            .idle_since
            .is_some_and(|since| since.elapsed() < PROBE_AFTER)
        {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Reads what the socket has into `buf`; `Ok(0)` at the end of the stream.
    ///
    /// Through `AsyncRead`, which counts a read that did not fill the buffer as having
    /// drained the socket: [`Conn::is_reusable`] then knows the connection is quiet
    /// without a system call (a `try_read` would leave the socket marked readable, and
    /// the next probe would cost a failed `recvfrom`).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(8 * 1024);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }
}

/// A request for [`send_raw`]: its head, complete and written as it is, and its body.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Request line, header lines and the empty line.
    pub(crate) head: Vec<u8>,
    pub(crate) body: Bytes,
    /// A `HEAD` request: the answer has no body whatever its headers say.
    pub(crate) head_only: bool,
}

/// Sends `request` (origin-form URI, Host set) on `conn` and reads the response head;
/// the body is read from the connection as the caller polls it, and `release` gets the
/// connection back when the body ends with the connection reusable.
pub(crate) async fn send<R>(
    mut conn: Conn,
    request: Request<Body>,
    release: R,
) -> Result<Response<Body>, Failed>
where
    R: FnOnce(Conn) + Send + Unpin + 'static,
{
    let (mut parts, mut body) = request.into_parts();
    let mut headers = std::mem::take(&mut parts.headers);
    let empty = http_body::Body::is_end_stream(&body);
    let exact = http_body::Body::size_hint(&body).exact();
    headers.remove(TRANSFER_ENCODING);
    let chunked = if empty {
        if expects_body(&parts.method) && !headers.contains_key(CONTENT_LENGTH) {
            headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        false
    } else if let Some(length) = exact {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
        false
    } else if headers.contains_key(CONTENT_LENGTH) {
        false
    } else {
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        true
    };

    let mut out = std::mem::take(&mut conn.out);
    out.clear();
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &headers {
        wire::push_field(&mut out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !empty {
        let mut first = true;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(io::Error::other)?;
            let Ok(data) = frame.into_data() else {
                continue; // request trailers are not forwarded over HTTP/1.1
            };
            if data.is_empty() {
                continue;
            }
            if chunked {
                use std::io::Write as _;
                let _ = write!(out, "{:x}\r\n", data.len());
            }
            if first && data.len() <= COALESCE {
                out.extend_from_slice(&data);
            } else {
                conn.io.write_all(&out).await?;
                out.clear();
                conn.io.write_all(&data).await?;
            }
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
            first = false;
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
    // A bodiless request that got no answer at all goes back to the caller, to be sent
    // again: what an upstream that closed the idle connection causes.
    let unanswered = |error: io::Error, parts: http::request::Parts, headers| {
        let mut parts = parts;
        parts.headers = headers;
        Failed {
            error,
            unsent: empty.then(|| Request::from_parts(parts, Body::empty())),
        }
    };
    if !out.is_empty()
        && let Err(error) = conn.io.write_all(&out).await
    {
        return Err(unanswered(error, parts, headers));
    }
    conn.out = out;

    let head_only = parts.method == Method::HEAD;
    match read_response(conn, head_only, release).await {
        Ok((head, body)) => {
            let mut response = Response::new(body);
            *response.status_mut() = head.status;
            *response.version_mut() = head.version;
            // Room for what the way back adds (Date, the route's response headers).
            *response.headers_mut() = head
                .raw
                .header_map(4)
                .map_err(|reason| invalid(format!("the upstream's response: {reason}")))?;
            if head.raw.has(Name::TransferEncoding) {
                // The body's length is what the chunks say (RFC 9112 §6.3).
                response.headers_mut().remove(CONTENT_LENGTH);
            }
            Ok(response)
        }
        Err(Unread::Unanswered(error)) => Err(unanswered(error, parts, headers)),
        Err(Unread::Failed(error)) => Err(error.into()),
    }
}

/// Sends a request whose head is already written out, and reads the response head, which
/// is kept as it arrived (see [`send`] for the body and `release`).
pub(crate) async fn send_raw<R>(
    mut conn: Conn,
    request: Outgoing,
    release: R,
) -> Result<(ResponseHead, Body), Failed<Outgoing>>
where
    R: FnOnce(Conn) + Send + Unpin + 'static,
{
    let Outgoing {
        mut head,
        body,
        head_only,
    } = request;
    let written = if body.is_empty() {
        conn.io.write_all(&head).await
    } else if body.len() <= COALESCE {
        head.extend_from_slice(&body);
        conn.io.write_all(&head).await
    } else {
        match conn.io.write_all(&head).await {
            Ok(()) => conn.io.write_all(&body).await,
            Err(error) => Err(error),
        }
    };
    // As in `send`: only a bodiless request is given back to be sent again.
    let unanswered = |error, head, body: Bytes| Failed {
        error,
        unsent: body.is_empty().then_some(Outgoing {
            head,
            body,
            head_only,
        }),
    };
    if let Err(error) = written {
        return Err(unanswered(error, head, body));
    }
    match read_response(conn, head_only, release).await {
        Ok(answer) => Ok(answer),
        Err(Unread::Unanswered(error)) => Err(unanswered(error, head, body)),
        Err(Unread::Failed(error)) => Err(error.into()),
    }
}

/// Whether a request with this method is expected to carry a body (so an empty one is
/// sent with `Content-Length: 0`).
pub(crate) fn expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

/// Why no response head was read.
enum Unread {
    /// Nothing at all came back: the request may be sent again elsewhere.
    Unanswered(io::Error),
    Failed(io::Error),
}

/// Reads the response head; the body follows from the connection as it is polled.
async fn read_response<R>(
    mut conn: Conn,
    head_only: bool,
    release: R,
) -> Result<(ResponseHead, Body), Unread>
where
    R: FnOnce(Conn) + Send + Unpin + 'static,
{
    let mut answered = false;
    loop {
        if let Some(head) = parse_head(&mut conn.buf).map_err(Unread::Failed)? {
            if head.status.is_informational() {
                continue; // 100 Continue, 103 Early Hints: the answer follows
            }
            return respond(conn, head, head_only, release).map_err(Unread::Failed);
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(Unread::Failed(invalid(
                "the upstream's response head is too large",
            )));
        }
        match conn.fill().await {
            Ok(0) => {
                let error = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection before answering",
                );
                return Err(match answered {
                    true => Unread::Failed(error),
                    false => Unread::Unanswered(error),
                });
            }
            Ok(_) => answered = true,
            Err(error) if !answered => return Err(Unread::Unanswered(error)),
            Err(error) => return Err(Unread::Failed(error)),
        }
    }
}

/// A complete response head at the start of `buf`, taken out of it; `None` if more bytes
/// are needed.
fn parse_head(buf: &mut BytesMut) -> io::Result<Option<ResponseHead>> {
    // Left uninitialised: httparse writes the ones it uses (4 KiB not zeroed per response).
    let mut slots =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(invalid(format!("the upstream's response: {error}"))),
    };
    let status = StatusCode::from_u16(response.code.unwrap_or(0))
        .map_err(|_| invalid("the upstream's response has no valid status"))?;
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // One copy of the head, which the header fields are ranges of: the read buffer stays
    // ours to reuse.
    let raw = RawHead::new(
        Bytes::copy_from_slice(&buf[..length]),
        &buf[..length],
        response.headers,
    )
    .map_err(|_| invalid("the upstream's response head could not be read"))?;
    buf.advance(length);
    Ok(Some(ResponseHead {
        status,
        version,
        raw,
    }))
}

fn respond<R>(
    conn: Conn,
    head: ResponseHead,
    head_only: bool,
    release: R,
) -> io::Result<(ResponseHead, Body)>
where
    R: FnOnce(Conn) + Send + Unpin + 'static,
{
    let raw = &head.raw;
    let mut keep_alive = match head.version {
        Version::HTTP_10 => raw.has_token(Name::Connection, "keep-alive"),
        _ => !raw.has_token(Name::Connection, "close"),
    };
    let status = head.status.as_u16();
    let framing = if head_only || status == 204 || status == 304 {
        Framing::Length(0)
    } else if let Some(codings) = raw.values(Name::TransferEncoding).last() {
        if wire::tokens(codings)
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        {
            Framing::Chunked(Chunk::Size)
        } else {
            keep_alive = false;
            Framing::Close
        }
    } else {
        // Digits only, as for requests (`u64::from_str` would take a leading `+`); every
        // Content-Length the same.
        let mut lengths = raw.values(Name::ContentLength).map(wire::decimal);
        match lengths.next() {
            Some(Some(length)) if lengths.all(|other| other == Some(length)) => {
                Framing::Length(length)
            }
            Some(_) => return Err(invalid("the upstream's Content-Length is not valid")),
            None => {
                keep_alive = false;
                Framing::Close
            }
        }
    };
    let mut body = ResponseBody {
        conn: Some(conn),
        framing,
        keep_alive,
        release: Some(release),
    };
    if body.is_done() {
        body.finish();
    }
    Ok((head, Body::new(body)))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Chunk {
    /// Expecting a size line.
    Size,
    /// Inside a chunk: this many bytes left.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// A response body read from its connection as it is polled.
struct ResponseBody<R> {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    release: Option<R>,
}

impl<R: FnOnce(Conn)> ResponseBody<R> {
    fn is_done(&self) -> bool {
        matches!(self.framing, Framing::Length(0) | Framing::Done)
    }

    /// The body has ended: the connection goes back if it may.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let conn = self.conn.take();
        if let (Some(mut conn), Some(release), true) = (conn, self.release.take(), self.keep_alive)
            && conn.buf.is_empty()
        {
            conn.idle_since = Some(std::time::Instant::now());
            // An idle connection keeps no read buffer (the next read allocates one).
            conn.buf = BytesMut::new();
            release(conn);
        }
    }

    /// Reads more from the connection; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        match self.conn.as_mut() {
            Some(conn) => conn.poll_fill(cx),
            None => Poll::Ready(Ok(0)),
        }
    }

    fn buffered(&mut self) -> &mut BytesMut {
        &mut self
            .conn
            .as_mut()
            .expect("a body still being read has its connection")
            .buf
    }
}

/// A CRLF-terminated line at the start of `buf`, taken out (without the CRLF).
fn take_line(buf: &mut BytesMut) -> io::Result<Option<Bytes>> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = buf.split_to(end).freeze();
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > 8 * 1024 => Err(invalid("a chunked body's line is too long")),
        None => Ok(None),
    }
}

impl<R: FnOnce(Conn) + Unpin> http_body::Body for ResponseBody<R> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = &mut *self;
        loop {
            match this.framing {
                Framing::Done | Framing::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    let buf = this.buffered();
                    if !buf.is_empty() {
                        let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                        let data = buf.split_to(take).freeze();
                        this.framing = Framing::Length(left - take as u64);
                        if this.framing == Framing::Length(0) {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Close => {
                    let buf = this.buffered();
                    if !buf.is_empty() {
                        let data = buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(state) => {
                    let buf = this.buffered();
                    match state {
                        Chunk::Size => {
                            if let Some(line) = take_line(buf)? {
                                let digits = line
                                    .split(|b| *b == b';')
                                    .next()
                                    .map(<[u8]>::trim_ascii)
                                    .unwrap_or_default();
                                let size = std::str::from_utf8(digits)
                                    .ok()
                                    .and_then(|d| u64::from_str_radix(d, 16).ok())
                                    .ok_or_else(|| invalid("a chunk size is not valid"))?;
                                this.framing = Framing::Chunked(if size == 0 {
                                    Chunk::Trailers
                                } else {
                                    Chunk::Data(size)
                                });
                                continue;
                            }
                        }
                        Chunk::Data(left) => {
                            if !buf.is_empty() {
                                let take =
                                    buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                                let data = buf.split_to(take).freeze();
                                let left = left - take as u64;
                                this.framing = Framing::Chunked(if left == 0 {
                                    Chunk::DataEnd
                                } else {
                                    Chunk::Data(left)
                                });
                                return Poll::Ready(Some(Ok(Frame::data(data))));
                            }
                        }
                        Chunk::DataEnd => {
                            if buf.len() >= 2 {
                                if &buf[..2] != b"\r\n" {
                                    return Poll::Ready(Some(Err(invalid(
                                        "a chunk does not end with CRLF",
                                    ))));
                                }
                                buf.advance(2);
                                this.framing = Framing::Chunked(Chunk::Size);
                                continue;
                            }
                        }
                        Chunk::Trailers => {
                            // Trailers are read and dropped: HTTP/1.1 clients rarely
                            // expect them, and gRPC (which needs them) goes over HTTP/2.
                            if let Some(line) = take_line(buf)? {
                                if line.is_empty() {
                                    this.finish();
                                    return Poll::Ready(None);
                                }
                                continue;
                            }
                        }
                    }
                }
            }
            // More bytes are needed.
            let read = ready!(this.poll_fill(cx))?;
            if read == 0 {
                if this.framing == Framing::Close {
                    this.keep_alive = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                this.framing = Framing::Done;
                this.conn = None;
                return Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the upstream closed the connection mid-body",
                ))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use http::HeaderMap;

    /// What the upstream received, and how the exchange ended.
    struct Outcome {
        received: Vec<u8>,
        response: io::Result<(StatusCode, HeaderMap, io::Result<Bytes>)>,
        released: bool,
    }

    /// Sends `request` to an upstream that reads until the request ends with `request_end`
    /// and answers `answer` (then closes if `close`).
    async fn exchange(
        request: Request<Body>,
        request_end: &'static [u8],
        answer: &'static [u8],
        close: bool,
    ) -> Outcome {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            while !received.ends_with(request_end) {
                let mut chunk = [0u8; 4096];
                let read = socket.read(&mut chunk).await.unwrap();
                assert_ne!(read, 0, "the client closed before the request ended");
                received.extend_from_slice(&chunk[..read]);
            }
            socket.write_all(answer).await.unwrap();
            if !close {
                // Kept open until the client is done with it.
                let _ = socket.read(&mut [0u8; 1]).await;
            }
            received
        });
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let released = Arc::new(AtomicBool::new(false));
        let flag = released.clone();
        let release = move |conn: Conn| {
            flag.store(true, Ordering::SeqCst);
            drop(conn);
        };
        let response = match send(conn, request, release).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .map_err(io::Error::other);
                Ok((parts.status, parts.headers, body))
            }
            Err(failed) => Err(failed.error),
        };
        let released = released.load(Ordering::SeqCst);
        Outcome {
            received: upstream.await.unwrap(),
            response,
            released,
        }
    }

    fn get(path: &str) -> Request<Body> {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = path.parse().unwrap();
        request
            .headers_mut()
            .insert(http::header::HOST, HeaderValue::from_static("up"));
        request
    }

    fn ok(outcome: &Outcome) -> (StatusCode, &HeaderMap, &Bytes) {
        let (status, headers, body) = outcome.response.as_ref().expect("a response");
        (*status, headers, body.as_ref().expect("a whole body"))
    }

    #[tokio::test]
    async fn a_content_length_body_is_read_and_the_connection_reused() {
        let outcome = exchange(
            get("/a?b=1"),
            b"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: yes\r\n\r\nhello",
            false,
        )
        .await;
        assert_eq!(outcome.received, b"GET /a?b=1 HTTP/1.1\r\nhost: up\r\n\r\n");
        let (status, headers, body) = ok(&outcome);
        assert_eq!(status, 200);
        assert_eq!(headers["x-up"], "yes");
        assert_eq!(&body[..], b"hello");
        assert!(outcome.released);
    }

    #[tokio::test]
    async fn a_chunked_body_is_reassembled_and_its_trailers_dropped() {
        let outcome = exchange(
            get("/"),
            b"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        )
        .await;
        let (status, _, body) = ok(&outcome);
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"hello, world");
        assert!(outcome.released);
    }

    #[tokio::test]
    async fn a_body_without_length_ends_with_the_connection_which_is_not_reused() {
        let outcome = exchange(
            get("/"),
            b"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
            true,
        )
        .await;
        assert_eq!(&ok(&outcome).2[..], b"until the end");
        assert!(!outcome.released);
    }

    #[tokio::test]
    async fn no_content_and_interim_answers_have_no_body() {
        let outcome = exchange(
            get("/"),
            b"\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            false,
        )
        .await;
        let (status, _, body) = ok(&outcome);
        assert_eq!(status, 204);
        assert!(body.is_empty());
        assert!(outcome.released);
    }

    #[tokio::test]
    async fn connection_close_keeps_the_connection_out_of_the_pool() {
        let outcome = exchange(
            get("/"),
            b"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            true,
        )
        .await;
        assert_eq!(&ok(&outcome).2[..], b"ok");
        assert!(!outcome.released);
    }

    #[tokio::test]
    async fn request_bodies_are_sent_with_their_length_or_chunked() {
        let mut known = get("/orders");
        *known.method_mut() = Method::POST;
        *known.body_mut() = Body::from("{\"qty\":2}");
        let outcome = exchange(
            known,
            b"{\"qty\":2}",
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(ok(&outcome).0, 201);
        assert_eq!(
            outcome.received,
            b"POST /orders HTTP/1.1\r\nhost: up\r\ncontent-length: 9\r\n\r\n{\"qty\":2}"
        );

        let mut streamed = get("/orders");
        *streamed.method_mut() = Method::POST;
        let parts = futures_util::stream::iter([
            Ok::<_, io::Error>(Bytes::from_static(b"ab")),
            Ok(Bytes::from_static(b"cde")),
        ]);
        *streamed.body_mut() = Body::from_stream(parts);
        let outcome = exchange(
            streamed,
            b"0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(ok(&outcome).0, 200);
        assert_eq!(
            outcome.received,
            b"POST /orders HTTP/1.1\r\nhost: up\r\ntransfer-encoding: chunked\r\n\r\n\
              2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"
        );

        let mut empty_post = get("/orders");
        *empty_post.method_mut() = Method::POST;
        let outcome = exchange(
            empty_post,
            b"\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .await;
        assert_eq!(
            outcome.received,
            b"POST /orders HTTP/1.1\r\nhost: up\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn malformed_answers_are_errors_not_panics() {
        let cases: [(&'static [u8], &str); 7] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "Content-Length",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\nabc",
                "Content-Length",
            ),
            (b"HTTP/1.1 2000 Huge\r\n\r\n", "response"),
            (b"NOT HTTP\r\n\r\n", "response"),
            (b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", "response"),
            (b"", "before answering"),
        ];
        for (answer, expected) in cases {
            let outcome = exchange(get("/"), b"\r\n\r\n", answer, true).await;
            let error = outcome.response.expect_err("an error");
            assert!(
                error.to_string().contains(expected),
                "{:?}: {error}",
                String::from_utf8_lossy(answer)
            );
            assert!(!outcome.released);
        }

        let bodies: [&'static [u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ];
        for answer in bodies {
            let outcome = exchange(get("/"), b"\r\n\r\n", answer, true).await;
            let (_, _, body) = outcome.response.as_ref().expect("a head");
            assert!(body.is_err(), "{:?}", String::from_utf8_lossy(answer));
            assert!(!outcome.released);
        }
    }

    #[tokio::test]
    async fn a_bodiless_request_on_a_connection_closed_under_it_is_given_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let closer = tokio::spawn(async move {
            for _ in 0..2 {
                let (socket, _) = listener.accept().await.unwrap();
                drop(socket);
            }
        });
        let mut post = get("/orders");
        *post.method_mut() = Method::POST;
        *post.body_mut() = Body::from("x");
        for (request, replayable) in [(get("/a"), true), (post, false)] {
            let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
            tokio::task::yield_now().await;
            let failed = send(conn, request, drop).await.expect_err("no answer");
            assert_eq!(failed.unsent.is_some(), replayable, "{}", failed.error);
            if let Some(unsent) = failed.unsent {
                assert_eq!(unsent.uri(), "/a");
                assert_eq!(unsent.headers()["host"], "up");
            }
        }
        closer.await.unwrap();
    }

    #[tokio::test]
    async fn an_endless_head_is_refused() {
        static ANSWER: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
            let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
            while answer.len() <= MAX_HEAD + 1024 {
                answer.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
            }
            answer
        });
        let outcome = exchange(get("/"), b"\r\n\r\n", &ANSWER, true).await;
        let error = outcome.response.expect_err("an error");
        assert!(error.to_string().contains("too"), "{error}");
    }

    /// Answers one request on a loopback connection with `answer` (written in two parts,
    /// split at `split`), then closes; the client reads the head and the whole body.
    async fn read_hostile(answer: Vec<u8>, split: usize) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            while !received.ends_with(b"\r\n\r\n") {
                let mut chunk = [0u8; 1024];
                match socket.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => received.extend_from_slice(&chunk[..read]),
                }
            }
            let split = split % (answer.len() + 1);
            let _ = socket.write_all(&answer[..split]).await;
            tokio::task::yield_now().await;
            let _ = socket.write_all(&answer[split..]).await;
        });
        let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = "/hostile".parse().unwrap();
        if let Ok(response) = send(conn, request, drop).await {
            let body = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                response.into_body().collect(),
            )
            .await;
            assert!(body.is_ok(), "the body never ended");
        }
        let _ = upstream.await;
    }

    static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    });

    proptest::proptest! {
        /// Hostile upstream answers: any bytes, and a valid chunked answer with bytes
        /// changed or inserted, arriving in two parts, are read as a response or refused
        /// with an error — never a panic, and the body always ends.
        /// Longer runs: `PROPTEST_CASES=20000 cargo test -p msa-gateway --lib hostile_answers`.
        #[test]
        fn hostile_answers_are_read_or_refused(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            edits in proptest::collection::vec(
                (proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), proptest::prelude::any::<bool>()),
                0..10,
            ),
            split in proptest::prelude::any::<usize>(),
        ) {
            let mut answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n".to_vec();
            for (at, byte, insert) in edits {
                let at = at % (answer.len() + 1);
                if insert || at == answer.len() {
                    answer.insert(at, byte);
                } else {
                    answer[at] = byte;
                }
            }
            RUNTIME.block_on(async {
                read_hostile(noise, split).await;
                read_hostile(answer, split).await;
            });
        }
    }
}
