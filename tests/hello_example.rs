//! The README's example as a user runs it: two processes, a traced call between them, and
//! a clean stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

fn example_binary() -> PathBuf {
    support::example_binary("hello")
}

/// Kills the child if the test fails before it stops it.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_serves_a_traced_call_and_stops_on_sigterm() {
    let mut child = Command::new(example_binary())
        .env("GREETER_BIND", "127.0.0.1:0")
        .env("MSA_LOG_FORMAT", "json")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut guard = Guard(child);

    // The banner names both addresses; the rest of stdout is drained, never closed early.
    let mut greeter = None;
    let mut names = None;
    let mut stdout = BufReader::new(stdout).lines();
    for line in stdout.by_ref() {
        let line = line.unwrap();
        let field = |prefix: &str| {
            line.trim()
                .strip_prefix(prefix)
                .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        };
        greeter = greeter.or_else(|| field("greeter"));
        names = names.or_else(|| field("names"));
        if line.contains("Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || stdout.for_each(drop));
    let (greeter, names) = (
        greeter.expect("greeter's address"),
        names.expect("names' address"),
    );

    let response = reqwest::get(format!("{greeter}/greet/1")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "Hello, Barbara!\n");
    let response = reqwest::get(format!("{greeter}/greet/99")).await.unwrap();
    assert_eq!(response.status(), 404);
    let health: serde_json::Value = reqwest::get(format!("{names}/actuator/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "UP");

    let pid = guard.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_with_deadline(&mut guard.0, Duration::from_secs(20)).expect("hello stopped");
    let lines: Vec<String> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    let not_json: Vec<&String> = lines.iter().filter(|l| !l.starts_with('{')).collect();
    assert!(
        status.success(),
        "hello exited with {status}: {not_json:#?}"
    );
    assert!(
        reqwest::get(format!("{names}/actuator/health"))
            .await
            .is_err(),
        "names stopped too"
    );

    // Both services logged the first greeting under one trace id.
    let logs: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let find = |service: &str, message: &str| {
        logs.iter()
            .find(|l| l["service"] == service && l["message"] == message && l["id"] == 1)
            .unwrap_or_else(|| panic!("no {service} line {message:?} in {logs:#?}"))
            .clone()
    };
    let greeting = find("greeter", "greeting");
    let lookup = find("names", "looking up name");
    assert!(greeting["trace_id"].is_string());
    assert_eq!(greeting["trace_id"], lookup["trace_id"]);
}
