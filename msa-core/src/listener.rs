//! What every listener bounds, and where the management endpoints are served.
//!
//! A client can hold a connection open without finishing its request head, keep idle
//! connections open by the thousand, or arrive when the process has run out of file
//! descriptors. Every msa listener therefore applies [`Limits`]:
//!
//! | limit | default | past it |
//! |---|---|---|
//! | header-read timeout | 30 s | the connection is closed (HTTP/1: the head must be complete in time, counted from when the server waits for it) |
//! | idle timeout | 60 s | a connection with no request in flight for this long is closed (HTTP/2 with GOAWAY) |
//! | max connections | 10,000 | further connections wait in the kernel's backlog until one closes |
//!
//! and an [`Acceptor`] that retries failed `accept()` calls after a doubling pause (5 ms up
//! to 1 s) instead of spinning when descriptors run out.
//!
//! [`Listeners`] says what a process serves where: the main listener, and optionally a
//! management listener (`--management-bind`, Spring Boot's `management.server.port`) that
//! takes every actuator endpoint but the probes (`/actuator/health…`, `/actuator/info`),
//! which stay on the main listener too. [`Shutdown::serve_with`](crate::shutdown::Shutdown::serve_with)
//! serves them.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tower::ServiceExt;

use crate::backoff::Backoff;

/// How long a client may take to send a request head, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may stay open with no request in flight, by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How many connections one listener serves at once, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The bounds one listener applies; see the [module docs](self).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request head.
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// How many connections are served at once; more wait in the backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Accepts connections, at most `max_connections` open at once, pausing after errors.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    max_connections: usize,
    backoff: Backoff,
    /// Whether the cap has been reported since it was last below it: once per time full,
    /// not once per connection that waits.
    reported_full: bool,
}

/// Held while an accepted connection is open; dropping it lets another in.
#[derive(Debug)]
pub struct ConnectionPermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl Acceptor {
    /// Accepts on `listener`, at most `max_connections` (at least 1) open at once.
    pub fn new(listener: TcpListener, max_connections: usize) -> Self {
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Acceptor {
            listener,
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            backoff: Backoff::new(Duration::from_millis(5), Duration::from_secs(1)),
            reported_full: false,
        }
    }

    /// The address listened on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection, once fewer than the maximum are open. An error that concerns
    /// one connection (reset before it was accepted) is skipped; any other (no file
    /// descriptors, no memory) is logged and retried after a pause that doubles up to 1 s.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr, ConnectionPermit) {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.reported_full = false;
                permit
            }
            Err(_) => {
                if !std::mem::replace(&mut self.reported_full, true) {
                    tracing::warn!(
                        max_connections = self.max_connections,
                        "connection limit reached; new connections wait until one closes"
                    );
                }
                match self.permits.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, remote)) => {
                    self.backoff.reset();
                    return (stream, remote, ConnectionPermit(permit));
                }
                Err(error) if concerns_one_connection(&error) => {}
                Err(error) => {
                    let pause = self.backoff.next_delay();
                    tracing::warn!(%error, ?pause, "accepting a connection failed; pausing");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

fn concerns_one_connection(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        error.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// Whether `path` is a probe: `/actuator/health`, its groups and components, and
/// `/actuator/info`, which every listener serves.
pub fn is_probe_path(path: &str) -> bool {
    path == "/actuator/health" || path.starts_with("/actuator/health/") || path == "/actuator/info"
}

/// Whether `path` belongs on the management listener when there is one: every actuator
/// endpoint but the probes.
pub fn is_management_path(path: &str) -> bool {
    (path == "/actuator" || path.starts_with("/actuator/")) && !is_probe_path(path)
}

/// What a process serves where: an app on its main listener and, optionally, the actuator
/// on a management listener of its own. See the [module docs](self).
#[derive(Debug)]
pub struct Listeners {
    pub(crate) main: TcpListener,
    pub(crate) management: Option<TcpListener>,
    pub(crate) app: Router,
    pub(crate) limits: Limits,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) management_tls: Option<Arc<rustls::ServerConfig>>,
}

impl Listeners {
    /// `app` on `main`, with default [`Limits`].
    pub fn new(main: TcpListener, app: Router) -> Self {
        Listeners {
            main,
            management: None,
            app,
            limits: Limits::default(),
            tls: None,
            management_tls: None,
        }
    }

    /// Serves the main listener over TLS (see [`ServerTls`](crate::tls::ServerTls)): the
    /// handshake must finish within the header-read timeout, and HTTP/2 is chosen by ALPN.
    /// A client's certificates reach handlers as [`PeerCertificates`].
    pub fn tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = config;
        self
    }

    /// Serves the management listener over TLS (Spring Boot's `management.server.ssl`).
    pub fn management_tls(mut self, config: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.management_tls = config;
        self
    }

    /// Serves the actuator's endpoints on `listener` (all of them) and only the probes of
    /// them on the main listener.
    pub fn management(mut self, listener: Option<TcpListener>) -> Self {
        self.management = listener;
        self
    }

    /// The bounds every listener applies.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// Which of an app's routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Everything: the only listener.
    All,
    /// All but the management endpoints.
    Main,
    /// The actuator's endpoints only.
    Management,
}

