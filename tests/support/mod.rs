//! Starting the shop's processes for end-to-end tests: every process is the `shop`
//! example's executable (which runs msa-registry, msa-config-server, msa-gateway and the
//! services from the same library code as msa's binaries), over real HTTP on 127.0.0.1.
//!
//! Each process is started with `--stop-on-eof`: closing its stdin stops it cleanly, and
//! if the test dies, its children see their stdin close and stop too. A `Process` still
//! running when dropped is killed.

#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `target/<profile>/examples/<name>`, which `cargo test` builds beside the test binaries.
pub(crate) fn example_binary(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile_dir = deps.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join("examples").join(name);
    assert!(
        binary.exists(),
        "{} is missing: run through `cargo test`",
        binary.display()
    );
    binary
}

/// The shop example's executable.
pub(crate) fn shop_binary() -> PathBuf {
    example_binary("shop")
}

/// The shop's config directory, copied so a test may edit it.
pub(crate) fn config_copy(into: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop/config");
    let target = into.join("config");
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    target
}

/// One process of the estate.
pub(crate) struct Process {
    pub(crate) name: String,
    /// Where it listens (`http://127.0.0.1:PORT`).
    pub(crate) url: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    /// The first line it printed.
    ready: String,
    /// The lines it printed on stdout that a wait passed over.
    printed: Vec<String>,
}

impl Process {
    /// Starts `shop ARGS --stop-on-eof`, logging to `<dir>/<name>.log`, and waits for its
    /// first line on stdout: where it listens (`listening on URL`), or for the estate, the
    /// line `shop: ready ...`.
    pub(crate) fn start(name: &str, args: &[&str], dir: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(shop_binary())
            .args(args)
            .arg("--stop-on-eof")
            .env("MSA_LOG_FORMAT", "text")
            .env("NO_COLOR", "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Process {
            name: name.to_owned(),
            url: String::new(),
            child,
            stdin,
            lines,
            log,
            ready: String::new(),
            printed: Vec::new(),
        };
        let first = process.wait_line(
            |l| l.starts_with("listening on ") || l.starts_with("shop: ready"),
            Duration::from_secs(90),
        );
        process.url = first
            .strip_prefix("listening on ")
            .unwrap_or_default()
            .to_owned();
        process.ready = first;
        process
    }

    /// Waits for a line on stdout matching `wanted`; panics (with the log) after `within`.
    pub(crate) fn wait_line(&mut self, wanted: impl Fn(&str) -> bool, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(line) => self.printed.push(line),
                Err(_) => panic!(
                    "{} did not print the expected line within {within:?}; its log:\n{}",
                    self.name,
                    self.logs()
                ),
            }
        }
    }

    /// A `key=value` field of the estate's ready line.
    pub(crate) fn ready_field(&self, key: &str) -> String {
        self.ready
            .split_whitespace()
            .find_map(|part| part.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {:?}", self.ready))
            .to_owned()
    }

    /// The pid of the estate's process `name` (`payments-1`), from its `shop: started`
    /// line.
    pub(crate) fn started_pid(&self, name: &str) -> u32 {
        let prefix = format!("shop: started {name} pid=");
        self.printed
            .iter()
            .find_map(|line| line.strip_prefix(&prefix)?.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("the estate never said it started {name}"))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it logged so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it at once (SIGKILL): no deregistration, no draining.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks it to stop (closes its stdin) without waiting.
    pub(crate) fn stop_signal(&mut self) -> Option<ChildStdin> {
        self.stdin.take()
    }

    /// Asks it to stop (closes its stdin) and waits up to 30 s.
    pub(crate) fn stop(&mut self) -> ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{} did not stop within 30 s", self.name);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A service process's arguments.
pub(crate) fn service_args<'a>(
    name: &'a str,
    registry: &'a str,
    config: &'a str,
    data: &'a str,
    nats: &'a str,
) -> Vec<&'a str> {
    vec![
        name,
        "--registry",
        registry,
        "--config",
        config,
        "--data",
        data,
        "--nats",
        nats,
        "--renewal-secs",
        "1",
    ]
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `within`.
pub(crate) async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many UP instances of `service` the registry lists.
pub(crate) async fn registered(http: &reqwest::Client, registry: &str, service: &str) -> usize {
    let Ok(response) = http
        .get(format!("{registry}/msa/v1/services/{service}"))
        .send()
        .await
    else {
        return 0;
    };
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    answer["instances"]
        .as_array()
        .map_or(0, |all| all.iter().filter(|i| i["status"] == "UP").count())
}

/// `GET url`, as JSON (`null` when the answer is not JSON).
pub(crate) async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = http.get(url).send().await.unwrap();
    response.json().await.unwrap_or_default()
}

/// Places an order; returns the status code and the answer.
pub(crate) async fn order(
    http: &reqwest::Client,
    base: &str,
    item: &str,
    qty: u64,
) -> (u16, serde_json::Value) {
    let response = http
        .post(format!("{base}/orders"))
        .json(&serde_json::json!({ "item": item, "qty": qty }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}
