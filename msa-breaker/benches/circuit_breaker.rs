//! Closed-state cost per call: bare service vs msa's breaker vs failsafe, side by side.
//!
//! Run with: cargo bench -p msa-breaker --bench circuit_breaker
//!
//! Every call is a ready future polled once (`now_or_never`), so the figures are the
//! breakers' own work on the success path: permit, call, record. `two-threads` runs two
//! threads calling through one shared breaker at once and reports the time per call seen
//! by each thread.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use msa_breaker::circuit_breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use tower::{Layer, Service};

type Inner = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

fn inner() -> Inner {
    tower::service_fn(|x: u64| ready(Ok(x)))
}

/// One call through a tower service, polled to completion.
#[inline]
fn call_tower<S: Service<u64, Response = u64>>(svc: &mut S) -> u64 {
    match svc.call(black_box(1)).now_or_never() {
        Some(Ok(x)) => x,
        _ => unreachable!("every call succeeds at once"),
    }
}

/// One call through failsafe's futures API, polled to completion.
#[inline]
fn call_failsafe<C: failsafe::futures::CircuitBreaker>(cb: &C) -> u64 {
    match cb.call(ready(Ok::<u64, ()>(black_box(1)))).now_or_never() {
        Some(Ok(x)) => x,
        _ => unreachable!("every call succeeds at once"),
    }
}

type Caller = Box<dyn FnMut() + Send>;

fn timed(barrier: &Barrier, calls: u64, f: &mut Caller) -> Duration {
    barrier.wait();
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    start.elapsed()
}

/// Runs `calls` calls on each of two threads at once; returns the longer thread's time.
fn two_threads(calls: u64, mut make: impl FnMut() -> Caller) -> Duration {
    let barrier = Barrier::new(2);
    let (mut a, mut b) = (make(), make());
    std::thread::scope(|scope| {
        let ta = scope.spawn(|| timed(&barrier, calls, &mut a));
        let tb = scope.spawn(|| timed(&barrier, calls, &mut b));
        ta.join().unwrap().max(tb.join().unwrap())
    })
}

fn failsafe_default() -> impl failsafe::futures::CircuitBreaker + Clone + Send + 'static {
    failsafe::Config::new().build()
}

fn failsafe_consecutive() -> impl failsafe::futures::CircuitBreaker + Clone + Send + 'static {
    failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            5,
            failsafe::backoff::constant(Duration::from_secs(30)),
        ))
        .build()
}

fn closed_state(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed_state/one-thread");
    let mut bare = inner();
    group.bench_function("bare", |b| b.iter(|| call_tower(&mut bare)));
    let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default());
    let mut msa = layer.layer(inner());
    group.bench_function("msa", |b| b.iter(|| call_tower(&mut msa)));
    let fs = failsafe_default();
    group.bench_function("failsafe/default-policy", |b| b.iter(|| call_failsafe(&fs)));
    let fs = failsafe_consecutive();
    group.bench_function("failsafe/consecutive-failures", |b| {
        b.iter(|| call_failsafe(&fs))
    });
    group.finish();

    let mut group = c.benchmark_group("closed_state/two-threads");
    group.bench_function("bare", |b| {
        b.iter_custom(|n| {
            two_threads(n, || {
                let mut svc = inner();
                Box::new(move || {
                    call_tower(&mut svc);
                })
            })
        })
    });
    group.bench_function("msa", |b| {
        b.iter_custom(|n| {
            two_threads(n, || {
                let mut svc = layer.layer(inner());
                Box::new(move || {
                    call_tower(&mut svc);
                })
            })
        })
    });
    let fs = failsafe_default();
    group.bench_function("failsafe/default-policy", |b| {
        b.iter_custom(|n| {
            two_threads(n, || {
                let cb = fs.clone();
                Box::new(move || {
                    call_failsafe(&cb);
                })
            })
        })
    });
    let fs = failsafe_consecutive();
    group.bench_function("failsafe/consecutive-failures", |b| {
        b.iter_custom(|n| {
            two_threads(n, || {
                let cb = fs.clone();
                Box::new(move || {
                    call_failsafe(&cb);
                })
            })
        })
    });
    group.finish();
}

criterion_group!(benches, closed_state);
criterion_main!(benches);
