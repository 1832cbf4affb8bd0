//! JwtAuth and ApiKey at the edge.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use serde_json::{Value, json};

use crate::support::{GatewayProcess, client, json_of, upstream};

/// A token with these claims, signed with `key` by `alg`.
fn token(
    alg: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    kid: Option<&str>,
    claims: Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_and_api_key_authentication() {
    use jsonwebtoken::{Algorithm, EncodingKey};

    let a = upstream("a").await;
    // The JWKS: the RSA key, published by a server of the test's own.
    let rsa_private = std::fs::read(fixture("rsa-private.pem")).unwrap();
    let rsa = EncodingKey::from_rsa_pem(&rsa_private).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("k1".into());
    let jwks = json!({ "keys": [jwk] });
    let jwks_app = Router::new().route("/jwks.json", get(move || async move { axum::Json(jwks) }));
    let jwks_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_addr = jwks_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(jwks_listener, jwks_app).await });

    let secret = "an hs256 secret of at least thirty-two bytes";
    let yaml = format!(
        "
routes:
  - id: hs
    uri: http://{a}
    predicates: [ 'Path=/hs/**' ]
    filters:
      - name: JwtAuth
        args: {{ hs256-secret: '{secret}', issuer: https://issuer.test, audience: shop, leeway: 0 }}
  - id: es
    uri: http://{a}
    predicates: [ 'Path=/es/**' ]
    filters:
      - name: JwtAuth
        args: {{ public-key-file: '{}' }}
  - id: jwks
    uri: http://{a}
    predicates: [ 'Path=/jwks/**' ]
    filters:
      - name: JwtAuth
        args: {{ jwks-uri: 'http://{jwks_addr}/jwks.json' }}
  - id: keyed
    uri: http://{a}
    predicates: [ 'Path=/keyed/**' ]
    filters:
      - name: ApiKey
        args: {{ keys: [ k-123, k-456 ] }}
",
        fixture("ec-public.pem").display()
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    let now = jsonwebtoken::get_current_timestamp();
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let claims = |exp: u64, iss: &str, aud: &str| json!({"sub": "alice", "exp": exp, "iss": iss, "aud": aud});
    let call = |path: &'static str, token: Option<String>| {
        let mut request = http.get(gateway.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let challenge = |response: &reqwest::Response| {
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned()
    };

    // HS256 with issuer and audience.
    let good = token(
        Algorithm::HS256,
        &hs,
        None,
        claims(now + 60, "https://issuer.test", "shop"),
    );
    assert_eq!(call("/hs/x", Some(good)).await.unwrap().status(), 200);
    let response = call("/hs/x", None).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(challenge(&response), "Bearer realm=\"msa-gateway\"");
    let cases = [
        (
            token(
                Algorithm::HS256,
                &hs,
                None,
                claims(now - 10, "https://issuer.test", "shop"),
            ),
            "the token has expired",
        ),
        (
            token(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another secret, also thirty-two bytes"),
                None,
                claims(now + 60, "https://issuer.test", "shop"),
            ),
            "the signature does not verify",
        ),
        (
            token(
                Algorithm::HS256,
                &hs,
                None,
                claims(now + 60, "https://evil.test", "shop"),
            ),
            "wrong issuer",
        ),
        (
            token(
                Algorithm::HS256,
                &hs,
                None,
                claims(now + 60, "https://issuer.test", "admin"),
            ),
            "wrong audience",
        ),
        // alg "none": header {"alg":"none"}, no signature.
        (
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.".to_owned(),
            "malformed token",
        ),
        ("not.a.token".to_owned(), "malformed token"),
    ];
    for (bad, why) in cases {
        let response = call("/hs/x", Some(bad)).await.unwrap();
        assert_eq!(response.status(), 401, "{why}");
        let challenge = challenge(&response);
        assert!(
            challenge.contains("error=\"invalid_token\"") && challenge.contains(why),
            "{challenge}"
        );
    }

    // ES256 from a public key file; an RS256 token does not pass.
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).unwrap()).unwrap();
    let es = token(
        Algorithm::ES256,
        &ec,
        None,
        json!({"sub": "bob", "exp": now + 60}),
    );
    assert_eq!(call("/es/x", Some(es)).await.unwrap().status(), 200);
    let rs = token(
        Algorithm::RS256,
        &rsa,
        None,
        json!({"sub": "bob", "exp": now + 60}),
    );
    assert_eq!(call("/es/x", Some(rs.clone())).await.unwrap().status(), 401);

    // RS256 through the JWKS (fetched in the background: allow it a moment).
    let rs = token(
        Algorithm::RS256,
        &rsa,
        Some("k1"),
        json!({"sub": "carol", "exp": now + 60}),
    );
    let mut status = 0;
    for _ in 0..100 {
        status = call("/jwks/x", Some(rs.clone()))
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    let forged = token(
        Algorithm::HS256,
        &hs,
        Some("k1"),
        json!({"sub": "carol", "exp": now + 60}),
    );
    assert_eq!(call("/jwks/x", Some(forged)).await.unwrap().status(), 401);

    // API keys: accepted ones pass (and stay at the gateway); others get 401.
    let response = http
        .get(gateway.url("/keyed/x"))
        .header("x-api-key", "k-456")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        json_of(response).await["headers"]
            .get("x-api-key")
            .is_none()
    );
    let response = http
        .get(gateway.url("/keyed/x"))
        .header("x-api-key", "k-999")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(challenge(&response), "ApiKey header=\"x-api-key\"");
    assert_eq!(gateway.get("/keyed/x").await.status(), 401);
}
