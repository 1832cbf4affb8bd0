//! msa-registry in process for `msa::App`'s tests, and what it lists.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::response::IntoResponse;
use msa_discovery::registry::{RegistryServer, Store, StoreConfig};
use serde_json::Value;

/// An in-process msa-registry; with `watch` false, its native watch answers 404, as a
/// Spring Eureka server's does.
pub async fn serve_registry(watch: bool) -> SocketAddr {
    let server = RegistryServer::new(Store::new(StoreConfig::default()));
    let mut router = server.router();
    if !watch {
        router = router.layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| async move {
                if request.uri().path().starts_with("/msa/") {
                    return axum::http::StatusCode::NOT_FOUND.into_response();
                }
                next.run(request).await
            },
        ));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The instances the registry at `addr` lists for `app`, once there are `count`.
pub async fn registered(addr: SocketAddr, app: &str, count: usize) -> Vec<Value> {
    let url = format!("http://{addr}/eureka/apps/{app}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let answer = reqwest::Client::new()
            .get(&url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            let body: Value = answer.json().await.unwrap();
            let list = body["application"]["instance"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if list.len() >= count {
                return list;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{app} never registered {count}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
