//! Data and events in `msa::App`: the service's database from `spring.datasource.url` (a
//! JDBC URL as Spring writes it), an HTTP handler writing its row and its message in one
//! transaction, the app's outbox relay publishing it through the app's stream,
//! `/actuator/sagas` behind the management token, the `db` health component, a missing
//! datasource named at start, and (with etcd) the relay running on one replica at a time.

#![cfg(feature = "events")]

#[cfg(feature = "etcd")]
#[path = "support/etcd.rs"]
mod etcd_cluster;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use msa::core::settings::Load;
use msa::events::Store;
use msa::events::saga::{Orchestrator, Saga};
use msa::stream::message::Message;
use serde_json::{Value, json};

/// A count per id, event-sourced.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Tally {
    n: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(tag = "type")]
enum Counted {
    Counted,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl msa::events::Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = ();
    type Event = Counted;
    type Error = Never;
    fn handle(&self, (): ()) -> Result<Vec<Counted>, Never> {
        Ok(vec![Counted::Counted])
    }
    fn apply(&mut self, Counted::Counted: &Counted) {
        self.n += 1;
    }
}

/// The tallies' read model.
struct Tallies;

#[async_trait::async_trait]
impl msa::events::projection::Projection for Tallies {
    fn name(&self) -> &str {
        "tallies"
    }
    async fn apply(
        &self,
        tx: &mut msa::events::Tx,
        event: &msa::events::event_store::RecordedEvent,
    ) -> Result<(), msa::events::Error> {
        msa::events::sqlx::query(
            "INSERT INTO tallies (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = tallies.n + 1",
        )
        .bind(&event.stream_id)
        .execute(tx.conn())
        .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut msa::events::Tx) -> Result<(), msa::events::Error> {
        msa::events::sqlx::query("DELETE FROM tallies")
            .execute(tx.conn())
            .await?;
        Ok(())
    }
}

/// A management GET, with the token.
async fn managed(http: &reqwest::Client, url: &str) -> reqwest::Response {
    http.get(url).bearer_auth("s3cret").send().await.unwrap()
}

fn app(dir: &Path, name: &str, yaml: &str) -> msa::App {
    replica(dir, name, name, yaml)
}

/// An app named `name` with its settings in `dir/files`.
fn replica(dir: &Path, name: &str, files: &str, yaml: &str) -> msa::App {
    let dir = dir.join(files);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("application.yml"), yaml).unwrap();
    msa::App::new(name)
        .load(Load {
            dirs: vec![dir],
            env: Default::default(),
            profiles: Some(vec![]),
        })
        .bind("127.0.0.1:0")
        .handle_signals(false)
}

