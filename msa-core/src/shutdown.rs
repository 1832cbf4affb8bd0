//! Graceful shutdown: on SIGINT/SIGTERM, run hooks, drain in-flight requests, run more hooks.
//!
//! The sequence, once triggered:
//!
//! 1. **before-drain hooks**, in the order added, while the server still accepts requests:
//!    mark readiness down, deregister from the registry, so callers stop choosing this
//!    instance before it stops answering;
//! 2. **drain**: stop accepting connections and wait for in-flight requests to finish, for
//!    at most the drain timeout (30 s by default, like Spring's
//!    `spring.lifecycle.timeout-per-shutdown-phase`); connections still open after it are
//!    abandoned, and close when the runtime stops;
//! 3. **after-drain hooks**, in the order added: flush telemetry, close pools.
//!
//! Each hook runs with a timeout (10 s by default); a hook that fails or times out is logged
//! and the sequence goes on.
//!
//! # Examples
//!
//! ```no_run
//! use axum::{Router, routing::get};
//! use msa_core::shutdown::Shutdown;
//!
//! # #[tokio::main] async fn main() -> std::io::Result<()> {
//! let shutdown = Shutdown::new();
//! shutdown.listen_for_signals();
//! shutdown.before_drain("deregister", || async { /* tell the registry */ });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let app = Router::new().route("/", get(|| async { "hi" }));
//! shutdown.serve(listener, app).await
//! # }
//! ```

use crate::sync::lock;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::listener::{self, Acceptor, Listeners, Part};

/// The longest drain by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest one hook may run by default.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

type Hook = (String, Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>);

/// Coordinates one process's shutdown; cheap to clone, every clone is the same coordinator.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    triggered: watch::Sender<bool>,
    before_drain: Mutex<Vec<Hook>>,
    after_drain: Mutex<Vec<Hook>>,
    drain_timeout: Mutex<Duration>,
    hook_timeout: Mutex<Duration>,
    grace: Mutex<Duration>,
    /// Set once the before-drain hooks have run and the grace has passed.
    draining: watch::Sender<bool>,
    /// Whether some caller of `draining` runs the hooks.
    hooks_claimed: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish_non_exhaustive()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown::new()
    }
}

impl Shutdown {
    /// A coordinator that has not been triggered; call [`Shutdown::listen_for_signals`] to
    /// have SIGINT and SIGTERM trigger it.
    pub fn new() -> Self {
        Shutdown {
            inner: Arc::new(Inner {
                triggered: watch::Sender::new(false),
                before_drain: Mutex::default(),
                after_drain: Mutex::default(),
                drain_timeout: Mutex::new(DEFAULT_DRAIN_TIMEOUT),
                hook_timeout: Mutex::new(DEFAULT_HOOK_TIMEOUT),
                grace: Mutex::new(Duration::ZERO),
                draining: watch::Sender::new(false),
                hooks_claimed: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Sets the longest drain.
    pub fn set_drain_timeout(&self, timeout: Duration) {
        *lock(&self.inner.drain_timeout) = timeout;
    }

    /// After the before-drain hooks (readiness down, deregistration), keep serving for
    /// `grace` before draining, so load balancers and callers' caches see the instance
    /// leave first (Kubernetes' `preStop` sleep); none by default.
    pub fn set_grace(&self, grace: Duration) {
        *lock(&self.inner.grace) = grace;
    }

    /// Marks `availability` not ready as the first thing shutdown does, before every
    /// other before-drain hook: readiness is `DOWN` while the process still serves.
    pub fn unready_first(&self, availability: crate::actuator::Availability) {
        self.before_drain_first("readiness", move || async move {
            availability.set_ready(false);
        });
    }

    /// Sets the longest one hook may run.
    pub fn set_hook_timeout(&self, timeout: Duration) {
        *lock(&self.inner.hook_timeout) = timeout;
    }

    /// Triggers shutdown on SIGINT (Ctrl-C) or SIGTERM. Spawns a task: call it inside a
    /// tokio runtime.
    pub fn listen_for_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let name = signal().await;
            tracing::info!(signal = name, "shutting down");
            this.trigger();
        });
    }

    /// Starts shutdown now.
    pub fn trigger(&self) {
        self.inner.triggered.send_replace(true);
    }

    /// Whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        *self.inner.triggered.borrow()
    }

