//! An etcd cluster for the tests: Debian's `etcd` (package `etcd-server`), three members on
//! free loopback ports with throwaway data directories, fast elections (heartbeat 50 ms,
//! election timeout 500 ms) so a lost leader is replaced within a second.
//!
//! Each member runs under a watchdog shell that kills it, and removes its directory, when
//! the test process exits (statics are never dropped) or the member dies. Tests may
//! SIGKILL a member ([`Cluster::kill`]) or freeze it ([`Cluster::freeze`], SIGSTOP: a
//! member cut off from the others).

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WATCHDOG: &str = r#"
dir=$1; parent=$2; shift 2
"$@" > "$dir.out" 2>&1 &
member=$!
echo "$member" > "$dir/pid"
while kill -0 "$parent" 2>/dev/null && kill -0 "$member" 2>/dev/null; do sleep 0.2; done
kill -CONT "$member" 2>/dev/null; kill -9 "$member" 2>/dev/null
rm -rf "$dir"
# The output stays while the test runs, for it to read why a member died.
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
rm -f "$dir.out"
"#;

/// One member of the cluster.
pub struct Member {
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub client_url: String,
    pub dir: PathBuf,
    /// The watchdog shell (the member is its child).
    watchdog: Child,
}

/// A running cluster.
pub struct Cluster {
    pub members: Vec<Member>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .expect("etcd: install Debian's etcd-server (`cargo xtask test` does)")
}

impl Cluster {
    /// Starts `size` members in directories under `root` and waits until each answers.
    ///
    /// A member that dies before it answers (its port was taken between our choosing it
    /// and etcd binding it, by another test's connection) fails the attempt: the cluster
    /// is started again on other ports, up to three times.
    pub fn start(root: &Path, size: usize) -> Cluster {
        let mut failures = Vec::new();
        for attempt in 1..=3 {
            match Cluster::try_start(&root.join(format!("attempt-{attempt}")), size) {
                Ok(cluster) => return cluster,
                Err(failure) => failures.push(failure),
            }
        }
        panic!("the etcd cluster did not start: {}", failures.join("; "));
    }

    fn try_start(root: &Path, size: usize) -> Result<Cluster, String> {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(n, (_, peer))| format!("m{n}=http://127.0.0.1:{peer}"))
            .collect();
        let token = format!("msa-test-{}-{}", std::process::id(), free_port());
        let mut members = Vec::new();
        for (n, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{n}");
            let dir = root.join(&name);
            std::fs::create_dir_all(&dir).unwrap();
            let client_url = format!("http://127.0.0.1:{client}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let watchdog = Command::new("sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg("etcd-watchdog")
                .arg(&dir)
                .arg(std::process::id().to_string())
                .arg(etcd_binary())
                .args(["--name", &name, "--data-dir"])
                .arg(dir.join("data"))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
                .args(["--logger", "zap", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("sh runs");
            members.push(Member {
                name,
                client_url,
                dir,
                watchdog,
            });
        }
        let cluster = Cluster { members };
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in 0..cluster.members.len() {
            loop {
                let member = &cluster.members[n];
                let health = http1::blocking_get(&format!("{}/health", member.client_url));
                if health.is_some_and(|body| body.contains("\"true\"")) {
                    break;
                }
                // The watchdog removes the directory once the member is gone.
                let died = !member.dir.exists();
                if died || Instant::now() >= deadline {
                    let output = member.dir.with_extension("out");
                    let said = std::fs::read_to_string(&output).unwrap_or_default();
                    let _ = std::fs::remove_file(&output);
                    let failure = format!(
                        "etcd member {} {}: {said}",
                        member.name,
                        if died {
                            "died"
                        } else {
                            "did not become healthy in 30 s"
                        }
                    );
                    cluster.stop();
                    return Err(failure);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// SIGKILLs every member still running (their watchdogs then remove their files).
    fn stop(&self) {
        for pid in self.members.iter().filter_map(pid_of) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }

    /// Every member's client URL, comma-separated (`etcd://` URLs take this list).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.trim_start_matches("http://"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member process's pid.
    pub fn pid(&self, member: usize) -> u32 {
        pid_of(&self.members[member]).unwrap_or_else(|| {
            panic!(
                "no pid in {}",
                self.members[member].dir.join("pid").display()
            )
        })
    }

    fn signal(&self, member: usize, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid(member).to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} member {member}");
    }

    /// SIGKILLs a member.
    pub fn kill(&self, member: usize) {
        self.signal(member, "-KILL");
    }

    /// Freezes a member (SIGSTOP): to the others it is gone, as behind a partition.
    pub fn freeze(&self, member: usize) {
        self.signal(member, "-STOP");
    }

    /// Thaws a frozen member (SIGCONT).
    pub fn thaw(&self, member: usize) {
        self.signal(member, "-CONT");
    }

    /// Freezes a member until the guard is dropped (also when the test panics, so the
    /// member is thawed for the tests after it).
    pub fn frozen(&self, member: usize) -> Frozen<'_> {
        self.freeze(member);
        Frozen {
            cluster: self,
            member,
        }
    }

    /// The member that leads now, by asking each member's `/v3/maintenance/status`.
    pub fn leader(&self) -> usize {
        for (n, member) in self.members.iter().enumerate() {
            let Some(body) = http1::blocking_post(
                &format!("{}/v3/maintenance/status", member.client_url),
                "{}",
            ) else {
                continue;
            };
            let Ok(status) = serde_json::from_str::<serde_json::Value>(&body) else {
                continue;
            };
            if status["leader"].is_string() && status["leader"] == status["header"]["member_id"] {
                return n;
            }
        }
        panic!("no etcd member says it leads");
    }
}

/// A member's pid, from the file its watchdog wrote (gone once the member is).
fn pid_of(member: &Member) -> Option<u32> {
    std::fs::read_to_string(member.dir.join("pid"))
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

/// A member frozen by [`Cluster::frozen`]; thawed on drop.
pub struct Frozen<'a> {
    cluster: &'a Cluster,
    member: usize,
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        self.cluster.thaw(self.member);
    }
}

/// The test binary's one 3-member cluster, started on first use (tests sharing it use
/// their own key prefixes).
pub fn shared() -> &'static Cluster {
    static CLUSTER: std::sync::OnceLock<(tempfile::TempDir, Cluster)> = std::sync::OnceLock::new();
    &CLUSTER
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let cluster = Cluster::start(dir.path(), 3);
            (dir, cluster)
        })
        .1
}

/// Plain HTTP/1.1 over a std socket, so the cluster starts outside any runtime.
mod http1 {
    use std::io::{Read, Write};
    use std::time::Duration;

    fn call(url: &str, method: &str, body: &str) -> Option<String> {
        let rest = url.strip_prefix("http://")?;
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let mut stream = std::net::TcpStream::connect(authority).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "{method} /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let (head, body) = answer.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    pub fn blocking_get(url: &str) -> Option<String> {
        call(url, "GET", "")
    }

    pub fn blocking_post(url: &str, body: &str) -> Option<String> {
        call(url, "POST", body)
    }
}
