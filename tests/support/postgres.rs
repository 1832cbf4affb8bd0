//! A PostgreSQL server for the tests: Debian's `postgresql` binaries, a throwaway cluster
//! made by `initdb` on a free loopback port (trust authentication, user `msa`), one per
//! test binary ([`shared`]) with a database per test ([`database`]).
//!
//! The server runs under a watchdog shell in its own process group: the group is killed
//! when the test process exits (statics are never dropped) and the cluster's directory is
//! removed with it. PostgreSQL refuses to run as root: as root, the watchdog runs it as
//! the `postgres` user the Debian package makes.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WATCHDOG: &str = r#"
dir=$1; port=$2; parent=$3; bin=$4; user=$5
run() { if [ -n "$user" ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
if run "$bin/initdb" -D "$dir/data" -U msa -A trust --no-sync -E UTF8 --locale=C \
    > "$dir/initdb.out" 2>&1; then
  run "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
    > "$dir/server.out" 2>&1 &
fi
while kill -0 "$parent" 2>/dev/null; do sleep 0.2; done
rm -rf "$dir"
kill -9 0
"#;

/// A running cluster.
pub struct Postgres {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory with `initdb` and `postgres`: on `PATH`, else Debian's newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").exists() && dir.join("postgres").exists() {
                return dir;
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("initdb: install Debian's postgresql (`cargo xtask test` does)")
}

impl Postgres {
    /// Makes a cluster in `dir` and starts it on `port`.
    pub fn start(dir: &Path, port: u16) -> Postgres {
        std::fs::create_dir_all(dir).unwrap();
        let root = std::fs::metadata(dir).unwrap().uid() == 0;
        if root {
            let status = Command::new("chown")
                .args(["postgres:postgres", dir.to_str().unwrap()])
                .status()
                .expect("chown");
            assert!(status.success(), "chown postgres {}", dir.display());
        }
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("postgres")
            .arg(dir)
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .arg(bin_dir())
            .arg(if root { "postgres" } else { "" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("sh");
        Postgres {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// The URL of `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://msa@127.0.0.1:{}/{database}", self.port)
    }

    /// Waits until the server answers (initdb and start take a second or two).
    pub async fn ready(&self) {
        use sqlx::Connection;
        for _ in 0..300 {
            if sqlx::PgConnection::connect(&self.url("postgres"))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let read = |name: &str| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        panic!(
            "postgres never answered on {}:\n{}\n{}",
            self.port,
            read("initdb.out"),
            read("server.out")
        );
    }
}

/// The cluster this test binary shares, started by the first test that asks.
pub fn shared() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    SERVER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("msa-postgres-{}", std::process::id()));
        Postgres::start(&dir, free_port())
    })
}

/// A new empty database on the shared cluster; returns its URL.
pub async fn database() -> String {
    use sqlx::{Connection, Executor};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let server = shared();
    server.ready().await;
    let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut admin = sqlx::PgConnection::connect(&server.url("postgres"))
        .await
        .unwrap();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    server.url(&name)
}
