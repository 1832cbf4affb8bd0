//! What the gateway tells: the trace through its span, and the access log.

use std::time::Duration;

use crate::support::{GatewayProcess, client, json_of, raw, upstream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_continues_through_a_gateway_span() {
    let a = upstream("a").await;
    let yaml = format!(
        "routes:\n  - id: traced\n    uri: http://{a}\n    predicates: [ 'Path=/traced/**' ]\n"
    );
    let yaml = format!(
        "{yaml}  - id: traced-with-headers\n    uri: http://{a}\n    predicates: [ 'Path=/headers/**' ]\n    filters: [ 'AddRequestHeader=X-Via, gateway' ]\n"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    // Both ways through the gateway: header lines as they came, and a header map.
    for path in ["/traced/x", "/headers/x"] {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let response = client()
            .get(gateway.url(path))
            .header("traceparent", incoming)
            .send()
            .await
            .unwrap();
        let echo = json_of(response).await;
        let upstream_sees = echo["headers"]["traceparent"].as_str().unwrap().to_owned();
        let parts: Vec<&str> = upstream_sees.split('-').collect();
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
        assert_ne!(
            parts[2], "00f067aa0ba902b7",
            "the gateway's span is the upstream's parent"
        );
        assert_eq!(parts[3], "01", "still sampled");
        // W3C: no `tracestate` at all when there is no state to send.
        assert_eq!(echo["headers"].get("tracestate"), None, "{path}: {echo}");

        // A state that came in goes on.
        let response = client()
            .get(gateway.url(path))
            .header("traceparent", incoming)
            .header("tracestate", "vendor=abc")
            .send()
            .await
            .unwrap();
        let echo = json_of(response).await;
        assert_eq!(echo["headers"]["tracestate"], "vendor=abc", "{path}");

        // Without one, the gateway starts a trace.
        let echo = json_of(client().get(gateway.url(path)).send().await.unwrap()).await;
        let started = echo["headers"]["traceparent"].as_str().unwrap();
        assert_eq!(started.len(), 55, "{started}");
        assert_eq!(echo["headers"].get("tracestate"), None, "{path}: {echo}");
    }
}

#[tokio::test]
async fn the_access_log_is_off_by_default_and_buffered_to_its_file_when_on() {
    use msa_gateway::GatewayConfig;
    // Off unless the file says, as in Spring Cloud Gateway; Spring's key turns it on.
    let plain = GatewayConfig::parse("g.yaml", "routes: []\n").unwrap();
    assert!(!plain.access_log.enabled);
    let spring = "reactor:\n  netty:\n    http:\n      server:\n        accessLogEnabled: true\n\
                  spring:\n  cloud:\n    gateway:\n      routes: []\n";
    assert!(
        GatewayConfig::parse("g.yaml", spring)
            .unwrap()
            .access_log
            .enabled
    );
    let bad =
        "msa:\n  gateway:\n    access-log:\n      enabled: true\n      flush-interval: soon\n";
    let error = GatewayConfig::parse("g.yaml", bad).unwrap_err().to_string();
    assert!(
        error.starts_with("g.yaml:5: msa.gateway.access-log.flush-interval:"),
        "{error}"
    );

    let a = upstream("a").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let yaml = format!(
        "msa:\n  gateway:\n    access-log:\n      enabled: true\n      path: {}\n      flush-interval: 50ms\n\
         routes:\n  - id: echo\n    uri: http://{a}\n    predicates: [ 'Path=/echo/**' ]\n",
        log.display()
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let http = client();
    http.get(gateway.url("/echo/1?x=1"))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    // A target a log reader would act on is escaped: one request, one line.
    raw(&gateway, "/echo/\"quoted").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(tokio::time::Instant::now() < deadline, "{lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = lines
        .iter()
        .find(|l| l.contains("/echo/1"))
        .expect("the traced request");
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(
        first.contains("] \"GET /echo/1?x=1 HTTP/1.1\" 200 - "),
        "{first}"
    );
    assert!(
        first.ends_with(" echo 4bf92f3577b34da6a3ce929d0e0e4736"),
        "{first}"
    );
    let escaped = lines
        .iter()
        .find(|l| l.contains("quoted"))
        .expect("escaped");
    assert!(
        escaped.contains("\"GET /echo/\\x22quoted HTTP/1.1\""),
        "{escaped}"
    );
}
