//! A `rabbitmq-server` for the tests (Debian's, on free loopback ports with a throwaway data
//! directory and its own `epmd`). It starts in about 8 s, so a test binary shares one
//! ([`shared`]) and gives each test its own virtual host ([`vhost`]); a test that kills
//! the broker starts its own ([`Broker::start`]).
//!
//! The broker runs under a watchdog shell in its own process group: the group is killed
//! when the broker is dropped, or when the test process exits (statics are never dropped),
//! and the data directory is removed with it.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use msa_stream::rabbit::RabbitBinder;

/// Virtual hosts the broker is made with (one per test of a binary).
const VHOSTS: usize = 32;

/// Where Debian's package puts the server (the `/usr/sbin` wrapper switches users).
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// The user the tests connect as: `msa`, password `msa` (RabbitMQ's salted SHA-256).
const USER: &str = r#"{"name":"msa","password_hash":"bXNhIff9g/aIHst34NBUXFYy1bwlK4UGtr6GCD2qN+PXCa2e","hashing_algorithm":"rabbit_password_hashing_sha256","tags":"administrator"}"#;

const WATCHDOG: &str = r#"
dir=$1; port=$2; dist=$3; epmd_port=$4; parent=$5; keep=$6
export HOME="$dir" RABBITMQ_NODENAME="msa$port@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" RABBITMQ_MNESIA_BASE="$dir/mnesia" \
  RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
  RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" ERL_EPMD_PORT="$epmd_port" ERL_EPMD_ADDRESS=127.0.0.1
epmd -port "$epmd_port" -address 127.0.0.1 &
"$7" > "$dir/server.out" 2>&1 &
while kill -0 "$parent" 2>/dev/null; do sleep 0.2; done
[ "$keep" = keep ] || rm -rf "$dir"
kill -9 0
"#;

/// A running broker, killed (with its `epmd`) when dropped.
pub struct Broker {
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

impl Broker {
    /// Starts a broker on `port` keeping its data in `dir` (made with the test user and
    /// [`VHOSTS`] virtual hosts the first time). `keep` leaves `dir` when the test process
    /// ends (the caller owns it).
    pub fn start(dir: &Path, port: u16, keep: bool) -> Broker {
        assert!(
            Path::new(SERVER).exists(),
            "{SERVER}: install Debian's rabbitmq-server (`cargo xtask test` does)"
        );
        std::fs::create_dir_all(dir).unwrap();
        let vhosts: Vec<String> = (0..VHOSTS)
            .map(|n| format!(r#"{{"name":"t{n}"}}"#))
            .collect();
        let permissions: Vec<String> = (0..VHOSTS)
            .map(|n| {
                format!(
                    r#"{{"user":"msa","vhost":"t{n}","configure":".*","write":".*","read":".*"}}"#
                )
            })
            .chain([
                r#"{"user":"msa","vhost":"/","configure":".*","write":".*","read":".*"}"#
                    .to_owned(),
            ])
            .collect();
        let definitions = format!(
            r#"{{"users":[{USER}],"vhosts":[{{"name":"/"}},{}],"permissions":[{}]}}"#,
            vhosts.join(","),
            permissions.join(",")
        );
        std::fs::write(dir.join("definitions.json"), definitions).unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "load_definitions = {}\nlog.console = false\n",
                dir.join("definitions.json").display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("rabbitmq")
            .arg(dir)
            .arg(port.to_string())
            .arg(free_port().to_string())
            .arg(free_port().to_string())
            .arg(std::process::id().to_string())
            .arg(if keep { "keep" } else { "remove" })
            .arg(SERVER)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().expect("sh");
        Broker {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// The URL of `vhost` for the test user.
    pub fn url(&self, vhost: &str) -> String {
        let vhost = if vhost == "/" { "%2f" } else { vhost };
        format!("amqp://msa:msa@127.0.0.1:{}/{vhost}", self.port)
    }

    /// A binder on `vhost`, once the broker answers (it takes seconds to start).
    pub async fn binder(&self, vhost: &str) -> RabbitBinder {
        for _ in 0..600 {
            if let Ok(binder) = RabbitBinder::connect(&self.url(vhost)).await {
                return binder;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let out = std::fs::read_to_string(self.dir.join("server.out")).unwrap_or_default();
        panic!("rabbitmq-server never answered on {}:\n{out}", self.port);
    }

    /// Kills the broker and its `epmd` at once (SIGKILL to the process group).
    pub fn kill(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The broker this test binary shares, started by the first test that asks.
pub fn shared() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("msa-rabbit-{}", std::process::id()));
        Broker::start(&dir, free_port(), false)
    })
}

/// A virtual host no other test of this binary uses.
pub fn vhost() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < VHOSTS, "more than {VHOSTS} tests share the broker");
    format!("t{n}")
}
