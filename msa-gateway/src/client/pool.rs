//! Per-thread connection pools to upstreams: plain HTTP/1.1 on msa's lean client
//! ([`crate::h1`]), HTTP/1.1 over TLS and WebSocket handshakes on hyper's connection API,
//! and HTTP/2 without TLS (h2c) for gRPC and `h2c://` routes on hyper's.
//!
//! Each worker thread keeps its own idle connections, so taking and returning one is a
//! `Vec` push and pop: no lock, no shared counter, no background task. A connection goes
//! back to the pool when its response body has been read to the end; one whose response
//! was abandoned is closed.
//!
//! A thread opens at most `max_connections` HTTP/1.1 connections to one upstream; past
//! that, requests wait (within their response timeout) for one to come back, first come
//! first served, so a burst of requests does not become a burst of connections.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use msa_core::BoxError;
use tokio::sync::oneshot;

/// Idle connections kept per upstream address, per thread.
const MAX_IDLE: usize = 1024;

thread_local! {
    // foldhash: looked up twice per request; SipHash's flood resistance buys nothing for
    // keys that come from the route file.
    static POOLS: RefCell<HashMap<Box<str>, Upstream, foldhash::fast::RandomState>> =
        RefCell::default();
    /// One multiplexed HTTP/2 connection per upstream.
    static H2: RefCell<HashMap<Box<str>, http2::SendRequest<Body>>> = RefCell::default();
}

/// One upstream's connections on this thread.
#[derive(Default)]
struct Upstream {
    idle: Vec<(Idle, Slot)>,
    /// Connections open or being opened (each held by a [`Slot`]).
    open: usize,
    /// Requests waiting for a connection.
    waiting: VecDeque<oneshot::Sender<Handoff>>,
}

/// An idle connection: msa's lean HTTP/1.1 client ([`crate::h1`], plain TCP), or hyper's
/// (TLS).
enum Idle {
    Lean(crate::h1::client::Conn),
    Hyper(SendRequest<Body>),
}

impl Idle {
    /// Whether it may carry a request: not closed by the upstream meanwhile (`strict`: as
    /// the socket says now, for a request that cannot be sent twice; see
    /// [`crate::h1::client::Conn::is_reusable`]).
    fn is_reusable(&self, strict: bool) -> bool {
        match self {
            Idle::Lean(conn) => conn.is_reusable(strict),
            Idle::Hyper(sender) => sender.is_ready() && !sender.is_closed(),
        }
    }
}

/// What a waiting request is given: a connection, or the right to open one.
enum Handoff {
    Conn(Idle, Slot),
    Open(Slot),
}

impl Handoff {
    /// The upstream it belongs to.
    fn key(&self) -> &str {
        match self {
            Handoff::Conn(_, slot) | Handoff::Open(slot) => &slot.key,
        }
    }
}

/// One counted connection to an upstream; dropping it frees the place for another
/// (and hands that place to the first waiting request).
struct Slot {
    key: Box<str>,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            release(&self.key);
        }
    }
}

/// A counted place is free: the first waiting request that is still there gets it.
fn release(key: &str) {
    loop {
        // `try_with`: a slot may drop while the thread's pools are being torn down.
        let waiter = POOLS
            .try_with(|pools| {
                let mut pools = pools.try_borrow_mut().ok()?;
                let upstream = pools.get_mut(key)?;
                match upstream.waiting.pop_front() {
                    Some(waiter) => Some(waiter), // the place passes on: `open` stays
                    None => {
                        upstream.open = upstream.open.saturating_sub(1);
                        None
                    }
                }
            })
            .ok()
            .flatten();
        let Some(waiter) = waiter else { return };
        let slot = Slot {
            key: key.into(),
            armed: true,
        };
        match waiter.send(Handoff::Open(slot)) {
            Ok(()) => return,
            // That request gave up waiting: try the next one, without dropping the slot
            // (which would release again, recursively).
            Err(Handoff::Open(mut slot) | Handoff::Conn(_, mut slot)) => slot.armed = false,
        }
    }
}

/// How a request gets its connection.
enum Acquired {
    Idle(Idle, Slot),
    /// Open a new connection in this place.
    Open(Slot),
    Wait(oneshot::Receiver<Handoff>),
}

