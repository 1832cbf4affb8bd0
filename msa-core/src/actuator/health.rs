//! Health: statuses, indicators, their aggregation, and the liveness/readiness groups.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use http::StatusCode;
use serde::{Deserialize, Serialize};

/// A health status, with Spring Boot's names and aggregation order.
///
/// Aggregating several statuses yields the most severe: `DOWN`, then `OUT_OF_SERVICE`, then
/// `UP`, then `UNKNOWN`.
///
/// # Examples
///
/// ```
/// use msa_core::actuator::Status;
///
/// assert_eq!(Status::aggregate([Status::Up, Status::Down, Status::OutOfService]), Status::Down);
/// assert_eq!(Status::aggregate([]), Status::Up);
/// assert_eq!(Status::Down.http_status(), http::StatusCode::SERVICE_UNAVAILABLE);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Working.
    Up,
    /// Not working.
    Down,
    /// Working but taken out of service on purpose (shutting down, say).
    OutOfService,
    /// Not known.
    Unknown,
}

impl Status {
    fn severity(self) -> u8 {
        match self {
            Status::Down => 3,
            Status::OutOfService => 2,
            Status::Up => 1,
            Status::Unknown => 0,
        }
    }

    /// The most severe of `statuses`, or `UP` when there are none.
    pub fn aggregate(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses
            .into_iter()
            .max_by_key(|s| s.severity())
            .unwrap_or(Status::Up)
    }

    /// The HTTP status a health endpoint answers with: 503 for `DOWN` and
    /// `OUT_OF_SERVICE`, 200 otherwise (Spring Boot's mapping).
    pub fn http_status(self) -> StatusCode {
        match self {
            Status::Down | Status::OutOfService => StatusCode::SERVICE_UNAVAILABLE,
            Status::Up | Status::Unknown => StatusCode::OK,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Up => "UP",
            Status::Down => "DOWN",
            Status::OutOfService => "OUT_OF_SERVICE",
            Status::Unknown => "UNKNOWN",
        })
    }
}

/// The health of one component: a status and optional details.
///
/// # Examples
///
/// ```
/// use msa_core::actuator::{Health, Status};
///
/// let health = Health::down().with_detail("error", "connection refused");
/// assert_eq!(health.status, Status::Down);
/// assert_eq!(health.details["error"], "connection refused");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// The component's status.
    pub status: Status,
    /// Free-form details, shown under `details` in the JSON.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Health {
    /// A health of `status` with no details.
    pub fn new(status: Status) -> Self {
        Health {
            status,
            details: serde_json::Map::new(),
        }
    }

    /// `UP`.
    pub fn up() -> Self {
        Health::new(Status::Up)
    }

    /// `DOWN`.
    pub fn down() -> Self {
        Health::new(Status::Down)
    }

    /// `OUT_OF_SERVICE`.
    pub fn out_of_service() -> Self {
        Health::new(Status::OutOfService)
    }

    /// `UNKNOWN`.
    pub fn unknown() -> Self {
        Health::new(Status::Unknown)
    }

    /// Adds a detail.
    pub fn with_detail(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// A check that reports one component's health (a database, a downstream, a disk).
///
/// Checks run concurrently on each health request, each bounded by a timeout; a check that
/// times out or panics reports `DOWN` with the reason in its details.
///
/// Any `Fn() -> impl Future<Output = Health>` closure is an indicator.
///
/// # Examples
///
/// ```
/// use msa_core::actuator::{Actuator, Health};
///
/// let actuator = Actuator::new("orders").health_indicator("db", || async {
///     Health::up().with_detail("pool", 8)
/// });
/// # let _ = actuator;
/// ```
pub trait HealthIndicator: Send + Sync + 'static {
    /// Checks the component.
    fn health(&self) -> BoxFuture<'_, Health>;
}

impl<F, Fut> HealthIndicator for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Health> + Send + 'static,
{
    fn health(&self) -> BoxFuture<'_, Health> {
        Box::pin(self())
    }
}

/// Which health groups an indicator belongs to, beside the overall `/actuator/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// `/actuator/health/liveness`: failing means the process should be restarted.
    Liveness,
    /// `/actuator/health/readiness`: failing means the instance should get no traffic.
    Readiness,
}

/// The application's own availability, reported as the `livenessState` and
/// `readinessState` components.
///
/// Readiness starts `true`; msa's shutdown marks it `false` before draining, so load
/// balancers and Kubernetes stop sending traffic first.
#[derive(Clone, Debug)]
pub struct Availability {
    live: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
}