/// A failure as a 500 with its reason.
fn fail(error: impl std::fmt::Display) -> (http::StatusCode, String) {
    (http::StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_writes_its_row_and_message_together_and_the_app_relays_it() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "spring.datasource.url: jdbc:sqlite:{}/orders.db\n\
         msa.management.token: s3cret\n\
         msa.events.relay.poll-interval: 50ms\n\
         spring.cloud.stream.bindings:\n  \
           placed:\n    destination: app-events-orders\n  \
           audit-in-0:\n    destination: app-events-orders\n    group: audit\n",
        dir.path().display()
    );
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let recorded = seen.clone();
    let mut orders = app(dir.path(), "orders", &yaml).stream(move |stream| {
        stream.consumer("audit", move |message: Message<Value>| {
            let recorded = recorded.clone();
            async move {
                recorded.lock().unwrap().push(message.payload);
                Ok::<_, String>(())
            }
        })
    });
    let store = orders.events_store().await.unwrap();
    msa::events::sqlx::raw_sql("CREATE TABLE orders (id TEXT PRIMARY KEY)")
        .execute(store.pool())
        .await
        .unwrap();
    let saga = Saga::<Value>::new("stuck")
        .step("hold", |_, data| async move { Ok::<_, String>(data) })
        .compensate(|_, _data: Value| async move { Err::<Value, _>("the ledger is down") })
        .step("fail", |_, _data: Value| async move {
            Err::<Value, _>("refused")
        });
    msa::events::sqlx::raw_sql("CREATE TABLE tallies (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let events = msa::events::EventStore::new(store.clone());
    for id in ["a", "b", "a"] {
        events.execute::<Tally>(id, ()).await.unwrap();
    }
    let tallies = msa::events::projection::Projector::new(events, Tallies).unwrap();
    let orchestrator = Orchestrator::new(store.clone())
        .saga(saga)
        .compensation_attempts(1);
    let router = Router::new()
        .route(
            "/orders/{id}",
            post(
                |State(store): State<Store>,
                 axum::extract::Path(id): axum::extract::Path<String>| async move {
                    let mut tx = store.begin().await.map_err(fail)?;
                    msa::events::sqlx::query("INSERT INTO orders (id) VALUES ($1)")
                        .bind(&id)
                        .execute(tx.conn())
                        .await
                        .map_err(fail)?;
                    tx.send("placed", Message::new(json!({ "placed": id })))
                        .await
                        .map_err(fail)?;
                    tx.commit().await.map_err(fail)
                },
            ),
        )
        .with_state(store.clone());
    let running = orders
        .router(router)
        .sagas(orchestrator.clone())
        .projection(tallies)
        .start()
        .await
        .unwrap();
    let base = format!("http://{}", running.local_addr());
    let http = reqwest::Client::new();
    for id in ["o-1", "o-2"] {
        let response = http
            .post(format!("{base}/orders/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // A duplicate id fails the transaction: no message for it.
    let duplicate = http
        .post(format!("{base}/orders/o-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(duplicate.status(), 500);
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [json!({ "placed": "o-1" }), json!({ "placed": "o-2" })]
    );

    let health: Value = managed(&http, &format!("{base}/actuator/health"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["components"]["db"]["status"], "UP", "{health}");
    assert_eq!(health["components"]["db"]["details"]["database"], "SQLite");

    orchestrator.start("stuck", "s-1", json!({})).await.unwrap();
    orchestrator
        .wait("s-1", Duration::from_secs(10))
        .await
        .unwrap();
    let unauthorised = http
        .get(format!("{base}/actuator/sagas"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    let sagas: Value = managed(&http, &format!("{base}/actuator/sagas"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(sagas["counts"]["FAILED"], 1, "{sagas}");
    assert_eq!(
        sagas["sagas"][0]["error"],
        "compensating hold: the ledger is down"
    );
    let too_many = managed(&http, &format!("{base}/actuator/sagas?limit=100000")).await;
    assert_eq!(too_many.status(), 400);
    assert!(too_many.text().await.unwrap().contains("at most 1000"));

    // The projection: caught up, listed with its lag, rebuilt on demand.
    let listed = async || -> Value {
        managed(&http, &format!("{base}/actuator/projections"))
            .await
            .json()
            .await
            .unwrap()
    };
    for _ in 0..200 {
        if listed().await["projections"][0]["lag"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let projections = listed().await;
    assert_eq!(
        projections["projections"][0]["name"], "tallies",
        "{projections}"
    );
    assert_eq!(projections["projections"][0]["lag"], 0, "{projections}");
    let count = |id: &'static str| {
        let pool = store.pool().clone();
        async move {
            msa::events::sqlx::query_scalar::<_, i64>("SELECT n FROM tallies WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!((count("a").await, count("b").await), (2, 1));
    let rebuild = |name: &str| {
        http.post(format!("{base}/actuator/projections/{name}/rebuild"))
            .bearer_auth("s3cret")
            .send()
    };
    let rebuilt: Value = rebuild("tallies").await.unwrap().json().await.unwrap();
    assert_eq!(rebuilt["applied"], 3, "{rebuilt}");
    assert_eq!((count("a").await, count("b").await), (2, 1));
    assert_eq!(rebuild("nope").await.unwrap().status(), 404);
    let unauthorised = http
        .post(format!("{base}/actuator/projections/tallies/rebuild"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_app_without_a_datasource_is_told_which_key_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app(dir.path(), "nodb", "server.port: 0\n");
    let error = app.events_store().await.unwrap_err().to_string();
    assert!(error.contains("spring.datasource.url"), "{error}");
    assert!(error.contains("not set"), "{error}");
}

/// Messages waiting in `store`'s outbox.
#[cfg(feature = "etcd")]
async fn waiting(store: &Store) -> i64 {
    use msa::events::sqlx::Row as _;
    msa::events::sqlx::query("SELECT COUNT(*) FROM msa_outbox")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0)
}

/// Waits (up to `within`) until `store`'s outbox is empty.
#[cfg(feature = "etcd")]
async fn relayed(store: &Store, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while waiting(store).await > 0 {
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_election_one_replica_relays_and_the_next_takes_over_when_it_stops() {
    let cluster = etcd_cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    // Two replicas of one app, each with its own database (so whose relay runs shows in
    // whose outbox empties).
    let mut replicas = Vec::new();
    for name in ["a", "b"] {
        let yaml = format!(
            "spring.datasource.url: sqlite://{}/{name}.db\n\
             msa.events.relay.poll-interval: 50ms\n\
             msa.events.election.endpoints: etcd://{}\n\
             spring.cloud.stream.bindings.placed.destination: election-orders\n",
            dir.path().display(),
            cluster.endpoints(),
        );
        let mut replica = replica(dir.path(), "orders", name, &yaml);
        let store = replica.events_store().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        tx.send("placed", Message::new(json!({ "by": name })))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        replicas.push((replica.start().await.unwrap(), store));
    }
    let leader = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            for (n, (_, store)) in replicas.iter().enumerate() {
                if waiting(store).await == 0 {
                    return n;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("one replica relays");
    // The other does not, though its relay would look every 50 ms.
    let other = 1 - leader;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        waiting(&replicas[other].1).await,
        1,
        "only the leader relays"
    );

    // The leader stops: it resigns, and the other relays well before the 10 s a lapsed
    // lease would take.
    let (running, _) = replicas.remove(leader);
    running.shutdown().await.unwrap();
    let (running, store) = replicas.remove(0);
    assert!(
        relayed(&store, Duration::from_secs(5)).await,
        "the other replica took over"
    );
    running.shutdown().await.unwrap();
}
