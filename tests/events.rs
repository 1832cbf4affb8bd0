//! Data and events in `msa::App`: the service's database from `spring.datasource.url` (a
//! JDBC URL as Spring writes it), an HTTP handler writing its row and its message in one
//! transaction, the app's outbox relay publishing it through the app's stream,
//! `/actuator/sagas` behind the management token, the `db` health component, and a
//! missing datasource named at start.

#![cfg(feature = "events")]

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

fn app(dir: &Path, name: &str, yaml: &str) -> msa::App {
    let dir = dir.join(name);
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

    let health: Value = http
        .get(format!("{base}/actuator/health"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
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
    let sagas: Value = http
        .get(format!("{base}/actuator/sagas"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sagas["counts"]["FAILED"], 1, "{sagas}");
    assert_eq!(
        sagas["sagas"][0]["error"],
        "compensating hold: the ledger is down"
    );
    let too_many = http
        .get(format!("{base}/actuator/sagas?limit=100000"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(too_many.status(), 400);
    assert!(too_many.text().await.unwrap().contains("at most 1000"));
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
