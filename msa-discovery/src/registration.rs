//! Registration: keep the running service in the registry for as long as it runs.
//!
//! [`Registration::start`] registers the instance, renews its lease every renewal interval,
//! registers again whenever the registry answers a renewal with 404 (it restarted, or
//! evicted the instance), reports status changes, and deregisters in
//! [`Shutdown`]'s before-drain phase so callers stop choosing the instance before it stops
//! answering. It speaks Eureka's REST protocol, which msa-registry and a Spring Eureka
//! server both accept.
//!
//! Defaults follow msa's timings: renewal every 10 s, lease 30 s (Eureka's are 30 s and 90 s).
//!
//! # Examples
//!
//! ```no_run
//! use msa_core::{ServiceInstance, shutdown::Shutdown};
//! use msa_discovery::registration::Registration;
//!
//! # #[tokio::main] async fn main() {
//! let shutdown = Shutdown::new();
//! let registration = Registration::new("http://127.0.0.1:8761/eureka", ServiceInstance::new("orders", "127.0.0.1", 8081))
//!     .start(&shutdown);
//! # let _ = registration;
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use msa_core::shutdown::Shutdown;
use msa_core::{InstanceStatus, ServiceInstance};
use reqwest::StatusCode;

use crate::eureka::{InstanceEnvelope, InstanceInfo};
use crate::service_url::ServiceUrls;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// The registry could not be reached.
    #[error("registry {url} unreachable: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        source: reqwest::Error,
    },
    /// The registry answered with an error.
    #[error("registry {url} answered {status}: {body}")]
    Refused {
        /// The URL called.
        url: String,
        /// The status.
        status: StatusCode,
        /// What it said.
        body: String,
    },
}

/// One instance's registration; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct Registration {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    urls: ServiceUrls,
    token: Option<String>,
    info: Mutex<InstanceInfo>,
    renewal: Duration,
    drain_delay: Duration,
    /// Whether the last registration or renewal of the started task went through.
    registered: AtomicBool,
    /// Deregistered: nothing more is sent.
    gone: AtomicBool,
}

impl Registration {
    /// A registration of `instance` with the registry at `base`: a URL in any form Spring
    /// users write (`http://host:8761`, `http://host:8761/eureka/`), or several separated by
    /// commas, tried in turn when one is unreachable (see [`ServiceUrls`]).
    pub fn new(base: impl AsRef<str>, instance: ServiceInstance) -> Self {
        Self::with_urls(ServiceUrls::lenient(base.as_ref()), instance)
    }

    /// A registration of `instance` with the registries `urls`.
    pub fn with_urls(urls: ServiceUrls, instance: ServiceInstance) -> Self {
        let renewal = Duration::from_secs(10);
        let info = InstanceInfo::from_service_instance(&instance, renewal.as_secs(), 30);
        Registration {
            inner: Arc::new(Inner {
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap_or_default(),
                urls,
                token: None,
                info: Mutex::new(info),
                renewal,
                drain_delay: Duration::from_millis(500),
                registered: AtomicBool::new(false),
                gone: AtomicBool::new(false),
            }),
        }
    }

