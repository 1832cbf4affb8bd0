//! msa-admin against the real shop estate, in headless Chromium driven through WebDriver:
//! the estate page lists every service and instance; one order's trace shows the spans of
//! the gateway, orders, inventory and payments in one waterfall, and their log lines; the
//! gateway's routes and the config server's applications are listed; a log
//! level changed in the page changes what the instance logs; payments stopping turns its
//! instance DOWN and the orders → payments breaker OPEN on the page. Screenshots go to
//! `target/test-artifacts/admin/`.

#[path = "support/chromedriver.rs"]
mod chromedriver;
mod support;

use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::Value;
use support::{Process, config_copy, eventually};

use chromedriver::{ChromeDriver, artifacts};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const QUIET: &str = "b7ad6b7169203331a3e1e4f6b2c1d3e5";

/// Waits until the page has an element at `css`.
async fn until_element(browser: &Client, what: &str, css: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if browser.find(Locator::Css(css)).await.is_ok() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let source = browser.source().await.unwrap_or_default();
            panic!("never: {what} ({css}); the page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    let path = artifacts("admin").join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

async fn order(http: &reqwest::Client, gateway: &str, trace: &str) -> (u16, Value) {
    let response = http
        .post(format!("{gateway}/api/orders"))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({ "item": "widget", "qty": 1 }))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The services of the trace's spans, and of its log lines, as the admin's API has them.
async fn trace_services(
    http: &reqwest::Client,
    admin: &str,
    trace: &str,
) -> Option<(Value, Value)> {
    let doc: Value = http
        .get(format!("{admin}/api/traces/{trace}"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    Some((doc["spans"].clone(), doc["logs"].clone()))
}

fn has(list: &Value, service: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|item| item["service"] == service))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_shows_the_estate_its_traces_log_levels_and_breakers() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_copy(dir.path());
    let data = dir.path().join("data");
    let estate = Process::start(
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
    let gateway = estate.ready_field("gateway=");
    let admin = estate.ready_field("admin=");
    let http = reqwest::Client::new();
    let driver = ChromeDriver::start();
    let browser = driver.browser().await;

    // The estate page: every service and instance, each healthy, updated live.
    browser.goto(&format!("{admin}/")).await.unwrap();
    for (service, count) in [
        ("orders", 2),
        ("inventory", 2),
        ("payments", 1),
        ("order-history", 1),
        ("notifications", 1),
        ("msa-gateway", 1),
        ("msa-config-server", 1),
    ] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let rows = |css: String| {
                let browser = browser.clone();
                async move {
                    browser
                        .find_all(Locator::Css(&css))
                        .await
                        .map_or(0, |r| r.len())
                }
            };
            let listed = rows(format!("[data-service='{service}'] tr[data-instance]")).await;
            let up = rows(format!(
                "[data-service='{service}'] tr[data-instance][data-health='UP']"
            ))
            .await;
            if listed == count && up == count {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service}: {listed} instances listed, {up} UP; expected {count}:\n{}",
                browser.source().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    screenshot(&browser, "estate.png").await;

    // The gateway's routes and the config server's applications.
    browser.goto(&format!("{admin}/config")).await.unwrap();
    until_element(
        &browser,
        "the gateway's orders route",
        "tr[data-route='orders']",
        Duration::from_secs(10),
    )
    .await;
    until_element(
        &browser,
        "the config server's view of orders",
        "tr[data-application='orders'][data-version]",
        Duration::from_secs(10),
    )
    .await;
    screenshot(&browser, "config.png").await;

    // One order's trace: spans of the gateway, orders, inventory and payments in one
    // waterfall, and the log lines of the services (the gateway writes its access log
    // apart, not as log events).
    let (status, placed) = order(&http, &gateway, TRACE).await;
    assert_eq!(
        (status, placed["status"].as_str()),
        (201, Some("CONFIRMED"))
    );
    let path = ["msa-gateway", "orders", "inventory", "payments"];
    let logged = &path[1..];
    eventually(Duration::from_secs(20), "the trace at the admin", || {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let (spans, logs) = trace_services(&http, &admin, TRACE).await?;
            (path.iter().all(|s| has(&spans, s)) && logged.iter().all(|s| has(&logs, s)))
                .then_some(())
        }
    })
    .await;
    browser
        .goto(&format!("{admin}/traces/{TRACE}"))
        .await
        .unwrap();
    for service in path {
        until_element(
            &browser,
            &format!("a span of {service} in the waterfall"),
            &format!("#waterfall [data-span-service='{service}']"),
            Duration::from_secs(10),
        )
        .await;
        if logged.contains(&service) {
            until_element(
                &browser,
                &format!("a log line of {service}"),
                &format!("#logs tr[data-log-service='{service}']"),
                Duration::from_secs(10),
            )
            .await;
        }
    }
    screenshot(&browser, "trace.png").await;

    // A log level set in the page: payments' own module at WARN no longer logs its
    // charges (its requests are still traced: their spans are msa's, at INFO).
    let payments_id = {
        let overview: Value = http
            .get(format!("{admin}/api/estate"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        overview["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "payments")
            .unwrap()["instances"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let encoded: String = url_encode(&payments_id);
    browser
        .goto(&format!("{admin}/instances/payments/{encoded}"))
        .await
        .unwrap();
    until_element(
        &browser,
        "the loggers' form",
        "#new-logger",
        Duration::from_secs(10),
    )
    .await;
    let name = browser.find(Locator::Id("new-logger")).await.unwrap();
    name.send_keys("shop::payments").await.unwrap();
    let level = browser.find(Locator::Id("new-logger-level")).await.unwrap();
    level.select_by_value("WARN").await.unwrap();
    name.send_keys("\u{E007}").await.unwrap(); // Enter submits the form
    until_element(
        &browser,
        "shop::payments listed at WARN",
        "select[data-logger='shop::payments'] option[value='WARN'][selected]",
        Duration::from_secs(10),
    )
    .await;
    screenshot(&browser, "instance-loggers.png").await;
    let (status, _) = order(&http, &gateway, QUIET).await;
    assert_eq!(status, 201);
    eventually(Duration::from_secs(20), "the quiet order's trace", || {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let (spans, logs) = trace_services(&http, &admin, QUIET).await?;
            (has(&spans, "payments") && has(&logs, "inventory")).then_some(())
        }
    })
    .await;
    // Log records are exported in batches: let the last ones arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, logs) = trace_services(&http, &admin, QUIET).await.unwrap();
    assert!(
        !has(&logs, "payments"),
        "payments still logs at INFO: {logs}"
    );
    assert!(
        !estate.logs().contains(&format!("[payments,{QUIET},")),
        "payments still writes INFO lines"
    );
    assert!(estate.logs().contains(&format!("[payments,{TRACE},")));

    // payments stops: its instance is no longer UP, and once orders' calls have failed
    // enough, the orders → payments breaker shows OPEN.
    let pid = estate.started_pid("payments-1");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    browser.goto(&format!("{admin}/")).await.unwrap();
    until_element(
        &browser,
        "payments not UP",
        "[data-service='payments'] tr[data-instance]:not([data-health='UP'])",
        Duration::from_secs(5),
    )
    .await;
    for n in 0..16 {
        let trace = format!("{:032x}", 0xdead_0000_u128 + n);
        let (status, placed) = order(&http, &gateway, &trace).await;
        assert_eq!(status, 202, "{placed}");
    }
    until_element(
        &browser,
        "the orders → payments breaker OPEN",
        "[data-service='orders'] [data-breaker='payments'][data-state='OPEN']",
        Duration::from_secs(10),
    )
    .await;
    screenshot(&browser, "estate-payments-down.png").await;
    browser.goto(&format!("{admin}/graph")).await.unwrap();
    until_element(
        &browser,
        "the orders → payments edge",
        "[data-edge='orders->payments']",
        Duration::from_secs(10),
    )
    .await;
    screenshot(&browser, "graph.png").await;
    browser.close().await.unwrap();
}

/// Percent-encodes a path segment.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