fn acquire(key: &str, max_connections: usize, strict: bool) -> Acquired {
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let upstream = match pools.get_mut(key) {
            Some(upstream) => upstream,
            None => pools.entry(key.into()).or_default(),
        };
        while let Some((conn, slot)) = upstream.idle.pop() {
            if conn.is_reusable(strict) {
                return Acquired::Idle(conn, slot);
            }
            // Closed while idle: its place is free again (counted down here, as the
            // slot's own release would need the map this borrow holds).
            let mut slot = slot;
            slot.armed = false;
            upstream.open = upstream.open.saturating_sub(1);
        }
        if upstream.open < max_connections.max(1) {
            upstream.open += 1;
            return Acquired::Open(Slot {
                key: key.into(),
                armed: true,
            });
        }
        let (sender, receiver) = oneshot::channel();
        upstream.waiting.push_back(sender);
        Acquired::Wait(receiver)
    })
}

/// Sends requests (absolute URIs) over this thread's pooled connections.
#[derive(Clone, Debug)]
pub(crate) struct PoolClient {
    pub(crate) connect_timeout: Duration,
    /// Speak HTTP/2 (prior knowledge) to every upstream.
    pub(crate) h2c: bool,
    /// How `https://` upstreams are verified.
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The most HTTP/1.1 connections this thread opens to one upstream.
    pub(crate) max_connections: usize,
}

impl tower::Service<Request<Body>> for PoolClient {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.clone();
        Box::pin(async move {
            send(
                request,
                client.connect_timeout,
                client.h2c,
                &client.tls,
                client.max_connections,
            )
            .await
        })
    }
}

/// Whether a request is gRPC (which needs HTTP/2 and its `te: trailers`).
fn is_grpc(request: &Request<Body>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Sends `request` (an absolute `http://host:port/...` URI) and returns the response: over
/// HTTP/2 when `h2c` is set or the request is gRPC, else over HTTP/1.1.
pub(crate) async fn send(
    mut request: Request<Body>,
    connect_timeout: Duration,
    h2c: bool,
    tls: &Arc<rustls::ClientConfig>,
    max_connections: usize,
) -> Result<Response<Body>, BoxError> {
    let grpc = is_grpc(&request);
    if h2c || grpc {
        if grpc {
            request
                .headers_mut()
                .insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        return Box::pin(send_h2(request, connect_timeout)).await;
    }
    let secure = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    // Cheap to keep (shared bytes): a request that cannot reach this upstream is given
    // back as it came, for the balancer to send elsewhere.
    let absolute = request.uri().clone();
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    let authority = parts
        .authority
        .take()
        .ok_or("the upstream URI has no host")?;
    // Pooled apart: the same address over TLS and in the clear are different connections.
    let pool_key: std::borrow::Cow<'_, str> = if secure {
        format!("https://{authority}").into()
    } else {
        authority.as_str().into()
    };
    *request.uri_mut() = match parts.path_and_query {
        Some(path_and_query) => Uri::from(path_and_query),
        None => Uri::from_static("/"),
    };
    let host_added = !request.headers().contains_key(HOST);
    if host_added {
        request
            .headers_mut()
            .insert(HOST, HeaderValue::from_str(authority.as_str())?);
    }
    let authority = authority.as_str();
    // A request with a body cannot be sent twice: an idle connection is checked with the
    // socket itself before it carries one.
    let strict = !http_body::Body::is_end_stream(request.body());
    if request.headers().contains_key(http::header::UPGRADE) {
        // The connection will belong to the upgraded protocol: one of its own, on hyper.
        let mut sender = Box::pin(open_hyper(authority, secure, connect_timeout, tls)).await?;
        return Ok(sender.send_request(request).await?.map(Body::new));
    }
    let destination = Destination {
        key: &pool_key,
        authority,
        secure,
        connect_timeout,
        tls,
        max_connections,
    };
    loop {
        let (conn, slot, fresh) = match destination.checkout(strict).await {
            Ok(checked_out) => checked_out,
            Err(error) => {
                // Nothing of it was written: back as it came, with the error.
                *request.uri_mut() = absolute;
                if host_added {
                    request.headers_mut().remove(HOST);
                }
                return Err(Box::new(msa_discovery::balance::Unsent::new(
                    request, error,
                )));
            }
        };
        match conn {
            Idle::Lean(conn) => {
                let release = move |conn| give_back(Idle::Lean(conn), slot);
                // Boxed: the futures above it stay small, and each level's await moves
                // less (they are moved whole, at every level, on every request).
                match Box::pin(crate::h1::client::send(conn, request, release)).await {
                    Ok(response) => return Ok(response),
                    // An idle connection the upstream had closed: send on another one.
                    Err(crate::h1::client::Failed {
                        unsent: Some(unsent),
                        ..
                    }) if !fresh => request = unsent,
                    Err(failed) => return Err(failed.error.into()),
                }
            }
            Idle::Hyper(mut sender) => match sender.try_send_request(request).await {
                Ok(response) => return Ok(pooled(response, sender, slot)),
                Err(mut error) => match error.take_message() {
                    // An idle connection the upstream had closed, found before anything
                    // was written: send on a new one.
                    Some(unsent) if !fresh => request = unsent,
                    _ => return Err(error.into_error().into()),
                },
            },
        }
    }
}

/// Sends a request already written out (see [`crate::h1::client::send_raw`]) to `authority` over
/// plain HTTP/1.1 on this thread's pooled connections; the response head comes back as
/// the upstream sent it.
pub(crate) async fn send_raw(
    authority: &str,
    mut request: crate::h1::client::Outgoing,
    connect_timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
    max_connections: usize,
) -> Result<(crate::h1::wire::ResponseHead, Body), BoxError> {
    let destination = Destination {
        key: authority,
        authority,
        secure: false,
        connect_timeout,
        tls,
        max_connections,
    };
    loop {
        let strict = !request.body.is_empty();
        let (conn, slot, fresh) = destination.checkout(strict).await?;
        let Idle::Lean(conn) = conn else {
            return Err("a plain upstream's pool holds a TLS connection".into());
        };
        let release = move |conn| give_back(Idle::Lean(conn), slot);
        match Box::pin(crate::h1::client::send_raw(conn, request, release)).await {
            Ok(answer) => return Ok(answer),
            Err(crate::h1::client::Failed {
                unsent: Some(unsent),
                ..
            }) if !fresh => request = unsent,
            Err(failed) => return Err(failed.error.into()),
        }
    }
}

/// Where a request goes, for taking a connection from the pool.
struct Destination<'a> {
    /// The pool's key: the authority, or `https://` and the authority.
    key: &'a str,
    authority: &'a str,
    secure: bool,
    connect_timeout: Duration,
    tls: &'a Arc<rustls::ClientConfig>,
    max_connections: usize,
}

