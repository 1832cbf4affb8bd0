use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the balancer chooses among a service's live instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Strategy {
    /// Each instance in turn (Spring Cloud LoadBalancer's default).
    RoundRobin,
    /// At random, in proportion to each instance's `weight`.
    WeightedRandom,
    /// Power of two choices over peak-EWMA latency × requests in flight: two instances at
    /// random, the less loaded one wins. Slow and failing instances lose traffic within a
    /// few requests, and win it back as their cost decays.
    #[default]
    #[serde(alias = "p2c", alias = "peak-ewma")]
    P2cEwma,
}

/// The load balancer's settings. Every field has a default; in a config file they read
/// in kebab-case:
///
/// ```yaml
/// strategy: p2c-ewma        # round-robin | weighted-random | p2c-ewma
/// zone: eu-west-1a          # prefer instances whose metadata zone is this one
/// sticky-cookie: sc-lb-instance-id
/// outlier:
///   consecutive-failures: 5
///   base-ejection-time: 30s
///   max-ejection-percent: 50
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BalancerConfig {
    /// How instances are chosen. Default: [`Strategy::P2cEwma`].
    pub strategy: Strategy,
    /// The caller's zone: instances whose `zone` is this one are preferred while any of them
    /// is live. Default: none (no preference).
    pub zone: Option<String>,
    /// A request header whose value names the instance to prefer (by instance id), or a key
    /// to hash onto one instance (the same key keeps reaching the same instance while it
    /// lives). Default: none.
    pub sticky_header: Option<String>,
    /// The same as `sticky-header`, from a cookie (Spring Cloud LoadBalancer's is
    /// `sc-lb-instance-id`). Default: none.
    pub sticky_cookie: Option<String>,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// How many other instances a request is tried on when the connection to its instance
    /// fails before anything was sent. Any method may be retried this way. Default: 2.
    pub connect_retries: u32,
    /// P2C-EWMA: how fast old latencies are forgotten (the EWMA's time constant).
    /// Default: 5 s. (Finagle and linkerd use 10 s; measured here, a healthy instance's
    /// latency spikes then linger long enough that a 10× slower instance keeps winning
    /// against busy healthy ones, tripling p99.9. See bench/lb-tail.sh.)
    #[serde(with = "msa_core::duration")]
    pub decay: Duration,
    /// P2C-EWMA: the latency a failure (error or 5xx) counts as, when it was faster than
    /// this, so that failing fast does not attract traffic. Default: 100 ms.
    #[serde(with = "msa_core::duration")]
    pub failure_penalty: Duration,
    /// P2C-EWMA: the first cost of an instance when no instance of the service has been
    /// measured yet. Later newcomers start at the service's mean cost. Default: 30 ms.
    #[serde(with = "msa_core::duration")]
    pub default_rtt: Duration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            strategy: Strategy::default(),
            zone: None,
            sticky_header: None,
            sticky_cookie: None,
            outlier: OutlierConfig::default(),
            connect_retries: 2,
            decay: Duration::from_secs(5),
            failure_penalty: Duration::from_millis(100),
            default_rtt: Duration::from_millis(30),
        }
    }
}

impl BalancerConfig {
    /// The defaults with this strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The defaults with this zone preferred.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }
}

/// Passive outlier ejection, after Envoy's: an instance that fails `consecutive-failures`
/// times in a row (an error, or a 5xx answer) is left out for `base-ejection-time` × the
/// number of times it has been ejected (at most `max-ejection-time`), but never while that
/// would leave out more than `max-ejection-percent` of the service's live instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct OutlierConfig {
    /// Failures in a row that eject an instance; 0 turns ejection off. Default: 5.
    pub consecutive_failures: u32,
    /// The first ejection's length. Default: 30 s.
    #[serde(with = "msa_core::duration")]
    pub base_ejection_time: Duration,
    /// The longest ejection. Default: 300 s.
    #[serde(with = "msa_core::duration")]
    pub max_ejection_time: Duration,
    /// The most of a service's live instances that may be ejected at once, in percent,
    /// rounded down. Default: 50.
    pub max_ejection_percent: u8,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kebab_case_with_defaults() {
        let config: BalancerConfig = serde_json::from_value(serde_json::json!({
            "strategy": "round-robin",
            "zone": "a",
            "outlier": {"base-ejection-time": "10s", "max-ejection-percent": 20},
        }))
        .unwrap();
        assert_eq!(config.strategy, Strategy::RoundRobin);
        assert_eq!(config.outlier.base_ejection_time, Duration::from_secs(10));
        assert_eq!(config.outlier.consecutive_failures, 5);
        assert_eq!(config.connect_retries, 2);
        let error = serde_json::from_value::<BalancerConfig>(serde_json::json!({"stratgy": "x"}))
            .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `stratgy`"),
            "{error}"
        );
    }
}