    /// Resolves once shutdown has started.
    pub fn triggered(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.triggered.subscribe();
        async move {
            // The sender lives in `inner`, which this future does not keep alive: if every
            // clone is gone, nobody can trigger, and waiting forever is right.
            if rx.wait_for(|t| *t).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Adds a hook run after the trigger and before draining, while requests are still
    /// served (deregistration belongs here).
    pub fn before_drain<F, Fut>(&self, name: impl Into<String>, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.before_drain).push((name.into(), Box::new(move || Box::pin(hook()))));
    }

    /// Like [`Shutdown::before_drain`], but runs ahead of every before-drain hook added so
    /// far (marking readiness down belongs here).
    pub fn before_drain_first<F, Fut>(&self, name: impl Into<String>, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.before_drain).insert(0, (name.into(), Box::new(move || Box::pin(hook()))));
    }

    /// Adds a hook run after in-flight requests have drained (flushing telemetry belongs
    /// here).
    pub fn after_drain<F, Fut>(&self, name: impl Into<String>, hook: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        lock(&self.inner.after_drain).push((name.into(), Box::new(move || Box::pin(hook()))));
    }

    async fn run_hooks(&self, hooks: &Mutex<Vec<Hook>>, phase: &'static str) {
        let hooks = std::mem::take(&mut *lock(hooks));
        let timeout = *lock(&self.inner.hook_timeout);
        for (name, hook) in hooks {
            tracing::debug!(hook = %name, phase, "running shutdown hook");
            if tokio::time::timeout(timeout, hook()).await.is_err() {
                tracing::warn!(hook = %name, phase, ?timeout, "shutdown hook timed out");
            }
        }
    }

    /// Resolves when listeners should stop accepting: shutdown has been triggered, the
    /// before-drain hooks have run (by the first caller) and the grace has passed. For
    /// servers that drain on their own.
    pub async fn draining(&self) {
        use std::sync::atomic::Ordering;
        self.triggered().await;
        if self.inner.hooks_claimed.swap(true, Ordering::AcqRel) {
            let mut draining = self.inner.draining.subscribe();
            let _ = draining.wait_for(|d| *d).await;
            return;
        }
        self.run_hooks(&self.inner.before_drain, "before-drain")
            .await;
        let grace = *lock(&self.inner.grace);
        if !grace.is_zero() {
            tracing::info!(?grace, "still serving, so callers see the instance leave");
            tokio::time::sleep(grace).await;
        }
        self.inner.draining.send_replace(true);
    }

    /// Serves `app` on `listener` until shutdown, then runs the sequence in the
    /// [module docs](self) and returns.
    ///
    /// The app is served with connect info, so handlers may extract
    /// `ConnectInfo<SocketAddr>`, and within the default
    /// [`Limits`](crate::listener::Limits).
    pub async fn serve(&self, listener: TcpListener, app: Router) -> std::io::Result<()> {
        self.serve_with(Listeners::new(listener, app)).await
    }

    /// Serves `listeners` (the app, and the actuator on a management listener of its own
    /// if there is one) until shutdown, then runs the sequence in the [module docs](self)
    /// and returns.
    pub async fn serve_with(&self, listeners: Listeners) -> std::io::Result<()> {
        let drain_rx = self.inner.draining.subscribe();
        let stop_accepting = self.draining();
        let Listeners {
            main,
            management,
            app,
            limits,
            tls,
            management_tls,
        } = listeners;
        let serving = async {
            let accept = |listener| Acceptor::new(listener, limits.max_connections);
            match management {
                None => {
                    listener::serve(accept(main), app, Part::All, limits, tls, drain_rx.clone())
                        .await
                }
                Some(management) => {
                    let main = listener::serve(
                        accept(main),
                        app.clone(),
                        Part::Main,
                        limits,
                        tls,
                        drain_rx.clone(),
                    );
                    let management = listener::serve(
                        accept(management),
                        app,
                        Part::Management,
                        limits,
                        management_tls,
                        drain_rx.clone(),
                    );
                    tokio::join!(main, management);
                }
            }
        };
        let drain_timeout = *lock(&self.inner.drain_timeout);
        let mut draining = drain_rx.clone();
        let deadline = async move {
            let _ = draining.wait_for(|d| *d).await;
            tokio::time::sleep(drain_timeout).await;
        };
        tokio::select! {
            _ = async { tokio::join!(serving, stop_accepting) } => {}
            () = deadline => {
                tracing::warn!(?drain_timeout, "in-flight requests did not finish in time; closing them");
            }
        }
        self.run_hooks(&self.inner.after_drain, "after-drain").await;
        Ok(())
    }
}

/// A server binary's exit: success, or its error on one line after its name, and failure.
pub fn exit(name: &str, result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM, returning its name.
async fn signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    }
}
