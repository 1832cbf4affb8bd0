//! Services check bearer tokens as Spring Security's resource server does: keys from
//! `spring.security.oauth2.resourceserver.jwt.*` (an issuer's discovery document and JWK
//! Set served on 127.0.0.1, or an HS256 secret), 401 with the reason for a missing,
//! expired or foreign token, the claims handed to handlers, scopes checked per route,
//! and the actuator's health left open.

#![cfg(feature = "jwt")]

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use msa::core::jwt::{Claims, require_scope};
use msa::core::settings::Load;
use serde_json::{Value, json};

const SECRET: &str = "a shared secret of at least thirty-two bytes";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn routes() -> Router {
    Router::new()
        .route(
            "/orders",
            get(|claims: Claims| async move {
                format!("orders of {}", claims.subject().unwrap_or("nobody"))
            }),
        )
        .route(
            "/orders",
            post(|| async { "placed" }).route_layer(require_scope("orders.write")),
        )
}

fn app(dir: &tempfile::TempDir, yaml: &str) -> msa::App {
    std::fs::write(dir.path().join("application.yml"), yaml).unwrap();
    let load = Load {
        dirs: vec![dir.path().to_owned()],
        env: Default::default(),
        profiles: Some(vec![]),
    };
    msa::App::new("secured")
        .load(load)
        .bind("127.0.0.1:0")
        .handle_signals(false)
        .router(routes())
}

async fn call(method: reqwest::Method, url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.unwrap();
    let challenge = answer
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        answer.status().as_u16(),
        challenge,
        answer.text().await.unwrap(),
    )
}

#[tokio::test]
async fn a_service_refuses_bad_tokens_and_hands_a_good_ones_claims_to_its_handler() {
    let dir = tempfile::tempdir().unwrap();
    let running = app(&dir, &format!(
        "msa.security.jwt:\n  hs256-secret: {SECRET}\n  issuer: https://auth.example.com\nspring.security.oauth2.resourceserver.jwt.audiences: orders\n"
    ))
    .start()
    .await
    .unwrap();
    let base = format!("http://{}", running.local_addr());
    let hs = |claims: Value| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let good = json!({ "sub": "ann", "iss": "https://auth.example.com", "aud": "orders", "exp": now() + 600, "scope": "orders.read" });

    let (status, challenge, _) = call(reqwest::Method::GET, &format!("{base}/orders"), None).await;
    assert_eq!(
        (status, challenge.as_str()),
        (401, "Bearer realm=\"secured\"")
    );

    for (change, reason) in [
        (("exp", json!(now() - 3600)), "the token has expired"),
        (("iss", json!("https://evil.example.com")), "wrong issuer"),
        (("aud", json!("payments")), "wrong audience"),
    ] {
        let mut claims = good.clone();
        claims[change.0] = change.1;
        let (status, challenge, _) = call(
            reqwest::Method::GET,
            &format!("{base}/orders"),
            Some(&hs(claims)),
        )
        .await;
        assert_eq!(status, 401, "{reason}");
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains(reason),
            "{challenge}"
        );
    }
    // Signed with another secret, or not a token at all.
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(b"another secret of at least thirty-two bytes"),
    )
    .unwrap();
    for token in [forged.as_str(), "not.a.token", &"x".repeat(64 * 1024)] {
        let (status, _, _) =
            call(reqwest::Method::GET, &format!("{base}/orders"), Some(token)).await;
        assert_eq!(status, 401);
    }

    // A good token: the handler sees its subject; scopes are checked per route.
    let token = hs(good.clone());
    let (status, _, body) = call(
        reqwest::Method::GET,
        &format!("{base}/orders"),
        Some(&token),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "orders of ann"));
    let (status, challenge, _) = call(
        reqwest::Method::POST,
        &format!("{base}/orders"),
        Some(&token),
    )
    .await;
    assert_eq!(status, 403);
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    let mut writer = good.clone();
    writer["scope"] = json!("orders.read orders.write");
    let (status, _, body) = call(
        reqwest::Method::POST,
        &format!("{base}/orders"),
        Some(&hs(writer)),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "placed"));

    // The actuator's health stays open.
    let (status, _, _) = call(
        reqwest::Method::GET,
        &format!("{base}/actuator/health"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn keys_come_from_the_issuers_discovery_document_and_jwk_set() {
    let dir = tempfile::tempdir().unwrap();
    // An issuer on 127.0.0.1: its discovery document and a JWK Set with one P-256 key.
    let key = rcgen::KeyPair::generate().unwrap();
    let point = key.public_key_raw();
    assert_eq!(point[0], 4, "an uncompressed P-256 point");
    let jwk = json!({
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let document = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let router = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(document) }),
        )
        .route(
            "/jwks",
            get(move || async move { axum::Json(json!({ "keys": [jwk] })) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let running = app(
        &dir,
        &format!("spring.security.oauth2.resourceserver.jwt.issuer-uri: {issuer}\n"),
    )
    .start()
    .await
    .unwrap();
    let base = format!("http://{}", running.local_addr());
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let es = |claims: Value, kid: &str| {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &signing).unwrap()
    };
    let claims = json!({ "sub": "bob", "iss": issuer, "exp": now() + 600 });
    // The JWK Set is fetched in the background: the first calls may find no key yet.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, _, body) = call(
            reqwest::Method::GET,
            &format!("{base}/orders"),
            Some(&es(claims.clone(), "k1")),
        )
        .await;
        if status == 200 {
            assert_eq!(body, "orders of bob");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Another issuer's token, signed with the same key, is still refused.
    let mut foreign = claims.clone();
    foreign["iss"] = json!("https://evil.example.com");
    let (status, challenge, _) = call(
        reqwest::Method::GET,
        &format!("{base}/orders"),
        Some(&es(foreign, "k1")),
    )
    .await;
    assert_eq!(status, 401);
    assert!(challenge.contains("wrong issuer"), "{challenge}");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_issuer_that_does_not_answer_fails_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = app(
        &dir,
        &format!("spring.security.oauth2.resourceserver.jwt.issuer-uri: http://127.0.0.1:{port}\n"),
    )
    .start()
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("application.yml") && error.contains("issuer-uri"),
        "{error}"
    );
    let short = app(&dir, "msa.security.jwt.hs256-secret: short\n")
        .start()
        .await
        .unwrap_err();
    assert!(short.to_string().contains("at least 32 bytes"), "{short}");
}
