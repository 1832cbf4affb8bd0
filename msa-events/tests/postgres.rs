//! msa-events on PostgreSQL: the suite (`suite/`) on a new database per test in one
//! throwaway cluster (`initdb` on a free port, removed at the end), with NATS between the
//! processes of the relay-kill test.

#[path = "../../tests/support/nats.rs"]
mod nats_server;
#[path = "../../tests/support/postgres.rs"]
mod postgres;
mod suite;

/// A new database on the cluster this binary shares (removed with it).
async fn database() -> (String, ()) {
    (postgres::database().await, ())
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (url, _dir) = database().await;
                suite::$name(&url).await;
            }
        )*
    };
}

cases!(
    the_relay_publishes_committed_messages_in_order,
    several_relays_publish_each_message_once,
    a_redelivered_message_has_no_second_effect,
    parallel_appends_conflict,
    snapshot_and_replay_agree,
    old_events_are_upcast,
    events_are_published_through_the_outbox,
    a_rebuilt_projection_equals_the_live_one,
    a_timed_out_step_compensates_in_reverse_order,
    command_steps_go_over_messages,
    a_failing_compensation_leaves_a_failed_saga_on_the_report,
    a_step_retried_later_waits_for_its_participant,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saga_killed_mid_way_resumes_after_restart() {
    let (url, _dir) = database().await;
    suite::a_saga_killed_mid_way_resumes_after_restart(&url, "saga_child").await;
}

/// The saga process the test above kills (run only as its child).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_saga_killed_mid_way_resumes_after_restart"]
async fn saga_child() {
    if let Ok(url) = std::env::var(suite::SAGA_CHILD) {
        suite::sagas_until_killed(&url).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_publishes_again_and_the_inbox_dedupes() {
    let store = tempfile::tempdir().unwrap();
    let nats = nats_server::Server::start(store.path(), nats_server::free_port());
    nats.binder().await;
    let (url, _dir) = database().await;
    suite::a_relay_killed_mid_batch_publishes_again_and_the_inbox_dedupes(
        &url,
        &nats.url(),
        "relay_child",
    )
    .await;
}

/// The relay process the test above kills (run only as its child).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of a_relay_killed_mid_batch_publishes_again_and_the_inbox_dedupes"]
async fn relay_child() {
    if let Ok(urls) = std::env::var(suite::CHILD)
        && let Some((database, nats)) = urls.split_once(' ')
    {
        suite::relay_until_killed(database, nats).await;
    }
}