impl Destination<'_> {
    /// A connection to send on: an idle one that is still open, or a new one (`true`),
    /// waiting for a place when `max_connections` are open. `strict` for a request that
    /// cannot be sent again: an idle connection's socket is asked whether the upstream
    /// closed it.
    async fn checkout(&self, strict: bool) -> Result<(Idle, Slot, bool), BoxError> {
        loop {
            let acquired = match acquire(self.key, self.max_connections, strict) {
                Acquired::Wait(handoff) => match handoff.await {
                    // Closed while it was being handed over: its slot drops (the place
                    // goes on), and another try.
                    Ok(Handoff::Conn(conn, _)) if !conn.is_reusable(strict) => continue,
                    Ok(Handoff::Conn(conn, slot)) => Acquired::Idle(conn, slot),
                    Ok(Handoff::Open(slot)) => Acquired::Open(slot),
                    Err(_) => return Err("the connection pool was dropped".into()),
                },
                acquired => acquired,
            };
            match acquired {
                // `acquire` checked it.
                Acquired::Idle(conn, slot) => return Ok((conn, slot, false)),
                Acquired::Open(slot) => {
                    // On failure the slot drops here, and its place goes to the next one.
                    let conn = if self.secure {
                        Idle::Hyper(
                            Box::pin(connect_tls(self.authority, self.connect_timeout, self.tls))
                                .await?,
                        )
                    } else {
                        Idle::Lean(crate::h1::client::Conn::new(
                            Box::pin(tcp(self.authority, self.connect_timeout)).await?,
                        ))
                    };
                    return Ok((conn, slot, true));
                }
                Acquired::Wait(_) => unreachable!("waited for above"),
            }
        }
    }
}