    /// # Panics
    ///
    /// When the registration was cloned or started already: configure it first.
    fn configure(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner)
            .expect("configure a Registration before cloning or starting it")
    }

    /// Calls the registry with `http` (TLS roots, client certificates, proxies), as
    /// [`msa_core::tls::ClientTls`] builds it. Give it a request timeout: registry calls
    /// should not hang.
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.configure().http = http;
        self
    }

    /// Sends `Authorization: Bearer TOKEN` (msa-registry's `--token`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.configure().token = Some(token.into());
        self
    }

    /// How long shutdown waits after deregistering before the server stops accepting
    /// (default 500 ms): time for callers to hear of it and stop sending here. Callers on
    /// msa's watch hear within milliseconds; callers polling a Eureka server need their
    /// poll interval.
    pub fn drain_delay(mut self, delay: Duration) -> Self {
        self.configure().drain_delay = delay;
        self
    }

    /// How often the lease is renewed (at least 1 ms), and how long it lasts without
    /// renewal (the registry counts whole seconds, at least 1).
    pub fn timings(mut self, renewal: Duration, lease: Duration) -> Self {
        let inner = self.configure();
        inner.renewal = renewal.max(Duration::from_millis(1));
        let info = inner.info.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(lease_info) = info.lease_info.as_mut() {
            lease_info.renewal_interval_in_secs.0 = renewal.as_secs().max(1);
            lease_info.duration_in_secs.0 = lease.as_secs().max(1);
        }
        self
    }

    fn info(&self) -> InstanceInfo {
        msa_core::sync::lock(&self.inner.info).clone()
    }

    /// Sends `method` to `apps/{app}{suffix}` at the current registry, moving on to the
    /// next one (once round the list) while they are unreachable or answer 5xx.
    async fn send(
        &self,
        method: reqwest::Method,
        suffix: &str,
        body: Option<&InstanceEnvelope>,
    ) -> Result<StatusCode, RegistrationError> {
        let app = self.info().app;
        let urls = &self.inner.urls;
        let mut last = None;
        for _ in 0..urls.len() {
            let which = urls.current();
            let url = format!("{}/apps/{app}{suffix}", urls.eureka());
            let mut request = self
                .inner
                .http
                .request(method.clone(), &url)
                .header("accept", "application/json");
            if let Some(token) = &self.inner.token {
                request = request.bearer_auth(token);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            // Errors name the URL without its credentials (a defaultZone may carry them).
            let shown = msa_core::secrets::mask_url(&url);
            let error = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() || status == StatusCode::NOT_FOUND {
                        return Ok(status);
                    }
                    let body = response.text().await.unwrap_or_default();
                    let error = RegistrationError::Refused {
                        url: shown,
                        status,
                        body,
                    };
                    if !status.is_server_error() {
                        return Err(error);
                    }
                    error
                }
                Err(source) => RegistrationError::Unreachable {
                    url: shown,
                    source: source.without_url(),
                },
            };
            urls.failed(which);
            last = Some(error);
        }
        Err(last.unwrap_or_else(|| unreachable!("a parsed list has a URL")))
    }

    /// Registers (or registers again).
    pub async fn register(&self) -> Result<(), RegistrationError> {
        if self.inner.gone.load(Ordering::Acquire) {
            return Ok(());
        }
        let body = InstanceEnvelope {
            instance: self.info(),
        };
        match self.send(reqwest::Method::POST, "", Some(&body)).await? {
            status if status.is_success() => {
                tracing::info!(app = %body.instance.app, id = %body.instance.instance_id, "registered");
                Ok(())
            }
            status => Err(RegistrationError::Refused {
                url: msa_core::secrets::mask_url(&format!(
                    "{}/apps/{}",
                    self.inner.urls.eureka(),
                    body.instance.app
                )),
                status,
                body: String::new(),
            }),
        }
    }

    /// Renews the lease; registers again if the registry no longer knows the instance.
    pub async fn renew(&self) -> Result<(), RegistrationError> {
        if self.inner.gone.load(Ordering::Acquire) {
            return Ok(());
        }
        let info = self.info();
        // As Spring's Eureka client writes it.
        let suffix = format!(
            "/{}?status={}&lastDirtyTimestamp={}",
            info.instance_id, info.status, info.last_dirty_timestamp.0
        );
        let status = self.send(reqwest::Method::PUT, &suffix, None).await?;
        if status == StatusCode::NOT_FOUND {
            tracing::info!(id = %info.instance_id, "the registry does not know this instance; registering again");
            return self.register().await;
        }
        Ok(())
    }

    /// Reports a new status (`OUT_OF_SERVICE` while draining, `UP` when ready): the record
    /// is marked changed and registered again, as Eureka's own client does on a status
    /// change (a Eureka server does not take a status from a heartbeat); later renewals
    /// carry it too.
    pub async fn set_status(&self, status: InstanceStatus) -> Result<(), RegistrationError> {
        {
            let mut info = msa_core::sync::lock(&self.inner.info);
            info.status = status;
            info.last_dirty_timestamp.0 = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
        }
        self.register().await
    }

    /// How often the lease is renewed.
    pub fn renewal_interval(&self) -> Duration {
        self.inner.renewal
    }

    /// Whether the registry has accepted the instance (its last registration or renewal
    /// from [`start`](Self::start)'s task went through).
    pub fn is_registered(&self) -> bool {
        self.inner.registered.load(Ordering::Acquire)
    }

    /// The instance as it registers: id, address, status, metadata.
    pub fn instance(&self) -> InstanceInfo {
        self.info()
    }

    /// Sets a metadata entry, sent with the next registration (re-registers now when the
    /// instance is registered, so that callers see it).
    pub async fn set_metadata(
        &self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<(), RegistrationError> {
        {
            let mut info = msa_core::sync::lock(&self.inner.info);
            info.metadata.insert(key.into(), value.into());
        }
        if self.is_registered() {
            self.register().await?;
        }
        Ok(())
    }

    /// Removes the instance from the registry; later renewals and status changes are
    /// not sent (they would register it again).
    pub async fn deregister(&self) -> Result<(), RegistrationError> {
        self.inner.gone.store(true, Ordering::Release);
        self.inner.registered.store(false, Ordering::Release);
        let info = self.info();
        let suffix = format!("/{}", info.instance_id);
        self.send(reqwest::Method::DELETE, &suffix, None).await?;
        tracing::info!(app = %info.app, id = %info.instance_id, "deregistered");
        Ok(())
    }

    /// Registers, keeps renewing (registering again when needed) from a background task,
    /// and deregisters in `shutdown`'s before-drain phase. Failures are logged and retried
    /// at the renewal interval; they never stop the service.
    pub fn start(self, shutdown: &Shutdown) -> Registration {
        let this = self.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            let mut registered = false;
            let mut ticker = tokio::time::interval(this.inner.renewal);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let stop = stopping.triggered();
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    _ = ticker.tick() => {}
                }
                let result = if registered {
                    this.renew().await
                } else {
                    this.register().await
                };
                match result {
                    Ok(()) => {
                        registered = true;
                        this.inner.registered.store(true, Ordering::Release);
                    }
                    Err(error) => {
                        this.inner.registered.store(false, Ordering::Release);
                        tracing::warn!(%error, "registration failed; retrying at the next renewal")
                    }
                }
            }
        });
        let leaving = self.clone();
        shutdown.before_drain("deregister", move || async move {
            match leaving.deregister().await {
                // Callers learn of it (msa's watch: milliseconds) and stop choosing this
                // instance before it stops accepting: no request is sent to a closing
                // connection.
                Ok(()) => tokio::time::sleep(leaving.inner.drain_delay).await,
                Err(error) => {
                    tracing::warn!(%error, "deregistration failed; the lease will expire")
                }
            }
        });
        self
    }
}
