//! The Micrometer-named series of the retry, time limiter, bulkhead and rate limiter (the
//! circuit breaker's are read at scrape time, in `circuit_breaker::metrics`). Names and labels are resilience4j-micrometer's, so the
//! Resilience4j project's Grafana dashboard works unchanged.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Once, Weak};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntCounterVec, Opts};
use tokio::sync::Semaphore;

fn counter(name: &str, help: &str) -> IntCounterVec {
    // Constant names and labels: building cannot fail.
    let counter =
        IntCounterVec::new(Opts::new(name, help), &["name", "kind"]).expect("valid counter");
    msa_core::metrics::register_or_existing(counter)
}

/// `resilience4j_retry_calls_total{name,kind}`.
static RETRY_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "resilience4j_retry_calls_total",
        "Calls through the retry, by kind (successful_without_retry, successful_with_retry, failed_with_retry, failed_without_retry).",
    )
});

/// `resilience4j_timelimiter_calls_total{name,kind}`.
static TIMELIMITER_CALLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter(
        "resilience4j_timelimiter_calls_total",
        "Calls through the time limiter, by kind (successful, failed, timeout).",
    )
});

/// Counts a call through retry `name` that ended (`succeeded` or not) after `retries`.
pub(crate) fn retry_call(name: &str, succeeded: bool, retries: u32) {
    let kind = match (succeeded, retries) {
        (true, 0) => "successful_without_retry",
        (true, _) => "successful_with_retry",
        (false, 0) => "failed_without_retry",
        (false, _) => "failed_with_retry",
    };
    RETRY_CALLS.with_label_values(&[name, kind]).inc();
}

/// How a call through a time limiter ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeKind {
    Successful,
    Failed,
    Timeout,
}

pub(crate) fn timelimiter_call(name: &str, kind: TimeKind) {
    let kind = match kind {
        TimeKind::Successful => "successful",
        TimeKind::Failed => "failed",
        TimeKind::Timeout => "timeout",
    };
    TIMELIMITER_CALLS.with_label_values(&[name, kind]).inc();
}

/// A named bulkhead's slots, read at scrape time.
struct BulkheadEntry {
    name: Arc<str>,
    slots: Weak<Semaphore>,
    max: u32,
}

/// A named rate limiter's numbers, read at scrape time.
pub(crate) trait Permissions: Send + Sync {
    /// Calls that may start now without waiting.
    fn available(&self) -> i64;
    /// Calls waiting for a permission.
    fn waiting(&self) -> usize;
}

struct LimiterEntry {
    name: Arc<str>,
    limiter: Weak<dyn Permissions>,
}

#[derive(Default)]
struct Named {
    bulkheads: Vec<BulkheadEntry>,
    limiters: Vec<LimiterEntry>,
}

static NAMED: Mutex<Named> = Mutex::new(Named {
    bulkheads: Vec::new(),
    limiters: Vec::new(),
});

fn named() -> std::sync::MutexGuard<'static, Named> {
    static COLLECTOR: Once = Once::new();
    COLLECTOR.call_once(|| {
        msa_core::metrics::register_or_existing(Gauges::new());
    });
    msa_core::sync::lock(&NAMED)
}

/// Reports `slots` as bulkhead `name` while it lives.
pub(crate) fn bulkhead(name: Arc<str>, slots: &Arc<Semaphore>, max: u32) {
    let mut named = named();
    named
        .bulkheads
        .retain(|entry| entry.slots.strong_count() > 0);
    named.bulkheads.push(BulkheadEntry {
        name,
        slots: Arc::downgrade(slots),
        max,
    });
}

/// Reports `limiter` as rate limiter `name` while it lives.
pub(crate) fn rate_limiter(name: Arc<str>, limiter: Weak<dyn Permissions>) {
    let mut named = named();
    named
        .limiters
        .retain(|entry| entry.limiter.strong_count() > 0);
    named.limiters.push(LimiterEntry { name, limiter });
}

/// Counts the calls waiting on a rate limiter.
#[derive(Debug, Default)]
pub(crate) struct Waiting(AtomicUsize);

impl Waiting {
    /// One more waiter until the guard drops.
    pub(crate) fn enter(&self) -> WaitingGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        WaitingGuard(&self.0)
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

pub(crate) struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The bulkhead and rate limiter gauges, rebuilt at each scrape.
#[derive(Clone)]
struct Gauges {
    available_calls: GaugeVec,
    max_calls: GaugeVec,
    permissions: GaugeVec,
    waiting: GaugeVec,
    descs: Vec<Desc>,
}

impl Gauges {
    fn new() -> Self {
        // Constant names and labels: building cannot fail.
        let gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["name"]).expect("valid gauge")
        };
        let available_calls = gauge(
            "resilience4j_bulkhead_available_concurrent_calls",
            "Calls the bulkhead admits now.",
        );
        let max_calls = gauge(
            "resilience4j_bulkhead_max_allowed_concurrent_calls",
            "Calls the bulkhead admits at most at once.",
        );
        let permissions = gauge(
            "resilience4j_ratelimiter_available_permissions",
            "Calls the rate limiter admits now without waiting.",
        );
        let waiting = gauge(
            "resilience4j_ratelimiter_waiting_threads",
            "Calls waiting for the rate limiter's permission.",
        );
        let descs = [&available_calls, &max_calls, &permissions, &waiting]
            .into_iter()
            .flat_map(|g| g.desc())
            .cloned()
            .collect();
        Gauges {
            available_calls,
            max_calls,
            permissions,
            waiting,
            descs,
        }
    }
}

impl Collector for Gauges {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let fresh = Gauges::new();
        {
            let named = msa_core::sync::lock(&NAMED);
            for entry in &named.bulkheads {
                if let Some(slots) = entry.slots.upgrade() {
                    let name = [&*entry.name];
                    fresh
                        .available_calls
                        .with_label_values(&name)
                        .set(slots.available_permits() as f64);
                    fresh
                        .max_calls
                        .with_label_values(&name)
                        .set(f64::from(entry.max));
                }
            }
            for entry in &named.limiters {
                if let Some(limiter) = entry.limiter.upgrade() {
                    let name = [&*entry.name];
                    fresh
                        .permissions
                        .with_label_values(&name)
                        .set(limiter.available() as f64);
                    fresh
                        .waiting
                        .with_label_values(&name)
                        .set(limiter.waiting() as f64);
                }
            }
        }
        [
            fresh.available_calls.collect(),
            fresh.max_calls.collect(),
            fresh.permissions.collect(),
            fresh.waiting.collect(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Resilience4j's exception names for the layers' errors, in Micrometer's `exception`
/// label of `http_client_requests_seconds`.
fn name_error(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if error.is::<crate::circuit_breaker::CircuitOpen>() {
        Some("CallNotPermittedException")
    } else if error.is::<crate::rate_limit::error::RateLimited>() {
        Some("RequestNotPermitted")
    } else if error.is::<crate::timeout::error::Elapsed>() {
        Some("TimeoutException")
    } else if error.is::<crate::bulkhead::error::BulkheadFull>() {
        Some("BulkheadFullException")
    } else {
        None
    }
}

/// Names the layers' errors in the `exception` label (once per process).
pub(crate) fn name_errors() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| msa_core::metrics::name_errors(name_error));
}