impl Part {
    fn serves(self, path: &str) -> bool {
        match self {
            Part::All => true,
            Part::Main => !is_management_path(path),
            Part::Management => path == "/actuator" || path.starts_with("/actuator/"),
        }
    }
}

/// Serves `app`'s `part` on `acceptor` until `stop` turns true, then closes every
/// connection once its in-flight requests are answered, and returns when all are closed.
pub(crate) async fn serve(
    mut acceptor: Acceptor,
    app: Router,
    part: Part,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stop: watch::Receiver<bool>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = Arc::new(builder());
    // Every connection's task holds a sender: when all are gone, all are closed.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let (stream, remote, permit) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let mut service = Connected {
            app: app.clone(),
            part,
            remote,
            peer: None,
        };
        let builder = builder.clone();
        let mut stop = stop.clone();
        let open = open.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let (_open, _permit) = (open, permit);
            let stopping = async move {
                let _ = stop.wait_for(|stop| *stop).await;
            };
            let Some(tls) = tls else {
                return serve_connection(&builder, stream, service, limits, stopping).await;
            };
            let Some(stream) = accept_tls(&tls, stream, remote, limits).await else {
                return;
            };
            service.peer = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|certificates| PeerCertificates(certificates.to_vec().into()));
            serve_connection(&builder, stream, service, limits, stopping).await;
        });
    }
    drop(acceptor);
    drop(open);
    let _ = all_closed.recv().await;
}

/// The TLS handshake of a client connection from `remote`, bounded like a request head
/// (`limits.header_read_timeout`): a client that connects and stays silent holds the
/// connection no longer. `None` (logged at debug) when it fails or takes too long.
pub async fn accept_tls(
    tls: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    limits: Limits,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(limits.header_read_timeout, tls.accept(stream)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(error)) => {
            tracing::debug!(%remote, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            None
        }
    }
}

/// A connection builder for [`serve_connection`]: HTTP/1.1 and HTTP/2 (by preface), with
/// the timer that both need; customise it before use.
pub fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head's deadline is kept by `serve_connection`, from the head's first byte.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves one connection with `service` within `limits`' timeouts, until the client
/// closes it, it stays idle too long, a request head takes too long to arrive, or `stop`
/// completes (then in-flight requests are answered first; HTTP/2 gets a GOAWAY).
///
/// A request head is waited for from its first byte, for the header-read timeout; with
/// no request in flight and no byte of the next one, the connection is idle.
pub async fn serve_connection<I, S>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    limits: Limits,
    stop: impl Future<Output = ()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let activity = Activity::default();
    let watched = Watched {
        io,
        activity: activity.clone(),
    };
    let counted = Counting {
        service,
        activity: activity.clone(),
    };
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(watched), counted);
    let mut connection = std::pin::pin!(connection);
    let ended = tokio::select! {
        result = connection.as_mut() => Some(result),
        () = stop => None,
        quiet = activity.quiet(limits) => match quiet {
            // Nothing in flight: nothing is lost by closing at once.
            Quiet::SlowHead => return,
            Quiet::Idle => None,
        },
    };
    let result = match ended {
        Some(result) => result,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// One connection's view of an app.
#[derive(Clone)]
struct Connected {
    app: Router,
    part: Part,
    remote: SocketAddr,
    peer: Option<PeerCertificates>,
}

/// The certificate chain a client presented over TLS (leaf first), in each request's
/// extensions when the listener asks for client certificates.
#[derive(Clone, Debug)]
pub struct PeerCertificates(pub Arc<[rustls::pki_types::CertificateDer<'static>]>);

type Answer = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

impl tower::Service<Request<Body>> for Connected {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if !self.part.serves(request.uri().path()) {
            let refused = match self.part {
                Part::Management => "not found on the management listener",
                _ => "not found (served on the management listener)",
            };
            return Box::pin(std::future::ready(Ok(
                (StatusCode::NOT_FOUND, refused).into_response()
            )));
        }
        request.extensions_mut().insert(ConnectInfo(self.remote));
        if let Some(peer) = &self.peer {
            request.extensions_mut().insert(peer.clone());
        }
        Box::pin(self.app.clone().oneshot(request))
    }
}

/// A tower service as hyper calls it, each request counted in flight until its response
/// has been sent.
#[derive(Clone)]
struct Counting<S> {
    service: S,
    activity: Activity,
}

impl<S> hyper::service::Service<Request<Incoming>> for Counting<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = self.activity.begin();
        let answer = self.service.clone().oneshot(request.map(Body::new));
        Box::pin(async move {
            let response = answer.await?;
            Ok(busy.until_sent(response))
        })
    }
}

