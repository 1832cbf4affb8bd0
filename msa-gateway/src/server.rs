//! Serving: one current-thread runtime per worker, each accepting on its own
//! `SO_REUSEPORT` listener and keeping its own upstream connection pool, so requests never
//! cross threads and pools are never contended. HTTP/1.1 requests are read and answered by
//! the gateway's own connection loop (`http1`); HTTP/2, upgrades and streamed request
//! bodies by hyper.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use crate::http1::{self, End, RawRequest, Reply};
use crate::proxy::Gateway;

/// A running server: stop it with [`Server::stop`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    workers: Vec<std::thread::JoinHandle<()>>,
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
        let workers = workers.max(1);
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
                    runtime.block_on(worker(gateway, admin, std_listener, stopped));
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
}

/// A request's future, on the heap: the connection's task stays small between requests.
type Answer<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// The same for a request hyper serves.
type HttpAnswer<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

impl Handler {
    /// A request from the gateway's own loop: proxied as it arrived where it can be.
    fn call(&self, request: RawRequest) -> Answer<'_> {
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
                let refused = crate::proxy::error_response(StatusCode::BAD_REQUEST, reason);
                Box::pin(std::future::ready(Reply::Http(refused)))
            }
        }
    }

    fn call_http(&self, request: Request<Body>) -> HttpAnswer<'_> {
        if request.uri().path().starts_with("/actuator") {
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
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(std_listener) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, "a worker could not listen");
            return;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Read buffers start at 8 KiB and may grow to this; hyper's default (~400 KiB) lets a
    // thousand idle keep-alive connections hold megabytes.
    builder.http1().max_buf_size(16 * 1024);
    let builder = Arc::new(builder);
    // A request head may be twice the largest header allowed, and 64 KiB in any case.
    let max_head = (2 * gateway.max_header_size()).max(64 * 1024);
    // Every connection task holds a sender; when all are gone, every connection is closed.
    let (open, mut all_closed) = mpsc::channel::<()>(1);
    // On this worker's thread: its metrics buffers reach the scrape when it is idle too.
    let flusher = tokio::spawn(crate::metrics::flush_when_asked());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            },
            _ = stopped.wait_for(|stop| *stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = Handler {
            gateway: gateway.clone(),
            admin: admin.clone(),
            remote,
        };
        let builder = builder.clone();
        let mut stopped = stopped.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let _open = open;
            let stop = stopping(&mut stopped);
            let end = {
                let handler = &handler;
                http1::serve(stream, max_head, |request| handler.call(request), stop).await
            };
            if let End::HandOff(rewind) = end {
                // Boxed: the rare path's state is not carried by every connection's task.
                Box::pin(serve_with_hyper(rewind, handler, &builder, &mut stopped)).await;
            }
        });
    }
    drop(listener);
    drop(open);
    let _ = tokio::time::timeout(Duration::from_secs(30), all_closed.recv()).await;
    flusher.abort();
    crate::metrics::flush_thread();
}

/// Serves the rest of a connection the gateway's own loop handed over, on hyper.
async fn serve_with_hyper(
    rewind: http1::Rewind,
    handler: Handler,
    builder: &auto::Builder<TokioExecutor>,
    stopped: &mut watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(handler.call_http(request.map(Body::new)).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(rewind), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping(stopped) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Completes once the server is told to stop.
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