/// A hyper HTTP/1.1 connection (TLS when `secure`), driven by a task of its own.
async fn open_hyper(
    authority: &str,
    secure: bool,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<SendRequest<Body>, BoxError> {
    if secure {
        connect_tls(authority, timeout, tls).await
    } else {
        connect(authority, timeout).await
    }
}

async fn send_h2(
    mut request: Request<Body>,
    connect_timeout: Duration,
) -> Result<Response<Body>, BoxError> {
    let authority = authority_of(&request)?;
    *request.version_mut() = http::Version::HTTP_2;
    // HTTP/2 carries the authority in the URI; a Host header would be a second one.
    request.headers_mut().remove(HOST);
    let cached = H2.with(|h2| {
        h2.borrow()
            .get(&authority)
            .filter(|sender| !sender.is_closed())
            .cloned()
    });
    let mut sender = match cached {
        Some(sender) => sender,
        None => {
            let sender = connect_h2(&authority, connect_timeout).await?;
            H2.with(|h2| h2.borrow_mut().insert(authority.clone(), sender.clone()));
            sender
        }
    };
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    Ok(response.map(Body::new))
}

async fn connect_h2(
    authority: &str,
    timeout: Duration,
) -> Result<http2::SendRequest<Body>, BoxError> {
    let stream = tcp(authority, timeout).await?;
    let (sender, connection) = http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream HTTP/2 connection closed with an error");
        }
    });
    Ok(sender)
}

fn authority_of(request: &Request<Body>) -> Result<Box<str>, BoxError> {
    Ok(request
        .uri()
        .authority()
        .ok_or("the upstream URI has no host")?
        .as_str()
        .into())
}

/// A connection whose response was read to the end: to the first waiting request, else
/// idle.
fn give_back(conn: Idle, slot: Slot) {
    if let Idle::Hyper(sender) = &conn
        && sender.is_closed()
    {
        return; // the slot drops: its place is free
    }
    let mut handoff = Some(Handoff::Conn(conn, slot));
    while let Some(given) = handoff.take() {
        // One look at the pool: idle at once when nobody waits (the common case).
        let (waiter, unkept) = POOLS.with(|pools| {
            let mut pools = pools.borrow_mut();
            let Some(upstream) = pools.get_mut(given.key()) else {
                return (None, Some(given));
            };
            if let Some(waiter) = upstream.waiting.pop_front() {
                return (Some(waiter), Some(given));
            }
            match given {
                Handoff::Conn(conn, slot) if upstream.idle.len() < MAX_IDLE => {
                    upstream.idle.push((conn, slot));
                    (None, None)
                }
                given => (None, Some(given)),
            }
        });
        match (waiter, unkept) {
            // That request may have given up waiting: then the next one.
            (Some(waiter), Some(given)) => handoff = waiter.send(given).err(),
            // Not kept: dropped here, outside the borrow, so its slot releases.
            (_, unkept) => drop(unkept),
        }
    }
}

/// A TCP connection to `authority` within `timeout`; failing, a [`ConnectError`]: nothing
/// of the request was sent.
///
/// [`ConnectError`]: msa_core::http::client::ConnectError
async fn tcp(authority: &str, timeout: Duration) -> Result<tokio::net::TcpStream, BoxError> {
    use msa_core::http::client::ConnectError;
    let connecting = tokio::net::TcpStream::connect(authority);
    let stream = match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            let message = format!("connecting to {authority}: {error}");
            return Err(Box::new(ConnectError::new(message, Some(error))));
        }
        Err(_) => {
            let message = format!("connecting to {authority} took longer than {timeout:?}");
            return Err(Box::new(ConnectError::new(message, None)));
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect(authority: &str, timeout: Duration) -> Result<SendRequest<Body>, BoxError> {
    let stream = tcp(authority, timeout).await?;
    handshake(stream).await
}

/// A TLS connection (verified against the configured roots), then HTTP/1.1 on it.
async fn connect_tls(
    authority: &str,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<SendRequest<Body>, BoxError> {
    let (name, address) = super::tls::server_name(authority)?;
    let stream = tcp(&address, timeout).await?;
    let stream = super::tls::handshake(stream, name, authority, timeout, tls).await?;
    handshake(stream).await
}

async fn handshake<S>(stream: S) -> Result<SendRequest<Body>, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::Builder::new()
        .max_buf_size(16 * 1024)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection closed with an error");
        }
    });
    Ok(sender)
}

