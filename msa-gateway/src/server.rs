//! Serving: one current-thread runtime per worker, each accepting on its own
//! `SO_REUSEPORT` listener and keeping its own upstream connection pool, so requests never
//! cross threads and pools are never contended. HTTP/1.1 requests, over TCP or TLS, are
//! read and answered by the gateway's own connection loop (`http1`); HTTP/2, upgrades and
//! streamed request bodies by hyper.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use msa_core::listener::{self, Acceptor, Limits, is_management_path};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::gateway::Gateway;
use crate::h1::server::{self as http1, End, RawRequest, Reply};

/// A running server: stop it with [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

/// How a [`Server`] serves, besides where.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Worker threads, each with its own listener, runtime and upstream pool.
    pub workers: usize,
    /// Timeouts and the connection cap; the cap is shared out between the workers.
    pub limits: Limits,
    /// Whether the actuator has a management listener of its own: then only its probes
    /// (`/actuator/health…`, `/actuator/info`) are answered here.
    pub management_elsewhere: bool,
}

impl Options {
    /// `workers` workers, default limits, the whole actuator on this listener.
    pub fn new(workers: usize) -> Self {
        Options {
            workers,
            limits: Limits::default(),
            management_elsewhere: false,
        }
    }
}

impl Server {
    /// Binds `bind` once per worker (`SO_REUSEPORT`) and serves `gateway`, with `admin`
    /// (the actuator) answering under `/actuator`. Returns once every worker listens.
    pub fn start(
        gateway: Gateway,
        admin: axum::Router,
        bind: SocketAddr,
        workers: usize,
    ) -> std::io::Result<Server> {
        Server::start_with(gateway, admin, bind, Options::new(workers))
    }

    /// As [`start`](Self::start), with `options`.
    pub fn start_with(
        gateway: Gateway,
        admin: axum::Router,
        bind: SocketAddr,
        options: Options,
    ) -> std::io::Result<Server> {
        let workers = options.workers.max(1);
        let first = listener(bind)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..workers {
            listeners.push(listener(addr)?);
        }
        let (stop, stopped) = watch::channel(false);
        let admin = Arc::new(admin);
        let mut handles = Vec::with_capacity(workers);
        for (n, std_listener) in listeners.into_iter().enumerate() {
            let gateway = gateway.clone();
            let admin = admin.clone();
            let stopped = stopped.clone();
            let handle = std::thread::Builder::new()
                .name(format!("msa-gateway-{n}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            tracing::error!(%error, "a worker could not start its runtime");
                            return;
                        }
                    };
                    runtime.block_on(worker(gateway, admin, std_listener, options, stopped));
                })?;
            handles.push(handle);
        }
        Ok(Server {
            addr,
            stop,
            workers: handles,
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (up to `drain`), and returns when
    /// every worker has stopped.
    pub fn stop(self, drain: Duration) {
        let _ = self.stop.send(true);
        let deadline = std::time::Instant::now() + drain + Duration::from_secs(1);
        for worker in self.workers {
            while !worker.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if worker.is_finished() {
                let _ = worker.join();
            }
        }
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// What answers a client's requests: the actuator under `/actuator`, the gateway elsewhere.
#[derive(Clone, Debug)]
struct Handler {
    gateway: Gateway,
    admin: Arc<axum::Router>,
    remote: SocketAddr,
    /// Whether only the actuator's probes are answered here.
    probes_only: bool,
    /// Whether the connection is TLS the gateway terminated.
    tls: bool,
}

/// A request's future, on the heap: the connection's task stays small between requests.
type Answer<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// The same for a request hyper serves.
type HttpAnswer<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

impl Handler {
    /// A request from the gateway's own loop: proxied as it arrived where it can be.
    fn call(&self, mut request: RawRequest) -> Answer<'_> {
        request.tls = self.tls;
        let target = request.target_bytes();
        if target.starts_with(b"/") && !target.starts_with(b"/actuator") {
            // The gateway's future boxed itself, rather than an `async fn` around it
            // (which would be as large, and be moved whole into the box).
            return Box::pin(self.gateway.handle_raw(request, self.remote));
        }
        match request.into_request() {
            Ok(request) => {
                let answer = self.call_http(request);
                Box::pin(async move { Reply::Http(answer.await) })
            }
            Err(reason) => {
                let refused = crate::error::error_response(StatusCode::BAD_REQUEST, reason);
                Box::pin(std::future::ready(Reply::Http(refused)))
            }
        }
    }

    fn call_http(&self, mut request: Request<Body>) -> HttpAnswer<'_> {
        if self.tls {
            request.extensions_mut().insert(http1::OverTls);
        }
        let path = request.uri().path();
        if self.probes_only && is_management_path(path) {
            let elsewhere = crate::error::error_response(
                StatusCode::NOT_FOUND,
                "not found (served on the management listener)",
            );
            return Box::pin(std::future::ready(elsewhere));
        }
        if path.starts_with("/actuator") {
            let admin = (*self.admin).clone();
            Box::pin(async move {
                match admin.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            })
        } else {
            Box::pin(self.gateway.handle(request, self.remote))
        }
    }
}

async fn worker(
    gateway: Gateway,
    admin: Arc<axum::Router>,
    std_listener: std::net::TcpListener,
    options: Options,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "a worker could not listen");
            return;
        }
    };
    let limits = options.limits;
    let mut acceptor = Acceptor::new(
        listener,
        limits.max_connections.div_ceil(options.workers.max(1)),
    );
    let mut builder = listener::builder();
    // Read buffers start at 8 KiB and may grow to this; hyper's default (~400 KiB) lets a
    // thousand idle keep-alive connections hold megabytes.
    builder.http1().max_buf_size(16 * 1024);
    let builder = Arc::new(builder);
    let bounds = http1::Bounds {
        // A request head may be twice the largest header allowed, and 64 KiB in any case.
        max_head: (2 * gateway.max_header_size()).max(64 * 1024),
        header_read: limits.header_read_timeout,
        idle: limits.idle_timeout,
    };
    // Every connection task holds a sender; when all are gone, every connection is closed.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    // On this worker's thread: its metrics buffers reach the scrape when it is idle too.
    let flusher = tokio::spawn(crate::observe::metrics::flush_when_asked());
    // And its access log lines reach the log within the flush interval.
    let access_flusher = gateway.access_log().map(|log| {
        let every = log.flush_interval();
        let gateway = gateway.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                if let Some(log) = gateway.access_log() {
                    log.flush();
                }
            }
        })
    });
    let tls = gateway.termination().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (stream, remote, permit) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = Handler {
            gateway: gateway.clone(),
            admin: admin.clone(),
            remote,
            probes_only: options.management_elsewhere,
            tls: tls.is_some(),
        };
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        let open = open.clone();
        if let Some(tls) = &tls {
            let tls = tls.clone();
            tokio::spawn(async move {
                let (_open, _permit) = (open, permit);
                Box::pin(serve_tls(
                    tls,
                    stream,
                    handler,
                    (&builder, bounds),
                    limits,
                    &mut stopped,
                ))
                .await;
            });
            continue;
        }
        tokio::spawn(async move {
            let (_open, _permit) = (open, permit);
            let stop = stopping(&mut stopped);
            let end = {
                let handler = &handler;
                http1::serve(stream, bounds, |request| handler.call(request), stop).await
            };
            if let End::HandOff(rewind) = end {
                // Boxed: the rare path's state is not carried by every connection's task.
                Box::pin(serve_with_hyper(
                    rewind,
                    handler,
                    &builder,
                    limits,
                    &mut stopped,
                ))
                .await;
            }
        });
    }
    drop(acceptor);
    drop(open);
    let _ = tokio::time::timeout(Duration::from_secs(30), all_closed.recv()).await;
    flusher.abort();
    crate::observe::metrics::flush_thread();
    if let Some(task) = access_flusher {
        task.abort();
    }
    if let Some(log) = gateway.access_log() {
        log.flush();
    }
}

