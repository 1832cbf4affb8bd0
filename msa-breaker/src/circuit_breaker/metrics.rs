//! Prometheus metrics for every breaker, under Resilience4j's Micrometer names so Spring
//! dashboards work unchanged. Read from the breakers' own counters at scrape time: calls
//! pay nothing for them.

use std::sync::{Mutex, Once};

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, GaugeVec, Opts};

use super::State;
use super::breaker::{CircuitBreaker, Inner};

/// Every breaker made in this process (breakers live until it exits).
static BREAKERS: Mutex<Vec<&'static Inner>> = Mutex::new(Vec::new());

/// Past this many breakers, each doubling is logged: breakers are meant per downstream.
const WARN_AFTER: usize = 1024;

pub(super) fn register(inner: &'static Inner) {
    static COLLECTOR: Once = Once::new();
    COLLECTOR.call_once(|| {
        msa_core::metrics::register_or_existing(BreakerCollector::new());
    });
    let mut breakers = msa_core::sync::lock(&BREAKERS);
    breakers.push(inner);
    let made = breakers.len();
    if made > WARN_AFTER && made.is_power_of_two() {
        tracing::warn!(
            breakers = made,
            "{made} circuit breakers made in this process; each lives until it exits: \
             make one per downstream (CircuitBreakerRegistry does), not one per request"
        );
    }
}

#[derive(Clone)]
struct BreakerCollector {
    state: GaugeVec,
    not_permitted: CounterVec,
    failure_rate: GaugeVec,
    slow_call_rate: GaugeVec,
    buffered: GaugeVec,
    max_buffered: GaugeVec,
    slow: GaugeVec,
    descs: Vec<Desc>,
}

const CALLS: &str = "resilience4j_circuitbreaker_calls_seconds";
const CALLS_HELP: &str = "Duration of the calls the circuit breaker recorded, by outcome (successful, failed, ignored), to the millisecond.";

/// `resilience4j_circuitbreaker_calls_seconds` for every breaker, from their durations.
fn calls_family(breakers: &[&'static Inner]) -> MetricFamily {
    use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricType};
    let label = |name: &str, value: &str| {
        let mut pair = LabelPair::default();
        pair.set_name(name.to_owned());
        pair.set_value(value.to_owned());
        pair
    };
    let mut metrics = Vec::new();
    for inner in breakers {
        let totals = inner.durations.totals();
        for (kind, totals) in super::durations::KINDS.iter().zip(totals) {
            let mut buckets = Vec::with_capacity(super::durations::BOUNDS_MS.len());
            for (bound, count) in super::durations::BOUNDS_MS.iter().zip(totals.cumulative) {
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(f64::from(*bound) / 1000.0);
                bucket.set_cumulative_count(count);
                buckets.push(bucket);
            }
            let mut histogram = Histogram::default();
            histogram.set_bucket(buckets);
            histogram.set_sample_count(totals.cumulative[super::durations::BOUNDS_MS.len()]);
            histogram.set_sample_sum(totals.sum_ms as f64 / 1000.0);
            let mut metric = Metric::default();
            metric.set_label(vec![label("kind", kind), label("name", &inner.name)]);
            metric.set_histogram(histogram);
            metrics.push(metric);
        }
    }
    let mut family = MetricFamily::default();
    family.set_name(CALLS.to_owned());
    family.set_help(CALLS_HELP.to_owned());
    family.set_field_type(MetricType::HISTOGRAM);
    family.set_metric(metrics);
    family
}

impl BreakerCollector {
    fn new() -> Self {
        // Names and labels are constants, so building cannot fail.
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).expect("valid gauge")
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            CounterVec::new(Opts::new(name, help), labels).expect("valid counter")
        };
        let state = gauge(
            "resilience4j_circuitbreaker_state",
            "The state of the circuit breaker: 1 for the current state, 0 for the others.",
            &["name", "state"],
        );
        let not_permitted = counter(
            "resilience4j_circuitbreaker_not_permitted_calls_total",
            "Calls the circuit breaker rejected.",
            &["name", "kind"],
        );
        let failure_rate = gauge(
            "resilience4j_circuitbreaker_failure_rate",
            "Failure rate in percent over the window; -1 below the minimum number of calls.",
            &["name"],
        );
        let slow_call_rate = gauge(
            "resilience4j_circuitbreaker_slow_call_rate",
            "Slow-call rate in percent over the window; -1 below the minimum number of calls.",
            &["name"],
        );
        let buffered = gauge(
            "resilience4j_circuitbreaker_buffered_calls",
            "Calls in the sliding window, by outcome.",
            &["name", "kind"],
        );
        let max_buffered = gauge(
            "resilience4j_circuitbreaker_max_buffered_calls",
            "The most calls the sliding window holds.",
            &["name"],
        );
        let slow = gauge(
            "resilience4j_circuitbreaker_slow_calls",
            "Slow calls in the sliding window, by outcome.",
            &["name", "kind"],
        );
        // Constant name and labels: cannot fail.
        let calls = Desc::new(
            CALLS.to_owned(),
            CALLS_HELP.to_owned(),
            vec!["kind".to_owned(), "name".to_owned()],
            Default::default(),
        )
        .expect("valid descriptor");
        let descs = [
            state.desc(),
            not_permitted.desc(),
            failure_rate.desc(),
            slow_call_rate.desc(),
            buffered.desc(),
            max_buffered.desc(),
            slow.desc(),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .chain([calls])
        .collect();
        BreakerCollector {
            state,
            not_permitted,
            failure_rate,
            slow_call_rate,
            buffered,
            max_buffered,
            slow,
            descs,
        }
    }
}

impl Collector for BreakerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Rebuilt on each scrape, so breakers that are gone disappear.
        let fresh = BreakerCollector::new();
        let breakers: Vec<&'static Inner> = msa_core::sync::lock(&BREAKERS).clone();
        for &inner in &breakers {
            let breaker = CircuitBreaker { inner };
            let name = breaker.name();
            let m = breaker.metrics();
            for state in State::ALL {
                let value = if state == m.state { 1.0 } else { 0.0 };
                fresh
                    .state
                    .with_label_values(&[name, &state.as_str().to_ascii_lowercase()])
                    .set(value);
            }
            fresh
                .max_buffered
                .with_label_values(&[name])
                .set(f64::from(breaker.config().sliding_window_size));
            // The window counts slow calls whatever their outcome: one series, under the
            // kind dashboards sum first.
            fresh
                .slow
                .with_label_values(&[name, "successful"])
                .set(m.buffered_slow_calls as f64);
            fresh
                .not_permitted
                .with_label_values(&[name, "not_permitted"])
                .inc_by(m.not_permitted_calls as f64);
            fresh
                .failure_rate
                .with_label_values(&[name])
                .set(m.failure_rate.map_or(-1.0, f64::from));
            fresh
                .slow_call_rate
                .with_label_values(&[name])
                .set(m.slow_call_rate.map_or(-1.0, f64::from));
            fresh
                .buffered
                .with_label_values(&[name, "successful"])
                .set((m.buffered_calls - m.buffered_failed_calls) as f64);
            fresh
                .buffered
                .with_label_values(&[name, "failed"])
                .set(m.buffered_failed_calls as f64);
        }
        [
            fresh.state.collect(),
            fresh.not_permitted.collect(),
            fresh.failure_rate.collect(),
            fresh.slow_call_rate.collect(),
            fresh.buffered.collect(),
            fresh.max_buffered.collect(),
            fresh.slow.collect(),
            vec![calls_family(&breakers)],
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