impl Default for Availability {
    fn default() -> Self {
        Availability {
            live: Arc::new(AtomicBool::new(true)),
            ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Availability {
    /// Marks the application live (`CORRECT`) or broken (`BROKEN`).
    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }

    /// Marks the application accepting (`ACCEPTING_TRAFFIC`) or refusing traffic
    /// (`REFUSING_TRAFFIC`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the application is live.
    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Whether the application accepts traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    fn liveness(&self) -> Health {
        if self.is_live() {
            Health::up().with_detail("state", "CORRECT")
        } else {
            Health::down().with_detail("state", "BROKEN")
        }
    }

    fn readiness(&self) -> Health {
        if self.is_ready() {
            Health::up().with_detail("state", "ACCEPTING_TRAFFIC")
        } else {
            Health::out_of_service().with_detail("state", "REFUSING_TRAFFIC")
        }
    }
}

#[derive(Clone)]
pub(super) struct Registered {
    pub(super) name: String,
    pub(super) groups: Vec<Group>,
    pub(super) indicator: Arc<dyn HealthIndicator>,
}

/// The JSON body of a health endpoint: an aggregate status and its components.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The aggregate status.
    pub status: Status,
    /// Each component's health, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, Health>,
}

/// Runs every indicator that belongs to `group` (all of them for `None`) concurrently.
pub(super) async fn report(
    indicators: &[Registered],
    availability: &Availability,
    group: Option<Group>,
    timeout: Duration,
) -> HealthReport {
    let selected = indicators
        .iter()
        .filter(|r| group.is_none_or(|g| r.groups.contains(&g)));
    let checks = selected.map(|r| {
        let indicator = Arc::clone(&r.indicator);
        async move {
            let check = AssertUnwindSafe(indicator.health()).catch_unwind();
            let health = match tokio::time::timeout(timeout, check).await {
                Ok(Ok(health)) => health,
                Ok(Err(_panic)) => Health::down().with_detail("error", "the health check panicked"),
                Err(_elapsed) => Health::down().with_detail(
                    "error",
                    format!("the health check timed out after {timeout:?}"),
                ),
            };
            (r.name.clone(), health)
        }
    });
    let mut components: BTreeMap<String, Health> = futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect();
    if group != Some(Group::Readiness) {
        components.insert("livenessState".into(), availability.liveness());
    }
    if group != Some(Group::Liveness) {
        components.insert("readinessState".into(), availability.readiness());
    }
    HealthReport {
        status: Status::aggregate(components.values().map(|h| h.status)),
        components,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(name: &str, groups: &[Group], indicator: impl HealthIndicator) -> Registered {
        Registered {
            name: name.to_owned(),
            groups: groups.to_vec(),
            indicator: Arc::new(indicator),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_check_is_down_after_the_timeout_and_the_others_still_answer() {
        let indicators = [
            registered("hangs", &[Group::Readiness], || {
                std::future::pending::<Health>()
            }),
            registered("fine", &[Group::Readiness], || async { Health::up() }),
        ];
        let started = tokio::time::Instant::now();
        let report = report(
            &indicators,
            &Availability::default(),
            None,
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(3),
            "checks run concurrently"
        );
        assert_eq!(report.status, Status::Down);
        assert_eq!(report.components["fine"].status, Status::Up);
        let hung = &report.components["hangs"];
        assert_eq!(hung.status, Status::Down);
        assert!(
            hung.details["error"]
                .as_str()
                .unwrap()
                .contains("timed out")
        );
    }

    #[tokio::test]
    async fn a_panicking_check_is_down_not_a_crash() {
        let indicators = [registered("panics", &[], || async {
            panic!("boom");
            #[allow(unreachable_code)]
            Health::up()
        })];
        let report = report(
            &indicators,
            &Availability::default(),
            None,
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(report.components["panics"].status, Status::Down);
        assert_eq!(report.status, Status::Down);
    }

    #[tokio::test]
    async fn groups_select_their_indicators() {
        let indicators = [
            registered("db", &[Group::Readiness], || async { Health::down() }),
            registered("deadlock", &[Group::Liveness], || async { Health::up() }),
        ];
        let availability = Availability::default();
        let live = report(
            &indicators,
            &availability,
            Some(Group::Liveness),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(live.status, Status::Up);
        assert_eq!(
            live.components.keys().collect::<Vec<_>>(),
            ["deadlock", "livenessState"]
        );
        let ready = report(
            &indicators,
            &availability,
            Some(Group::Readiness),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(ready.status, Status::Down);
        assert_eq!(
            ready.components.keys().collect::<Vec<_>>(),
            ["db", "readinessState"]
        );
        availability.set_live(false);
        let live = report(
            &indicators,
            &availability,
            Some(Group::Liveness),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(live.status, Status::Down);
    }

    #[test]
    fn aggregation_follows_springs_order() {
        use Status::*;
        assert_eq!(Status::aggregate([Unknown, Up]), Up);
        assert_eq!(Status::aggregate([Up, OutOfService]), OutOfService);
        assert_eq!(Status::aggregate([OutOfService, Down, Up]), Down);
        assert_eq!(OutOfService.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(Unknown.http_status(), StatusCode::OK);
    }
}
