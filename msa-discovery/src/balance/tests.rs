use std::collections::HashMap;
use std::time::Duration;

use msa_core::{InstanceStatus, ServiceInstance};
use tokio::sync::watch;

use super::*;
use crate::discovery::{Discovery, Instances};

/// One service's list, changed by the test.
#[derive(Debug, Clone)]
struct Fixed(watch::Sender<Instances>);

impl Fixed {
    fn new(instances: Vec<ServiceInstance>) -> Self {
        Fixed(watch::Sender::new(instances.into()))
    }

    fn set(&self, instances: Vec<ServiceInstance>) {
        self.0.send_replace(instances.into());
    }
}

impl Discovery for Fixed {
    fn watch(&self, _: &str) -> watch::Receiver<Instances> {
        self.0.subscribe()
    }
}

fn instance(id: &str) -> ServiceInstance {
    ServiceInstance::new("orders", format!("{id}.local"), 80).with_id(id)
}

fn config(strategy: Strategy) -> BalancerConfig {
    BalancerConfig::default().with_strategy(strategy)
}

/// Picks `n` times, reporting success at once; counts by instance id.
fn tally(balancer: &Balancer, n: usize, sticky: Option<&str>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let pick = balancer.pick("orders", sticky).unwrap();
        *counts.entry(pick.instance().id.clone()).or_default() += 1;
        pick.success();
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn round_robin_visits_up_instances_in_turn() {
    let discovery = Fixed::new(vec![
        instance("a"),
        instance("b").with_status(InstanceStatus::OutOfService),
        instance("c"),
        instance("d").with_status(InstanceStatus::Down),
    ]);
    let balancer = Balancer::new(discovery.clone(), config(Strategy::RoundRobin));
    let counts = tally(&balancer, 10, None);
    assert_eq!(counts, HashMap::from([("a".into(), 5), ("c".into(), 5)]));

    // A status change reaches the very next pick.
    discovery.set(vec![
        instance("a").with_status(InstanceStatus::Down),
        instance("c"),
    ]);
    assert_eq!(tally(&balancer, 4, None), HashMap::from([("c".into(), 4)]));

    discovery.set(vec![instance("a").with_status(InstanceStatus::Down)]);
    let error = balancer.pick("orders", None).unwrap_err();
    assert_eq!(error.known, 1);
    assert!(
        error
            .to_string()
            .contains("no live instance of service \"orders\""),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn weighted_random_follows_weights() {
    fastrand::seed(7);
    let discovery = Fixed::new(vec![
        instance("a").with_weight(3),
        instance("b").with_weight(1),
    ]);
    let balancer = Balancer::new(discovery, config(Strategy::WeightedRandom));
    let counts = tally(&balancer, 4000, None);
    let share = counts["a"] as f64 / 4000.0;
    assert!((0.72..0.78).contains(&share), "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn the_callers_zone_is_preferred_while_it_has_a_live_instance() {
    let discovery = Fixed::new(vec![
        instance("a").with_zone("z1"),
        instance("b").with_zone("z2"),
        instance("c").with_zone("z1"),
    ]);
    let balancer = Balancer::new(
        discovery.clone(),
        config(Strategy::RoundRobin).with_zone("z1"),
    );
    let counts = tally(&balancer, 10, None);
    assert_eq!(counts, HashMap::from([("a".into(), 5), ("c".into(), 5)]));
    discovery.set(vec![
        instance("a")
            .with_zone("z1")
            .with_status(InstanceStatus::Down),
        instance("b").with_zone("z2"),
    ]);
    assert_eq!(tally(&balancer, 3, None), HashMap::from([("b".into(), 3)]));
}

#[tokio::test(start_paused = true)]
async fn sticky_keys_name_an_instance_or_hash_onto_one() {
    let discovery = Fixed::new(vec![instance("a"), instance("b"), instance("c")]);
    let balancer = Balancer::new(discovery.clone(), config(Strategy::RoundRobin));
    assert_eq!(
        tally(&balancer, 5, Some("b")),
        HashMap::from([("b".into(), 5)])
    );
    let alice = tally(&balancer, 5, Some("alice"));
    assert_eq!(alice.len(), 1, "{alice:?}");
    // Removing another instance does not move the key.
    let home = alice.keys().next().unwrap().clone();
    let other = ["a", "b", "c"].into_iter().find(|id| *id != home).unwrap();
    discovery.set(
        ["a", "b", "c"]
            .into_iter()
            .filter(|id| *id != other)
            .map(instance)
            .collect(),
    );
    assert_eq!(
        tally(&balancer, 5, Some("alice")),
        HashMap::from([(home, 5)])
    );
}

/// Simulates `rounds` requests, each answered by its instance after `latency(id)`, with
/// `concurrency` in flight; returns the share each instance got.
async fn simulate(
    balancer: &Balancer,
    rounds: usize,
    latency: impl Fn(&str) -> (Duration, bool),
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..rounds {
        let pick = balancer.pick("orders", None).unwrap();
        let (delay, ok) = latency(&pick.instance().id);
        *counts.entry(pick.instance().id.clone()).or_default() += 1;
        tokio::time::advance(delay).await;
        if ok { pick.success() } else { pick.failure() }
    }
    counts
}

#[tokio::test(start_paused = true)]
async fn p2c_ewma_steers_away_from_a_slow_instance() {
    fastrand::seed(11);
    let ids = ["a", "b", "c", "d", "e"];
    let balancer = Balancer::new(
        Fixed::new(ids.into_iter().map(instance).collect()),
        config(Strategy::P2cEwma),
    );
    let counts = simulate(&balancer, 2000, |id| {
        let ms = if id == "a" { 20 } else { 2 };
        (Duration::from_millis(ms), true)
    })
    .await;
    // Round robin would give it 400.
    assert!(counts["a"] < 100, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn p2c_ewma_does_not_reward_failing_fast() {
    fastrand::seed(13);
    let ids = ["a", "b", "c", "d", "e"];
    let mut config = config(Strategy::P2cEwma);
    config.outlier.consecutive_failures = 0;
    let balancer = Balancer::new(Fixed::new(ids.into_iter().map(instance).collect()), config);
    let counts = simulate(&balancer, 2000, |id| {
        if id == "a" {
            (Duration::from_micros(100), false)
        } else {
            (Duration::from_millis(5), true)
        }
    })
    .await;
    assert!(counts["a"] < 100, "{counts:?}");
}

#[tokio::test(start_paused = true)]
async fn outliers_are_ejected_for_a_while_within_the_limit() {
    let ids = ["a", "b", "c", "d"];
    let mut config = config(Strategy::RoundRobin);
    config.outlier.max_ejection_percent = 25;
    let balancer = Balancer::new(Fixed::new(ids.into_iter().map(instance).collect()), config);

    // "a" and "b" fail every time; only one of four may be ejected (25 %).
    let counts = simulate(&balancer, 40, |id| {
        (Duration::from_millis(1), !(id == "a" || id == "b"))
    })
    .await;
    let ejected: Vec<&str> = ids
        .into_iter()
        .filter(|id| !counts.contains_key(*id) || counts[*id] < 8)
        .collect();
    assert_eq!(ejected.len(), 1, "{counts:?}");
    let out = ejected[0];
    assert!(out == "a" || out == "b");

    // Still out a moment before the base ejection time ends, back after.
    tokio::time::advance(Duration::from_secs(29)).await;
    assert!(!tally(&balancer, 12, None).contains_key(out));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(tally(&balancer, 12, None).contains_key(out));
}

#[tokio::test(start_paused = true)]
async fn when_every_instance_is_excluded_one_is_still_chosen() {
    let balancer = Balancer::new(
        Fixed::new(vec![instance("a")]),
        config(Strategy::RoundRobin),
    );
    let pick = balancer.pick_excluding("orders", None, &["a"]).unwrap();
    assert_eq!(pick.instance().id, "a");
    assert_eq!(pick.alternatives(), 0);
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_are_counted_until_the_pick_is_dropped() {
    let balancer = Balancer::new(Fixed::new(vec![instance("a")]), config(Strategy::P2cEwma));
    let first = balancer.pick("orders", None).unwrap();
    let second = balancer.pick("orders", None).unwrap();
    assert_eq!(first.stats.pending.load(Ordering::Relaxed), 2);
    drop(first);
    second.success();
    let third = balancer.pick("orders", None).unwrap();
    assert_eq!(third.stats.pending.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_service_is_one_service_however_it_is_spelled() {
    let balancer = Balancer::new(
        Fixed::new(vec![instance("a"), instance("b")]),
        config(Strategy::RoundRobin),
    );
    let first = balancer.pick("ORDERS", None).unwrap().instance().id.clone();
    let second = balancer.pick("orders", None).unwrap().instance().id.clone();
    assert_ne!(first, second, "one round-robin counter for both spellings");
}
