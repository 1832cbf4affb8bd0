//! Anything a client can send to msa-registry: the decoders on their own (Eureka JSON and
//! XML, instance and applications documents), then whole requests through the router
//! (method, path, query, content type, body). No input may panic.
//!
//! Input layout: byte 0 picks the method, byte 1 the content type, then the path and
//! query up to the first newline, then the body.

#![no_main]

use std::sync::LazyLock;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use msa_discovery::eureka::{ApplicationsEnvelope, InstanceEnvelope, xml};
use msa_discovery::registry::{RegistryServer, Store, StoreConfig};
use tower::ServiceExt;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
});

static ROUTER: LazyLock<Router> = LazyLock::new(|| {
    let _guard = RUNTIME.enter();
    RegistryServer::new(Store::new(StoreConfig::default())).router()
});

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "HEAD"];
const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/xml",
    "text/xml; charset=utf-8",
    "application/x-www-form-urlencoded",
];

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = xml::from_str::<InstanceEnvelope>(text);
        let _ = xml::from_str::<ApplicationsEnvelope>(text);
        let _ = xml::to_json(text);
    }
    let _ = serde_json::from_slice::<InstanceEnvelope>(data);
    let _ = serde_json::from_slice::<ApplicationsEnvelope>(data);

    let [method, content_type, rest @ ..] = data else { return };
    let (target, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(target) = std::str::from_utf8(target) else { return };
    let Ok(request) = Request::builder()
        .method(METHODS[usize::from(*method) % METHODS.len()])
        .uri(format!("/eureka/{}", target.trim_start_matches('/')))
        .header("content-type", CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()])
        .header("accept", if method & 0x80 == 0 { "application/json" } else { "*/*" })
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    let response = RUNTIME.block_on(ROUTER.clone().oneshot(request)).unwrap();
    assert!(response.status().as_u16() < 500, "{}", response.status());
});