/// Serves the rest of a connection the gateway's own loop handed over, on hyper.
async fn serve_with_hyper<S: http1::Stream + Send + 'static>(
    rewind: http1::Rewind<S>,
    handler: Handler,
    builder: &auto::Builder<TokioExecutor>,
    limits: Limits,
    stopped: &mut watch::Receiver<bool>,
) {
    let service = tower::service_fn(move |request: Request<Body>| {
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(handler.call_http(request).await) }
    });
    listener::serve_connection(builder, rewind, service, limits, stopping(stopped)).await;
}

/// Serves a client over TLS: the handshake (bounded like a request head), then HTTP/2 on
/// hyper when ALPN chose it, HTTP/1.1 in the gateway's own loop otherwise (which hands
/// what it leaves to hyper, as over plain TCP).
async fn serve_tls(
    tls: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    handler: Handler,
    (builder, bounds): (&auto::Builder<TokioExecutor>, http1::Bounds),
    limits: Limits,
    stopped: &mut watch::Receiver<bool>,
) {
    let Some(stream) = listener::accept_tls(&tls, stream, handler.remote, limits).await else {
        return;
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    if h2 {
        let service = tower::service_fn(move |request: Request<Body>| {
            let handler = handler.clone();
            async move { Ok::<_, std::convert::Infallible>(handler.call_http(request).await) }
        });
        listener::serve_connection(builder, stream, service, limits, stopping(stopped)).await;
        return;
    }
    let end = {
        let handler = &handler;
        let stop = stopping(stopped);
        http1::serve(stream, bounds, |request| handler.call(request), stop).await
    };
    if let End::HandOff(rewind) = end {
        Box::pin(serve_with_hyper(rewind, handler, builder, limits, stopped)).await;
    }
}

/// Completes once the server is told to stop.
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
