//! msa-registry's Eureka API over real HTTP, with bodies shaped as the Java client sends.

use std::net::SocketAddr;

use msa_discovery::registry::{RegistryServer, Store, StoreConfig};
use serde_json::{Value, json};

async fn serve(server: RegistryServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server.router()).await.unwrap() });
    addr
}

/// The reason in an error answer (msa's `{status, error, message}`).
async fn reason(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["message"].as_str().unwrap().to_owned()
}

fn body(app: &str, port: u16) -> Value {
    json!({"instance": {
        "instanceId": format!("host:{}:{port}", app.to_lowercase()), "hostName": "host", "app": app,
        "ipAddr": "127.0.0.1", "status": "UP", "overriddenstatus": "UNKNOWN",
        "port": {"$": port, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": 10, "durationInSecs": 30},
        "metadata": {"@class": "java.util.Collections$EmptyMap"},
        "vipAddress": app.to_lowercase(), "secureVipAddress": app.to_lowercase(),
        "lastDirtyTimestamp": "1700000000000"
    }})
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<&'static str>,
}

impl Client {
    fn new(addr: SocketAddr, base: &str) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: format!("http://{addr}{base}"),
            token: None,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        match self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn status(&self, method: reqwest::Method, path: &str, json: Option<Value>) -> u16 {
        let mut request = self.request(method, path);
        if let Some(json) = json {
            request = request.json(&json);
        }
        request.send().await.unwrap().status().as_u16()
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.unwrap()
    }
}

use reqwest::Method;

#[tokio::test]
async fn the_eureka_lifecycle_on_both_base_paths() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let spring = Client::new(addr, "/eureka");
    let netflix = Client::new(addr, "/eureka/v2");

    assert_eq!(
        spring
            .status(Method::POST, "/apps/ORDERS", Some(body("ORDERS", 8081)))
            .await,
        204
    );
    assert_eq!(
        netflix
            .status(Method::POST, "/apps/orders", Some(body("ORDERS", 8082)))
            .await,
        204
    );

    let apps = spring.get("/apps").await;
    assert_eq!(apps["applications"]["apps__hashcode"], "UP_2_");
    let orders = &apps["applications"]["application"][0];
    assert_eq!(orders["name"], "ORDERS");
    assert_eq!(orders["instance"].as_array().unwrap().len(), 2);
    let first = &orders["instance"][0];
    assert_eq!(first["port"], json!({"$": 8081, "@enabled": "true"}));
    assert_eq!(first["leaseInfo"]["durationInSecs"], "30");

    assert_eq!(
        spring
            .status(Method::PUT, "/apps/ORDERS/host:orders:8081", None)
            .await,
        200
    );
    assert_eq!(
        spring.status(Method::PUT, "/apps/ORDERS/nope", None).await,
        404,
        "re-register"
    );
    assert_eq!(
        spring
            .status(
                Method::PUT,
                "/apps/ORDERS/host:orders:8081?lastDirtyTimestamp=9700000000000",
                None
            )
            .await,
        404,
        "the client's copy is newer"
    );

    assert_eq!(
        spring
            .status(
                Method::PUT,
                "/apps/ORDERS/host:orders:8081/status?value=OUT_OF_SERVICE",
                None
            )
            .await,
        200
    );
    let one = netflix.get("/apps/orders/host:orders:8081").await;
    assert_eq!(one["instance"]["status"], "OUT_OF_SERVICE");
    assert_eq!(one["instance"]["overriddenStatus"], "OUT_OF_SERVICE");
    assert_eq!(
        spring
            .status(
                Method::DELETE,
                "/apps/ORDERS/host:orders:8081/status?value=UP",
                None
            )
            .await,
        200
    );
    assert_eq!(
        spring.get("/instances/host:orders:8081").await["instance"]["status"],
        "UP"
    );

    assert_eq!(
        spring
            .status(
                Method::PUT,
                "/apps/ORDERS/host:orders:8082/metadata?zone=eu-1b",
                None
            )
            .await,
        200
    );
    assert_eq!(
        spring.get("/apps/ORDERS").await["application"]["instance"][1]["metadata"]["zone"],
        "eu-1b"
    );
    let vip = spring.get("/vips/orders").await;
    assert_eq!(
        vip["applications"]["application"][0]["instance"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        spring.get("/svips/nothing").await["applications"]["application"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    assert_eq!(
        spring
            .status(Method::DELETE, "/apps/ORDERS/host:orders:8081", None)
            .await,
        200
    );
    assert_eq!(
        spring
            .status(Method::DELETE, "/apps/ORDERS/host:orders:8081", None)
            .await,
        404
    );
    let delta = spring.get("/apps/delta").await;
    let actions: Vec<&str> = delta["applications"]["application"][0]["instance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["actionType"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"ADDED"));
    assert_eq!(actions.last(), Some(&"DELETED"));
    assert_eq!(spring.status(Method::GET, "/apps/NOBODY", None).await, 404);
}

#[tokio::test]
async fn bad_registrations_get_400_with_the_reason() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let client = Client::new(addr, "/eureka");
    let response = client
        .request(Method::POST, "/apps/ORDERS")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(reason(response).await.contains("not {\"instance\""));

    let mut missing = body("ORDERS", 8081);
    missing["instance"]["hostName"] = json!("");
    missing["instance"]
        .as_object_mut()
        .unwrap()
        .remove("ipAddr");
    let response = client
        .request(Method::POST, "/apps/ORDERS")
        .json(&missing)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let reason = reason(response).await;
    assert!(
        reason.contains("hostName") && reason.contains("ipAddr"),
        "{reason}"
    );

    assert_eq!(
        client
            .status(Method::POST, "/apps/INVENTORY", Some(body("ORDERS", 8081)))
            .await,
        400
    );
    assert_eq!(
        client
            .status(Method::PUT, "/apps/ORDERS/x/status?value=SIDEWAYS", None)
            .await,
        400
    );
}

#[tokio::test]
async fn a_token_guards_writes_and_reads_stay_open() {
    let server = RegistryServer::new(Store::new(StoreConfig::default())).token("s3cret");
    let addr = serve(server).await;
    let mut client = Client::new(addr, "/eureka");
    assert_eq!(
        client
            .status(Method::POST, "/apps/ORDERS", Some(body("ORDERS", 8081)))
            .await,
        401
    );
    client.token = Some("wrong");
    assert_eq!(
        client
            .status(Method::POST, "/apps/ORDERS", Some(body("ORDERS", 8081)))
            .await,
        401
    );
    client.token = Some("s3cret");
    assert_eq!(
        client
            .status(Method::POST, "/apps/ORDERS", Some(body("ORDERS", 8081)))
            .await,
        204
    );
    client.token = None;
    assert_eq!(
        client.get("/apps").await["applications"]["apps__hashcode"],
        "UP_1_"
    );
    assert_eq!(
        client
            .status(Method::DELETE, "/apps/ORDERS/host:orders:8081", None)
            .await,
        401
    );
    // As Spring's Eureka client sends it from `http://eureka:s3cret@host:8761/eureka`:
    // Basic with the token as the password.
    let http = reqwest::Client::new();
    let renew = |password: &'static str| {
        http.put(format!(
            "http://{addr}/eureka/apps/ORDERS/host:orders:8081?status=UP"
        ))
        .basic_auth("eureka", Some(password))
        .send()
    };
    assert_eq!(renew("wrong").await.unwrap().status(), 401);
    assert_eq!(renew("s3cret").await.unwrap().status(), 200);

    let health: Value = reqwest::get(format!("http://{addr}/actuator/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["components"]["registry"]["details"]["instances"], 1);
    assert_eq!(
        health["components"]["registry"]["details"]["selfPreservation"],
        "OFF"
    );
}

#[tokio::test]
async fn xml_unless_the_client_accepts_json_and_xml_registrations() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let http = reqwest::Client::new();
    let xml_body = r#"<instance><instanceId>host:inventory:9000</instanceId><hostName>host</hostName>
      <app>INVENTORY</app><ipAddr>127.0.0.1</ipAddr><status>UP</status>
      <port enabled="true">9000</port>
      <dataCenterInfo class="com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"><name>MyOwn</name></dataCenterInfo>
      <metadata class="java.util.Collections$EmptyMap"/></instance>"#;
    let response = http
        .post(format!("http://{addr}/eureka/v2/apps/INVENTORY"))
        .header("content-type", "application/xml")
        .body(xml_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // No Accept header: XML, as py-eureka-client expects.
    let response = http
        .get(format!("http://{addr}/eureka/apps"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/xml");
    let text = response.text().await.unwrap();
    assert!(text.contains("<name>INVENTORY</name>"), "{text}");
    assert!(
        text.contains(r#"<port enabled="true">9000</port>"#),
        "{text}"
    );
    assert!(
        text.contains("<apps__hashcode>UP_1_</apps__hashcode>"),
        "{text}"
    );

    let bad = http
        .post(format!("http://{addr}/eureka/apps/INVENTORY"))
        .header("content-type", "text/xml")
        .body("<instance><unclosed>")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(reason(bad).await.contains("<instance>"));
}

#[tokio::test]
async fn the_native_watch_answers_when_the_service_changes_and_only_then() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let client = Client::new(addr, "/eureka");
    assert_eq!(
        client
            .status(Method::POST, "/apps/ORDERS", Some(body("ORDERS", 8081)))
            .await,
        204
    );

    let now: Value = reqwest::get(format!("http://{addr}/msa/v1/services/orders"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let index = now["index"].as_u64().unwrap();
    assert_eq!(now["service"], "orders");
    assert_eq!(now["instances"][0]["port"], 8081);
    assert_eq!(now["instances"][0]["status"], "UP");

    // Unchanged: the same index when the wait is over.
    let same: Value = reqwest::get(format!(
        "http://{addr}/msa/v1/services/orders?index={index}&wait=200ms"
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(same["index"].as_u64(), Some(index));

    let watch = tokio::spawn(async move {
        reqwest::get(format!(
            "http://{addr}/msa/v1/services/orders?index={index}&wait=20s"
        ))
        .await
        .unwrap()
    });
    // Another service changing does not answer it...
    assert_eq!(
        client
            .status(
                Method::POST,
                "/apps/INVENTORY",
                Some(body("INVENTORY", 9000))
            )
            .await,
        204
    );
    let inventory: Value = reqwest::get(format!("http://{addr}/msa/v1/services/inventory"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(inventory["instances"].as_array().unwrap().len(), 1);
    assert!(!watch.is_finished());
    // ...this one does.
    assert_eq!(
        client
            .status(
                Method::PUT,
                "/apps/ORDERS/host:orders:8081/status?value=OUT_OF_SERVICE",
                None
            )
            .await,
        200
    );
    let response = tokio::time::timeout(std::time::Duration::from_secs(10), watch)
        .await
        .unwrap()
        .unwrap();
    let header: u64 = response.headers()["x-msa-index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let changed: Value = response.json().await.unwrap();
    assert!(changed["index"].as_u64().unwrap() > index);
    assert_eq!(changed["index"].as_u64(), Some(header));
    assert_eq!(changed["instances"][0]["status"], "OUT_OF_SERVICE");

    let bad = reqwest::get(format!(
        "http://{addr}/msa/v1/services/orders?index=1&wait=soon"
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
}

/// Every Eureka read, on both base paths, with and without a trailing slash, as JSON and
/// as XML: the forms Spring's, the JavaScript and the Python clients ask for.
#[tokio::test]
async fn every_eureka_read_answers_with_and_without_a_trailing_slash() {
    let addr = serve(RegistryServer::new(Store::new(StoreConfig::default()))).await;
    let spring = Client::new(addr, "/eureka");
    assert_eq!(
        spring
            .status(Method::POST, "/apps/ORDERS/", Some(body("ORDERS", 8081)))
            .await,
        204
    );
    let http = reqwest::Client::new();
    let reads = [
        "/apps",
        "/apps/delta",
        "/apps/ORDERS",
        "/apps/ORDERS/host:orders:8081",
        "/instances/host:orders:8081",
        "/vips/orders",
        "/svips/orders",
    ];
    for base in ["/eureka", "/eureka/v2"] {
        for read in reads {
            for slash in ["", "/"] {
                let url = format!("http://{addr}{base}{read}{slash}");
                let json = http
                    .get(&url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(json.status(), 200, "{url} as JSON");
                let json: Value = json.json().await.unwrap();
                assert!(
                    json.to_string().contains("host:orders:8081"),
                    "{url}: {json}"
                );
                let xml = http.get(&url).send().await.unwrap();
                assert_eq!(xml.status(), 200, "{url} as XML");
                assert_eq!(xml.headers()["content-type"], "application/xml", "{url}");
                let xml = xml.text().await.unwrap();
                assert!(xml.contains("host:orders:8081"), "{url}: {xml}");
            }
        }
    }
    // Writes take the slash too; a query stays with the path.
    for slash in ["", "/"] {
        let path = format!("/apps/ORDERS/host:orders:8081{slash}?status=UP");
        assert_eq!(spring.status(Method::PUT, &path, None).await, 200, "{path}");
    }
    // Only one slash is dropped, and only on Eureka's paths.
    assert_eq!(spring.status(Method::GET, "/apps//", None).await, 404);
    let actuator = http.get(format!("http://{addr}/actuator/health/")).send();
    assert_eq!(actuator.await.unwrap().status(), 404);
}

/// The Eureka discovery backend and `Registration` send the requests Spring's Eureka client
/// sends: `apps/` for the full registry, `apps/delta`, and heartbeats with the status and
/// the instance's `lastDirtyTimestamp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eureka_backend_and_registration_ask_as_springs_client_does() {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use msa_core::ServiceInstance;
    use msa_discovery::discovery::{Discovery, EurekaDiscovery};
    use msa_discovery::registration::Registration;

    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let record = {
        let seen = seen.clone();
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let line = format!("{} {}", request.method(), request.uri());
            seen.lock().unwrap().push(line);
            next.run(request)
        }
    };
    let registry = RegistryServer::new(Store::new(StoreConfig::default())).router();
    let recording = axum::Router::new()
        .fallback_service(registry)
        .layer(axum::middleware::from_fn(record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, recording).await.unwrap() });
    let base = format!("http://{addr}/eureka");

    let registration = Registration::new(
        base.clone(),
        ServiceInstance::new("orders", "127.0.0.1", 8081).with_id("orders-1"),
    );
    registration.register().await.unwrap();
    registration.renew().await.unwrap();
    let eureka = EurekaDiscovery::new(base).interval(Duration::from_millis(20));
    let mut orders = eureka.watch("orders");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while orders.borrow_and_update().is_empty() {
        tokio::time::timeout_at(deadline, orders.changed())
            .await
            .unwrap()
            .unwrap();
    }
    // A delta or two after the full fetch.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "GET /eureka/apps/delta")
    {
        assert!(std::time::Instant::now() < deadline, "no delta fetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    registration.deregister().await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], "POST /eureka/apps/ORDERS");
    assert!(
        seen[1].starts_with("PUT /eureka/apps/ORDERS/orders-1?status=UP&lastDirtyTimestamp="),
        "{seen:?}"
    );
    assert_eq!(seen[2], "GET /eureka/apps/");
    assert_eq!(seen[3], "GET /eureka/apps/delta");
    assert_eq!(seen.last().unwrap(), "DELETE /eureka/apps/ORDERS/orders-1");
}