fn pooled(response: Response<Incoming>, sender: SendRequest<Body>, slot: Slot) -> Response<Body> {
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // The connection now belongs to the upgraded protocol (and no longer counts).
        return response.map(Body::new);
    }
    response.map(|body| {
        if http_body::Body::is_end_stream(&body) {
            give_back(Idle::Hyper(sender), slot);
            Body::new(body)
        } else {
            Body::new(PooledBody {
                body,
                owner: Some((sender, slot)),
            })
        }
    })
}

/// A response body that returns its connection to the pool once read to the end.
struct PooledBody {
    body: Incoming,
    owner: Option<(SendRequest<Body>, Slot)>,
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.body.is_end_stream(),
            _ => false,
        };
        if done && let Some((sender, slot)) = this.owner.take() {
            give_back(Idle::Hyper(sender), slot);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Reads one request head from `socket` and answers `body` with keep-alive.
    async fn answer(socket: &mut tokio::net::TcpStream, body: &str) {
        let mut received = Vec::new();
        while !received.ends_with(b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let read = socket.read(&mut chunk).await.unwrap();
            assert_ne!(read, 0, "the pool closed the connection before asking");
            received.extend_from_slice(&chunk[..read]);
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(answer.as_bytes()).await.unwrap();
    }

    async fn get(addr: std::net::SocketAddr, tls: &Arc<rustls::ClientConfig>) -> Bytes {
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = format!("http://{addr}/x").parse().unwrap();
        let response = send(request, Duration::from_secs(1), false, tls, 4)
            .await
            .expect("an answer");
        response.into_body().collect().await.unwrap().to_bytes()
    }

    /// A pooled connection the upstream closed while it sat idle is not used again: the
    /// next request goes out on a new one.
    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_used_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (close, closing) = oneshot::channel::<()>();
        let (closed, is_closed) = oneshot::channel::<()>();
        let upstream = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            answer(&mut first, "first").await;
            // Closed only once the pool holds it idle.
            closing.await.unwrap();
            drop(first);
            closed.send(()).unwrap();
            let (mut second, _) = listener.accept().await.unwrap();
            answer(&mut second, "second").await;
        });
        let tls = Arc::new(crate::client::tls::tls_config(&Default::default()).unwrap());
        assert_eq!(&get(addr, &tls).await[..], b"first");
        close.send(()).unwrap();
        is_closed.await.unwrap();
        // The close is in the socket's queue: a few turns of the runtime let the idle
        // connection see it.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(&get(addr, &tls).await[..], b"second");
        upstream.await.unwrap();
    }

    /// The pool sends again, on a new connection, a request whose pooled connection the
    /// upstream had closed while it was idle.
    #[tokio::test]
    async fn the_pool_resends_on_a_new_connection_when_the_idle_one_was_closed() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // One answer per connection, each time announcing keep-alive, then closing.
        let upstream = tokio::spawn(async move {
            let mut connections = 0;
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                connections += 1;
                let mut received = Vec::new();
                while !received.ends_with(b"\r\n\r\n") {
                    let mut chunk = [0u8; 1024];
                    match socket.read(&mut chunk).await.unwrap() {
                        0 => break,
                        read => received.extend_from_slice(&chunk[..read]),
                    }
                }
                if received.is_empty() {
                    continue;
                }
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{connections}");
                socket.write_all(answer.as_bytes()).await.unwrap();
                if connections == 2 {
                    return connections;
                }
            }
        });
        let tls = Arc::new(super::super::tls::tls_config(&Default::default()).unwrap());
        for expected in ["1", "2"] {
            let mut request = Request::new(Body::empty());
            *request.uri_mut() = format!("http://{addr}/x").parse().unwrap();
            let response = send(request, std::time::Duration::from_secs(1), false, &tls, 4)
                .await
                .expect("an answer");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], expected.as_bytes());
            // The upstream's close reaches the pooled connection.
            tokio::task::yield_now().await;
        }
        assert_eq!(upstream.await.unwrap(), 2);
    }
}
