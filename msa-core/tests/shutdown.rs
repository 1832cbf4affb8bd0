//! Graceful shutdown over real HTTP: hook order, draining, and the drain timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use msa_core::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Events = Arc<Mutex<Vec<&'static str>>>;

fn push(events: &Events, event: &'static str) {
    events.lock().unwrap().push(event);
}

/// A router whose `/slow` handler signals `entered`, then waits for `release`.
fn slow_router(entered: Arc<Notify>, release: Arc<Notify>, events: Events) -> Router {
    Router::new().route(
        "/slow",
        get(move || {
            let (entered, release, events) = (entered.clone(), release.clone(), events.clone());
            async move {
                entered.notify_one();
                release.notified().await;
                push(&events, "in-flight request finished");
                "done"
            }
        }),
    )
}

#[tokio::test]
async fn hooks_run_before_and_after_in_flight_requests_drain() {
    let events = Events::default();
    let (entered, release, before_done) = (
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
        Arc::new(Notify::new()),
    );
    let shutdown = Shutdown::new();
    let e = events.clone();
    shutdown.before_drain("deregister", move || async move {
        push(&e, "before: deregister")
    });
    let (e, done) = (events.clone(), before_done.clone());
    shutdown.before_drain("second", move || async move {
        push(&e, "before: second");
        done.notify_one();
    });
    let e = events.clone();
    shutdown.before_drain_first(
        "readiness",
        move || async move { push(&e, "before: readiness") },
    );
    let e = events.clone();
    shutdown.after_drain("flush", move || async move { push(&e, "after: flush") });

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = slow_router(entered.clone(), release.clone(), events.clone());
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.serve(listener, router).await }
    });

    let in_flight = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    entered.notified().await;
    assert!(!shutdown.is_triggered());
    shutdown.trigger();
    before_done.notified().await;
    assert!(
        !server.is_finished(),
        "the server waits for the in-flight request"
    );
    release.notify_one();

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    server.await.unwrap().unwrap();
    assert_eq!(
        *events.lock().unwrap(),
        [
            "before: readiness",
            "before: deregister",
            "before: second",
            "in-flight request finished",
            "after: flush"
        ]
    );
    assert!(
        reqwest::get(format!("http://{addr}/slow")).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_that_never_finishes_is_cut_off_after_the_drain_timeout() {
    let events = Events::default();
    let (entered, never) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let shutdown = Shutdown::new();
    shutdown.set_drain_timeout(Duration::from_secs(30));
    let e = events.clone();
    shutdown.after_drain("flush", move || async move { push(&e, "after: flush") });

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = slow_router(entered.clone(), never, events.clone());
    let server = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { shutdown.serve(listener, router).await }
    });
    let _stuck = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    entered.notified().await;

    let started = tokio::time::Instant::now();
    shutdown.trigger();
    server.await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "waited out the drain timeout"
    );
    assert_eq!(*events.lock().unwrap(), ["after: flush"]);
}

#[tokio::test(start_paused = true)]
async fn a_hung_hook_times_out_and_the_sequence_goes_on() {
    let events = Events::default();
    let shutdown = Shutdown::new();
    shutdown.set_hook_timeout(Duration::from_secs(5));
    shutdown.before_drain("hangs", std::future::pending::<()>);
    let e = events.clone();
    shutdown.before_drain("next", move || async move { push(&e, "before: next") });
    let e = events.clone();
    shutdown.after_drain("flush", move || async move { push(&e, "after: flush") });

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let started = tokio::time::Instant::now();
    shutdown.trigger();
    shutdown.serve(listener, Router::new()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert_eq!(*events.lock().unwrap(), ["before: next", "after: flush"]);
}
