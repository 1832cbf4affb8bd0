//! End-to-end tests of the shop estate: real processes, real HTTP on 127.0.0.1 — the order
//! path through the gateway, the saga's compensation, live config, the breaker opening and
//! recovering, a registry restart, the config server down at a service's start, and an
//! instance killed under load.

#[path = "support/nats.rs"]
mod nats_server;
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Process, config_copy, eventually, get_json, order, registered, service_args};

/// The tests start many processes each: one at a time keeps a 2-core machine responsive.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estate_takes_orders_through_the_gateway_and_follows_its_config() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_copy(dir.path());
    let data = dir.path().join("data");
    let mut estate = Process::start(
        "shop",
        &[
            "--free-ports",
            "--data",
            data.to_str().unwrap(),
            "--config-dir",
            config.to_str().unwrap(),
        ],
        dir.path(),
    );
    let http = reqwest::Client::new();
    let gateway = estate.ready_field("gateway=");

    // An order through the gateway, continuing the caller's trace.
    let response = http
        .post(format!("{gateway}/api/orders"))
        .header("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({ "item": "widget", "qty": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-shop"], "msa"); // the gateway's default filter
    let placed: Value = response.json().await.unwrap();
    assert_eq!(placed["status"], "CONFIRMED", "{placed}");
    assert_eq!(placed["total"], 25.0);
    assert_eq!(placed["trace_id"], TRACE);
    let id = placed["id"].as_str().unwrap();
    let read = get_json(&http, &format!("{gateway}/api/orders/{id}")).await;
    assert_eq!(read, placed);
    let stock = format!("{gateway}/api/stock");
    assert_eq!(get_json(&http, &stock).await["widget"], 998);

    // The mobile gateway, a backend for frontend: routes of its own, answers trimmed to
    // what the app shows (the shop's JsonFields filter), a rate limit per device.
    let mobile = estate.ready_field("mobile=");
    let phone = |request: reqwest::RequestBuilder| request.header("x-device-id", "phone-1");
    let response = phone(http.get(format!("{mobile}/m/stock/widget")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-shaped-for"], "mobile");
    assert_eq!(response.headers()["cache-control"], "max-age=5");
    let shaped: Value = response.json().await.unwrap();
    let mut fields: Vec<&String> = shaped.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["available", "item"], "{shaped}");
    let web: Value = get_json(&http, &format!("{gateway}/api/stock/widget")).await;
    assert!(web.get("reserved").is_some(), "{web}");
    let response = phone(http.get(format!("{mobile}/m/orders/{id}")))
        .send()
        .await
        .unwrap();
    let shaped: Value = response.json().await.unwrap();
    assert_eq!(shaped["status"], "CONFIRMED");
    assert!(shaped.get("trace_id").is_none(), "{shaped}");
    assert_eq!(
        phone(http.get(format!("{mobile}/api/stock")))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let mut limited = false;
    for _ in 0..20 {
        let response = phone(http.get(format!("{mobile}/m/orders/{id}")))
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "phone-1 was never limited");
    let other = http
        .get(format!("{mobile}/m/orders/{id}"))
        .header("x-device-id", "phone-2")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    // Every process on the path logged under the caller's trace id: the gateway in its
    // access log (on the estate's standard output, within its 1 s flush).
    estate.wait_line(
        |line| {
            line.contains("\"POST /api/orders HTTP/1.1\" 201 - ")
                && line.ends_with(&format!(" orders {TRACE}"))
        },
        Duration::from_secs(5),
    );
    let logs = estate.logs();
    for service in ["orders", "inventory", "payments"] {
        assert!(
            logs.contains(&format!("[{service},{TRACE},")),
            "{service} logged nothing under trace {TRACE}:\n{logs}"
        );
    }

    // A declined payment releases the reserved stock: the saga's compensation.
    let api = format!("{gateway}/api");
    let (status, rejected) = order(&http, &api, "gizmo", 5).await;
    assert_eq!(status, 201);
    assert_eq!(rejected["status"], "REJECTED", "{rejected}");
    assert!(
        rejected["reason"]
            .as_str()
            .unwrap()
            .contains("payment declined")
    );
    assert_eq!(get_json(&http, &stock).await["gizmo"], 10);

    // order-history answers from its own read model, fed by orders' events.
    eventually(
        Duration::from_secs(10),
        "both orders in the history",
        || {
            let http = http.clone();
            let url = format!("{gateway}/api/orders/history");
            let (confirmed, rejected) =
                (id.to_owned(), rejected["id"].as_str().unwrap().to_owned());
            async move {
                let history: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                let status = |id: &str| {
                    history
                        .as_array()?
                        .iter()
                        .find(|entry| entry["order_id"] == id)
                        .map(|entry| entry["status"].clone())
                };
                (status(&confirmed)? == "CONFIRMED" && status(&rejected)? == "REJECTED")
                    .then_some(())
            }
        },
    )
    .await;
    // notifications told the customers, under the orders' traces.
    let logs = estate.logs();
    assert!(
        logs.contains(&format!("[notifications,{TRACE},"))
            && logs.contains(&format!("Order {id} confirmed")),
        "no email for {id}:\n{logs}"
    );

    // Orders' calls went through the stack orders.yml names, and the orders instances'
    // scrapes say so under Micrometer's names.
    let registry = estate.ready_field("registry=");
    let apps: Value = http
        .get(format!("{registry}/eureka/apps/ORDERS"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut scrapes = String::new();
    for instance in apps["application"]["instance"].as_array().unwrap() {
        let url = format!(
            "http://{}:{}/actuator/prometheus",
            instance["ipAddr"].as_str().unwrap(),
            instance["port"]["$"].as_u64().unwrap()
        );
        scrapes += &http.get(url).send().await.unwrap().text().await.unwrap();
    }
    for series in [
        r#"resilience4j_retry_calls_total{application="orders",kind="successful_without_retry",name="payments"}"#,
        r#"resilience4j_bulkhead_max_allowed_concurrent_calls{application="orders",name="payments"} 16"#,
        r#"resilience4j_timelimiter_calls_total{application="orders",kind="successful",name="inventory"}"#,
        r#"resilience4j_circuitbreaker_state{application="orders",name="payments",state="closed"} 1"#,
        r#"http_client_requests_seconds_count{application="orders",client_name="inventory",exception="none",method="POST",outcome="SUCCESS",status="201",uri="/reservations"}"#,
    ] {
        assert!(scrapes.contains(series), "{series} not in\n{scrapes}");
    }

    // A bad order is a 400 with the reason.
    let (status, refused) = order(&http, &api, "spaceship", 1).await;
    assert_eq!(status, 400);
    assert!(refused["error"].as_str().unwrap().contains("unknown item"));

    // A price edited in the config directory is charged on the next orders, without a
    // restart.
    let application = config.join("application.yml");
    let text = std::fs::read_to_string(&application).unwrap();
    assert!(text.contains("widget: 12.50"));
    std::fs::write(&application, text.replace("widget: 12.50", "widget: 20.00")).unwrap();
    let edited = Instant::now();
    eventually(Duration::from_secs(5), "the new price", || {
        let http = http.clone();
        let gateway = gateway.clone();
        async move {
            let (status, placed) = order(&http, &format!("{gateway}/api"), "widget", 1).await;
            assert_eq!(status, 201);
            (placed["total"] == 20.0).then_some(())
        }
    })
    .await;
    println!("new price charged {:?} after the edit", edited.elapsed());

    // The feature flag pauses orders.
    let orders_file = config.join("orders.yml");
    let text = std::fs::read_to_string(&orders_file).unwrap();
    std::fs::write(
        &orders_file,
        text.replace("accepting: true", "accepting: false"),
    )
    .unwrap();
    eventually(Duration::from_secs(5), "orders paused", || {
        let http = http.clone();
        let gateway = gateway.clone();
        async move {
            let (status, _) = order(&http, &format!("{gateway}/api"), "widget", 1).await;
            (status == 503).then_some(())
        }
    })
    .await;

    // Stopping the estate stops every process; the services deregister first.
    let status = estate.stop();
    assert!(status.success(), "{status}");
    let logs = estate.logs();
    assert_eq!(logs.matches("deregistered").count(), 7, "{logs}");
}

/// registry, config server (over a copy of the shop's config), the NATS server the
/// services' messages go through, and the data directory.
struct Base {
    dir: tempfile::TempDir,
    registry: Process,
    config: Process,
    nats: nats_server::Server,
    data: String,
}

/// The services of [`Base::pairs`].
struct Pairs {
    inventory_1: Process,
    inventory_2: Process,
    _payments: Process,
    orders_1: Process,
    _orders_2: Process,
}

fn base() -> Base {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = config_copy(dir.path());
    let data = dir.path().join("data").display().to_string();
    let registry = Process::start(
        "registry",
        &["registry", "--bind", "127.0.0.1:0"],
        dir.path(),
    );
    let config = Process::start(
        "config",
        &[
            "config-server",
            "--bind",
            "127.0.0.1:0",
            "--source",
            config_dir.to_str().unwrap(),
        ],
        dir.path(),
    );
    let nats = nats_server::Server::start(&dir.path().join("nats"), nats_server::free_port());
    Base {
        dir,
        registry,
        config,
        nats,
        data,
    }
}

impl Base {
    fn service(&self, name: &str, log: &str) -> Process {
        let nats = self.nats.url();
        let args = service_args(
            name,
            &self.registry.url,
            &self.config.url,
            &self.data,
            &nats,
        );
        Process::start(log, &args, self.dir.path())
    }

    /// msa-gateway with the shop's routes, pointed at this registry.
    fn gateway(&self) -> Process {
        let routes = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop/gateway.yaml"),
        )
        .unwrap()
        .replace("http://127.0.0.1:8761", &self.registry.url);
        let file = self.dir.path().join("gateway.yaml");
        std::fs::write(&file, routes).unwrap();
        Process::start(
            "gateway",
            &[
                "gateway",
                "--bind",
                "127.0.0.1:0",
                "--source",
                file.to_str().unwrap(),
            ],
            self.dir.path(),
        )
    }

    /// Two inventory and two orders instances and payments, all registered.
    async fn pairs(&self) -> Pairs {
        let pairs = Pairs {
            inventory_1: self.service("inventory", "inventory-1"),
            inventory_2: self.service("inventory", "inventory-2"),
            _payments: self.service("payments", "payments"),
            orders_1: self.service("orders", "orders-1"),
            _orders_2: self.service("orders", "orders-2"),
        };
        self.wait_registered("inventory", 2).await;
        self.wait_registered("orders", 2).await;
        self.wait_registered("payments", 1).await;
        pairs
    }

    async fn wait_registered(&self, service: &str, count: usize) {
        let http = reqwest::Client::new();
        eventually(Duration::from_secs(10), service, || {
            let http = http.clone();
            async move { (registered(&http, &self.registry.url, service).await >= count).then_some(()) }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_when_payments_stops_and_orders_recover_when_it_returns() {
    let _serial = SERIAL.lock().await;
    let base = base();
    let _inventory = base.service("inventory", "inventory");
    let mut payments = base.service("payments", "payments");
    let orders = base.service("orders", "orders");
    base.wait_registered("payments", 1).await;
    let http = reqwest::Client::new();
    let (status, placed) = order(&http, &orders.url, "widget", 1).await;
    assert_eq!(
        (status, placed["status"].as_str()),
        (201, Some("CONFIRMED"))
    );

    payments.kill();
    // Held, not failed: the stock stays reserved and the order waits for payments. Once
    // the breaker has seen enough failures (4, in the shop's config) it opens and orders
    // stop calling payments at all.
    let mut held = Vec::new();
    let mut open = false;
    for _ in 0..8 {
        let (status, placed) = order(&http, &orders.url, "widget", 1).await;
        assert_eq!(status, 202, "{placed}");
        assert_eq!(placed["status"], "ON_HOLD");
        open |= placed["reason"].as_str().unwrap().contains("OPEN");
        held.push(placed["id"].as_str().unwrap().to_owned());
    }
    assert!(open, "the breaker never opened:\n{}", orders.logs());

    // payments is back: the breaker lets probes through after its wait (3 s), and the
    // held orders are charged.
    let _payments = base.service("payments", "payments-2");
    for id in &held {
        eventually(Duration::from_secs(20), "a held order charged", || {
            let http = http.clone();
            let url = format!("{}/orders/{id}", orders.url);
            async move {
                let order: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                (order["status"] == "CONFIRMED").then_some(())
            }
        })
        .await;
    }
    let (status, placed) = order(&http, &orders.url, "widget", 1).await;
    assert_eq!(
        (status, placed["status"].as_str()),
        (201, Some("CONFIRMED"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_go_on_while_the_registry_restarts_and_instances_come_back() {
    let _serial = SERIAL.lock().await;
    let mut base = base();
    let _inventory = base.service("inventory", "inventory");
    let _payments = base.service("payments", "payments");
    let orders = base.service("orders", "orders");
    base.wait_registered("payments", 1).await;
    base.wait_registered("inventory", 1).await;
    let http = reqwest::Client::new();
    let (status, _) = order(&http, &orders.url, "widget", 1).await;
    assert_eq!(status, 201);

    let registry_url = base.registry.url.clone();
    let addr = registry_url.trim_start_matches("http://").to_owned();
    base.registry.kill();
    // Without a registry, callers keep the instances they know.
    for _ in 0..5 {
        let (status, placed) = order(&http, &orders.url, "widget", 1).await;
        assert_eq!(
            (status, placed["status"].as_str()),
            (201, Some("CONFIRMED"))
        );
    }
    // A new registry on the same address learns every instance again at its next renewal.
    base.registry = Process::start(
        "registry-2",
        &["registry", "--bind", &addr],
        base.dir.path(),
    );
    assert_eq!(base.registry.url, registry_url);
    for service in ["orders", "inventory", "payments"] {
        base.wait_registered(service, 1).await;
    }
    let (status, _) = order(&http, &orders.url, "widget", 1).await;
    assert_eq!(status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_starts_on_its_cached_config_when_the_config_server_is_down() {
    let _serial = SERIAL.lock().await;
    let mut base = base();
    let mut payments = base.service("payments", "payments");
    base.wait_registered("payments", 1).await;
    assert!(payments.stop().success());

    base.config.kill();
    // payments has no default for its limit: it can only start on the cached copy.
    let payments = base.service("payments", "payments-2");
    let http = reqwest::Client::new();
    let charge = |amount: f64, order_id: &'static str| {
        let http = http.clone();
        let url = format!("{}/payments", payments.url);
        async move {
            http.post(url)
                .json(&serde_json::json!({ "order_id": order_id, "amount": amount }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(charge(10.0, "small").await, 201);
    assert_eq!(charge(1500.0, "large").await, 402);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_killed_or_stopped_under_load_fail_no_order() {
    let _serial = SERIAL.lock().await;
    let base = base();
    // Every field bound: a process left out would be dropped, and killed, at once.
    let Pairs {
        mut inventory_1,
        inventory_2,
        _payments,
        mut orders_1,
        _orders_2,
    } = base.pairs().await;
    let gateway = base.gateway();

    // Four clients ordering through the gateway, 40 orders each.
    let http = reqwest::Client::new();
    let api = format!("{}/api", gateway.url);
    let placed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let http = http.clone();
        let api = api.clone();
        let placed = placed.clone();
        clients.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for _ in 0..40 {
                let (status, answer) = order(&http, &api, "widget", 1).await;
                if status != 201 || answer["status"] != "CONFIRMED" {
                    failures.push(format!("{status} {answer}"));
                }
                placed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            failures
        }));
    }
    let reached = |count: usize| {
        let placed = placed.clone();
        eventually(Duration::from_secs(60), "load under way", move || {
            let placed = placed.clone();
            async move { (placed.load(std::sync::atomic::Ordering::Relaxed) >= count).then_some(()) }
        })
    };
    // An inventory instance dies (SIGKILL: no goodbye); later an orders instance is
    // stopped (it deregisters, then finishes what it has).
    reached(40).await;
    inventory_1.kill();
    reached(90).await;
    drop(orders_1.stop_signal());
    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(orders_1.stop().success());
    // Every confirmed order took its widget, once.
    let stock = get_json(&http, &format!("{}/stock/widget", inventory_2.url)).await;
    assert_eq!(stock["available"], 1000 - 160);
}

/// An instance killed while its callers hold idle keep-alive connections to it costs no
/// caller an error: the gateway (to `orders`) and the orders service's client (to
/// `inventory`) notice the closed connections, and send what could not reach the dead
/// instance to a live one, POSTs with their bodies included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_killed_cost_no_caller_an_error() {
    let _serial = SERIAL.lock().await;
    let base = base();
    let Pairs {
        mut inventory_1,
        inventory_2: _inventory_2,
        _payments,
        mut orders_1,
        _orders_2,
    } = base.pairs().await;
    let gateway = base.gateway();
    let http = reqwest::Client::new();
    let api = format!("{}/api", gateway.url);

    // Every caller holds connections to both instances of what it calls.
    for _ in 0..20 {
        let (status, answer) = order(&http, &api, "widget", 1).await;
        assert_eq!(status, 201, "{answer}");
    }
    let orders_1_served = orders_1.logs().matches("order confirmed").count();
    let inventory_1_served = inventory_1.logs().matches("stock reserved").count();
    assert!(
        orders_1_served > 0 && inventory_1_served > 0,
        "both instances took orders"
    );

    // SIGKILL while idle: no deregistration, and the registry still lists them.
    orders_1.kill();
    inventory_1.kill();
    for n in 0..30 {
        let (status, answer) = order(&http, &api, "widget", 1).await;
        assert_eq!(status, 201, "order {n}: {answer}");
        assert_eq!(answer["status"], "CONFIRMED", "order {n}: {answer}");
    }
    for n in 0..10 {
        let stock = http
            .get(format!("{api}/stock/widget"))
            .send()
            .await
            .unwrap();
        assert_eq!(stock.status(), 200, "stock read {n}");
    }
}

/// The shop under chaos: 200 orders through the gateway while instances of orders,
/// inventory and payments are SIGKILLed and restarted at random (one of each pair at a
/// time). Afterwards every order the shop took is CONFIRMED or REJECTED, the stock on the
/// shelves plus what confirmed orders hold equals the initial stock, no order was charged
/// twice (nor a rejected one charged), and order-history lists every order as orders has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_chaos_every_order_ends_confirmed_or_rejected_and_nothing_is_lost() {
    use msa::events::sqlx::{self, Row};
    let _serial = SERIAL.lock().await;
    let base = base();
    let mut pairs: Vec<(&str, Vec<Process>)> = vec![
        (
            "inventory",
            vec![
                base.service("inventory", "inventory-1"),
                base.service("inventory", "inventory-2"),
            ],
        ),
        (
            "payments",
            vec![
                base.service("payments", "payments-1"),
                base.service("payments", "payments-2"),
            ],
        ),
        (
            "orders",
            vec![
                base.service("orders", "orders-1"),
                base.service("orders", "orders-2"),
            ],
        ),
    ];
    let _history = base.service("order-history", "order-history");
    let _notifications = base.service("notifications", "notifications");
    for service in ["inventory", "payments", "orders", "order-history"] {
        base.wait_registered(service, if service == "order-history" { 1 } else { 2 })
            .await;
    }
    let gateway = base.gateway();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let api = format!("{}/api", gateway.url);

    // Four clients, 50 orders each.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (http, api) = (http.clone(), api.clone());
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..50 {
                let response = http
                    .post(format!("{api}/orders"))
                    .json(&serde_json::json!({ "item": "widget", "qty": 1 }))
                    .send()
                    .await;
                answers.push(response.map(|r| r.status().as_u16()).unwrap_or(0));
            }
            answers
        }));
    }
    // Chaos: every 300-700 ms, SIGKILL one instance of a random pair and start it again.
    let chaos = {
        let done = done.clone();
        let base = &base;
        async move {
            let mut kills = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(300..700))).await;
                let (service, instances) = &mut pairs[fastrand::usize(0..3)];
                let victim = fastrand::usize(0..2);
                instances[victim].kill();
                kills += 1;
                instances[victim] = base.service(service, &format!("{service}-{victim}-{kills}"));
            }
            (pairs, kills)
        }
    };
    let watcher = async {
        let mut statuses = Vec::new();
        for client in clients {
            statuses.extend(client.await.unwrap());
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        statuses
    };
    let ((pairs, kills), statuses) = tokio::join!(chaos, watcher);
    println!("{kills} instances killed and restarted; answers: {statuses:?}");
    assert!(kills >= 3, "the chaos killed only {kills} instances");
    let taken = statuses.iter().filter(|s| matches!(s, 201 | 202)).count();
    assert!(
        taken >= 100,
        "only {taken} of 200 orders were taken: {statuses:?}"
    );

    // Every order the shop recorded, as its event store has it.
    let data = std::path::Path::new(&base.data);
    let open = |name: &str| {
        let url = format!("sqlite://{}", data.join(format!("{name}.db")).display());
        async move { msa::events::Store::connect(&url).await.unwrap() }
    };
    let orders_db = open("orders").await;
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT stream_id FROM msa_events WHERE stream_type = 'order' ORDER BY stream_id",
    )
    .fetch_all(orders_db.pool())
    .await
    .unwrap();
    assert!(
        ids.len() >= taken,
        "{} orders recorded, {taken} taken",
        ids.len()
    );
    let orders_url = pairs[2].1[0].url.clone();
    let mut confirmed = std::collections::BTreeSet::new();
    for id in &ids {
        let status = eventually(Duration::from_secs(90), "the order finished", || {
            let http = http.clone();
            let url = format!("{orders_url}/orders/{id}");
            async move {
                let order: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                let status = order["status"].as_str()?.to_owned();
                matches!(status.as_str(), "CONFIRMED" | "REJECTED").then_some(status)
            }
        })
        .await;
        if status == "CONFIRMED" {
            confirmed.insert(id.clone());
        }
    }
    assert!(!confirmed.is_empty());

    // Stock: what is on the shelves plus what confirmed orders hold is the initial stock;
    // rejected orders hold nothing (released by the saga or on OrderRejected).
    let inventory_db = open("inventory").await;
    let held: Vec<String> = eventually(Duration::from_secs(30), "rejected orders released", || {
        let pool = inventory_db.pool().clone();
        let confirmed = confirmed.clone();
        async move {
            let held: Vec<String> = sqlx::query_scalar(
                "SELECT order_id FROM reservations WHERE released = 0 ORDER BY order_id",
            )
            .fetch_all(&pool)
            .await
            .ok()?;
            (held
                .iter()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                == confirmed)
                .then_some(held)
        }
    })
    .await;
    let row = sqlx::query(
        "SELECT s.available, (SELECT COALESCE(SUM(qty), 0) FROM reservations r \
         WHERE r.item = s.item AND r.released = 0) FROM stock s WHERE s.item = 'widget'",
    )
    .fetch_one(inventory_db.pool())
    .await
    .unwrap();
    let (available, reserved): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        available + reserved,
        1000,
        "available {available} + reserved {reserved}"
    );
    assert_eq!(reserved as usize, held.len());

    // Payments: one row per order at most (its key), charged exactly for confirmed orders.
    let payments_db = open("payments").await;
    let charged: Vec<String> = sqlx::query_scalar(
        "SELECT order_id FROM payments WHERE status = 'CHARGED' ORDER BY order_id",
    )
    .fetch_all(payments_db.pool())
    .await
    .unwrap();
    assert_eq!(
        charged
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        confirmed,
        "charged exactly the confirmed orders"
    );

    // order-history lists every order with its final status.
    let history_url = format!("{}/api/orders/history?limit=500", gateway.url);
    eventually(Duration::from_secs(30), "the history complete", || {
        let http = http.clone();
        let (url, ids, confirmed) = (history_url.clone(), ids.clone(), confirmed.clone());
        async move {
            let history: Value = http.get(url).send().await.ok()?.json().await.ok()?;
            let listed: std::collections::BTreeMap<String, String> = history
                .as_array()?
                .iter()
                .map(|e| {
                    (
                        e["order_id"].as_str().unwrap().to_owned(),
                        e["status"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            let all = ids.iter().all(|id| {
                let want = if confirmed.contains(id) {
                    "CONFIRMED"
                } else {
                    "REJECTED"
                };
                listed.get(id).map(String::as_str) == Some(want)
            });
            (all && listed.len() == ids.len()).then_some(())
        }
    })
    .await;
    drop(pairs);
}