/// How many requests one connection has in flight, and whether the next one has begun to
/// arrive, so a connection idle or slow for too long can be closed.
#[derive(Clone, Debug, Default)]
struct Activity {
    inner: Arc<Counted>,
}

#[derive(Debug, Default)]
struct Counted {
    busy: AtomicUsize,
    /// Bytes have arrived since the last request was answered: a head is arriving.
    arriving: AtomicBool,
    changed: Notify,
}

/// Why a connection is closed for its quiet.
#[derive(Debug, PartialEq, Eq)]
enum Quiet {
    /// No request in flight and none arriving for the idle timeout.
    Idle,
    /// A request head began to arrive and did not complete in the header-read timeout.
    SlowHead,
}

impl Activity {
    /// A request has arrived; it is in flight until the returned guard is dropped.
    fn begin(&self) -> Busy {
        self.inner.arriving.store(false, Ordering::Release);
        if self.inner.busy.fetch_add(1, Ordering::AcqRel) == 0 {
            self.inner.changed.notify_waiters();
        }
        Busy(self.inner.clone())
    }

    /// Bytes were read from the client.
    fn read(&self) {
        if self.inner.busy.load(Ordering::Acquire) == 0
            && !self.inner.arriving.swap(true, Ordering::AcqRel)
        {
            self.inner.changed.notify_waiters();
        }
    }

    /// Completes once the connection has been quiet too long.
    async fn quiet(&self, limits: Limits) -> Quiet {
        loop {
            let changed = self.inner.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if self.inner.busy.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            let (wait, why) = if self.inner.arriving.load(Ordering::Acquire) {
                (limits.header_read_timeout, Quiet::SlowHead)
            } else {
                (limits.idle_timeout, Quiet::Idle)
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => return why,
                () = changed => {}
            }
        }
    }
}

/// One request in flight.
#[derive(Debug)]
struct Busy(Arc<Counted>);

impl Busy {
    /// `response`, with this request counted in flight until its body has been sent.
    fn until_sent(self, response: Response<Body>) -> Response<Body> {
        response.map(|body| Body::new(Tracked { body, _busy: self }))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.changed.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection's IO, telling its [`Activity`] when bytes arrive.
    struct Watched<I> {
        #[pin]
        io: I,
        activity: Activity,
    }
}

impl<I: AsyncRead> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let read = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read();
        }
        read
    }
}

impl<I: AsyncWrite> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection counted busy until it is dropped.
    struct Tracked {
        #[pin]
        body: Body,
        _busy: Busy,
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_stay_on_the_main_listener_and_the_rest_moves() {
        for probe in [
            "/actuator/health",
            "/actuator/health/readiness",
            "/actuator/info",
        ] {
            assert!(Part::Main.serves(probe) && Part::Management.serves(probe));
        }
        for moved in [
            "/actuator",
            "/actuator/prometheus",
            "/actuator/gateway/routes",
        ] {
            assert!(!Part::Main.serves(moved) && Part::Management.serves(moved));
        }
        assert!(Part::Main.serves("/orders") && !Part::Management.serves("/orders"));
        assert!(Part::Main.serves("/actuatorx") && !Part::Management.serves("/actuatorx"));
        assert!(Part::All.serves("/actuator/prometheus"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_with_no_request_in_flight_or_arriving() {
        let activity = Activity::default();
        let busy = activity.begin();
        let quiet = tokio::spawn({
            let activity = activity.clone();
            async move { activity.quiet(Limits::default()).await }
        });
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(
            !quiet.is_finished(),
            "busy for 10 minutes, and still not idle"
        );
        drop(busy);
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert!(!quiet.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(quiet.await.unwrap(), Quiet::Idle, "idle for 61 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_has_the_header_read_timeout_from_its_first_byte() {
        let activity = Activity::default();
        let quiet = tokio::spawn({
            let activity = activity.clone();
            async move { activity.quiet(Limits::default()).await }
        });
        tokio::time::sleep(Duration::from_secs(50)).await;
        activity.read(); // 50 s idle, then the first byte of a head
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!quiet.is_finished());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(quiet.await.unwrap(), Quiet::SlowHead);
        // A head that completes in time starts a request, which ends the arrival.
        let activity = Activity::default();
        activity.read();
        drop(activity.begin());
        assert!(!activity.inner.arriving.load(Ordering::Acquire));
    }
}
