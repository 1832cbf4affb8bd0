//! The gateway's file: reloads, configuration errors with file, line and key.

use std::process::Command;
use std::time::Duration;

use crate::support::{GatewayProcess, client, json_of, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_reload_and_a_bad_file_keeps_the_old_ones() {
    let a = upstream("a").await;
    let first =
        format!("routes:\n  - id: one\n    uri: http://{a}\n    predicates: [ 'Path=/one' ]\n");
    let gateway = GatewayProcess::start(&first).await;
    assert_eq!(gateway.get("/one").await.status(), 200);

    // A bad edit: the refresh says why, and /one still works.
    std::fs::write(
        gateway.file.path(),
        format!("{first}  - id: two\n    uri: http://{a}\n    predicates: [ 'Path=two' ]\n"),
    )
    .unwrap();
    let response = gateway.refresh().await;
    assert_eq!(response.status(), 400);
    let error = json_of(response).await["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.contains(":7: routes.1.predicates.0: path pattern \"two\" must start with /"),
        "{error}"
    );
    assert_eq!(gateway.get("/one").await.status(), 200);

    // A good edit applies through the refresh endpoint (and the file watch).
    std::fs::write(
        gateway.file.path(),
        format!("{first}  - id: two\n    uri: http://{a}\n    predicates: [ 'Path=/two' ]\n"),
    )
    .unwrap();
    let response = gateway.refresh().await;
    assert_eq!(json_of(response).await["routes"], 2);
    assert_eq!(gateway.get("/two").await.status(), 200);
}

#[test]
fn a_bad_file_stops_start_up_with_file_line_and_key() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(
        file.path(),
        "routes:\n  - id: a\n    uri: http://127.0.0.1:1\n    filters:\n      - StripPrefix=x\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_msa-gateway"))
        .arg("--config")
        .arg(file.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "msa-gateway: {}:5: routes.0.filters.0: `parts` \"x\" is not a whole number\n",
        file.path().display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn tls_flags_name_the_file_that_does_not_read() {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), "routes: []\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_msa-gateway"))
        .arg("--config")
        .arg(file.path())
        .args([
            "--bind",
            "127.0.0.1:0",
            "--ssl-certificate",
            "/nonexistent/cert.pem",
            "--ssl-certificate-private-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("server.ssl: /nonexistent/cert.pem"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let a = upstream("a").await;
    let file = |n: usize| {
        format!(
            "routes:\n  - id: api-{n}\n    uri: http://{a}\n    predicates: [ 'Path=/api/**' ]\n    filters: [ 'AddResponseHeader=X-Version, {n}' ]\n"
        )
    };
    let gateway = GatewayProcess::start(&file(0)).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let url = gateway.url("/api/x");
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let http = client();
            let (mut ok, mut failed, mut versions) = (0, 0, std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        ok += 1;
                        versions
                            .insert(response.headers()["x-version"].to_str().unwrap().to_owned());
                    }
                    other => {
                        eprintln!("a request failed: {:?}", other.map(|r| r.status()));
                        failed += 1
                    }
                }
            }
            (ok, failed, versions)
        }));
    }
    for n in 1..=10 {
        std::fs::write(gateway.file.path(), file(n)).unwrap();
        let response = gateway.refresh().await;
        assert_eq!(response.status(), 200);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed, mut versions) = (0, 0, std::collections::BTreeSet::new());
    for task in load {
        let (o, f, v) = task.await.unwrap();
        ok += o;
        failed += f;
        versions.extend(v);
    }
    assert_eq!(failed, 0, "{ok} succeeded");
    assert!(ok > 100, "{ok}");
    assert!(
        versions.len() >= 5,
        "the routes changed under load: {versions:?}"
    );
    assert!(versions.contains("10"));
}

/// A Spring Cloud Gateway 4.x `application.yml`, unchanged: Spring Boot's `server.port`,
/// the routes under `spring.cloud.gateway.server.webflux`, and the keys msa does not
/// implement reported once each as warnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spring_cloud_gateway_4_file_is_accepted() {
    let a = upstream("a").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "\
server:
  port: {port}
  address: 127.0.0.1
  shutdown: graceful
spring:
  application:
    name: edge
  cloud:
    gateway:
      server:
        webflux:
          httpclient:
            connect-timeout: 500
            response-timeout: 2s
            wiretap: true
          metrics:
            enabled: true
          default-filters:
            - AddResponseHeader=X-Edge, msa
          routes:
            - id: orders
              uri: http://{a}
              predicates:
                - Path=/orders/**
              filters:
                - StripPrefix=1
management:
  endpoints:
    web:
      exposure:
        include: \"*\"
"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("application.yml");
    std::fs::write(&file, yaml).unwrap();
    let log = dir.path().join("stderr.log");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(
        Command::new(env!("CARGO_BIN_EXE_msa-gateway"))
            .arg("--config")
            .arg(&file)
            .env_remove("MSA_MANAGEMENT_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if reqwest::get(format!("{base}/actuator/health"))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(up, "{}", std::fs::read_to_string(&log).unwrap());

    let response = client()
        .get(format!("{base}/orders/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-edge"], "msa");
    assert_eq!(response.headers()["x-echo-path"], "/list");

    let stderr = std::fs::read_to_string(&log).unwrap();
    for (key, line) in [
        ("server.shutdown", 4),
        ("spring.application", 6),
        ("spring.cloud.gateway.server.webflux.httpclient.wiretap", 15),
        ("spring.cloud.gateway.server.webflux.metrics", 16),
        ("management", 27),
    ] {
        let said = format!("application.yml:{line}: {key}: ");
        assert_eq!(stderr.matches(&said).count(), 1, "{key} in:\n{stderr}");
    }
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
