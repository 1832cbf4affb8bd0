//! The project's own tasks, run as `cargo xtask <task>` (the alias is in
//! `.cargo/config.toml`).
//!
//! `cargo xtask test [ARGS]` is the README's test command: it installs the real peers the
//! tests start (servers and tools from Debian's packages) when they are missing, then runs
//! `cargo test --workspace --all-features [ARGS]`. Where it cannot install them (no
//! `apt-get`, or neither root nor password-less `sudo`), it names the command to run and
//! stops before the tests. `cargo xtask provision` installs them without running the tests
//! (CI runs it before clippy: building with `--all-features` needs `protoc`).

use std::path::Path;
use std::process::{Command, ExitCode};

/// A program the tests run, and where it comes from.
struct Peer {
    /// The program, looked up on `PATH` and in the system directories.
    program: &'static str,
    /// The Debian package that installs it.
    package: &'static str,
    /// Which tests need it.
    used_by: &'static str,
}

/// Everything beyond the Rust toolchain that the tests run (and `protoc`, which a build
/// with every feature runs).
const PEERS: &[Peer] = &[
    Peer {
        program: "kill",
        package: "procps",
        used_by: "the examples' tests signal their processes",
    },
    Peer {
        program: "dnsmasq",
        package: "dnsmasq-base",
        used_by: "msa-discovery's DNS discovery tests resolve against it",
    },
    Peer {
        program: "redis-server",
        package: "redis-server",
        used_by: "msa-gateway's shared rate limiter is tested against it",
    },
    Peer {
        program: "promtool",
        package: "prometheus",
        used_by: "msa-gateway's metrics tests check the scrape with it",
    },
    Peer {
        program: "nats-server",
        package: "nats-server",
        used_by: "msa-stream's NATS JetStream binder is tested against it",
    },
    Peer {
        program: "initdb",
        package: "postgresql",
        used_by: "msa-events is tested on a throwaway PostgreSQL cluster",
    },
    Peer {
        program: "rabbitmq-server",
        package: "rabbitmq-server",
        used_by: "msa-stream's RabbitMQ binder is tested against it",
    },
    Peer {
        program: "etcd",
        package: "etcd-server",
        used_by: "the registry, discovery and config on etcd are tested on a 3-member cluster",
    },
    Peer {
        program: "protoc",
        package: "protobuf-compiler",
        used_by: "building etcd-client compiles etcd's gRPC API (feature `etcd`)",
    },
    Peer {
        program: "chromium",
        package: "chromium",
        used_by: "msa-admin's pages are tested in headless Chromium",
    },
    Peer {
        program: "chromedriver",
        package: "chromium-driver",
        used_by: "the browser tests drive Chromium through WebDriver",
    },
];

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("test") => test(args.collect()),
        Some("provision") => match provision() {
            Ok(()) => ExitCode::SUCCESS,
            Err(reason) => {
                eprintln!("xtask: {reason}");
                ExitCode::FAILURE
            }
        },
        Some("peers") => {
            for peer in PEERS {
                let state = if installed(peer.program) {
                    "installed"
                } else {
                    "missing"
                };
                println!(
                    "{:<16} {:<18} {state:<9} {}",
                    peer.program, peer.package, peer.used_by
                );
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: cargo xtask test [ARGS]   install the tests' peers if missing, then \
                 cargo test --workspace --all-features [ARGS]\n       \
                 cargo xtask provision     install the missing peers and build tools only\n       \
                 cargo xtask peers         list the peers and whether they are installed"
            );
            ExitCode::from(2)
        }
    }
}

/// Provisions the peers, then runs the tests with `extra` arguments.
fn test(extra: Vec<String>) -> ExitCode {
    if let Err(reason) = provision() {
        eprintln!("xtask: {reason}");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["test", "--workspace", "--all-features"])
        .args(&extra);
    eprintln!(
        "xtask: cargo test --workspace --all-features {}",
        extra.join(" ")
    );
    match command.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(error) => {
            eprintln!("xtask: cannot run cargo: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the missing peers' packages with apt-get, as root or through password-less
/// sudo; otherwise says which command would.
fn provision() -> Result<(), String> {
    let missing: Vec<&Peer> = PEERS.iter().filter(|p| !installed(p.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|p| p.package).collect();
    for peer in &missing {
        eprintln!(
            "xtask: {} is missing ({}; Debian package {})",
            peer.program, peer.used_by, peer.package
        );
    }
    let command = format!(
        "sudo apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    if !installed("apt-get") {
        return Err(format!(
            "no apt-get here: install {} with your package manager (on Debian or Ubuntu: {command}), then run cargo xtask test again",
            packages.join(", ")
        ));
    }
    let sudo: &[&str] = if is_root() {
        &[]
    } else if run(&["sudo", "-n", "true"]) {
        &["sudo", "-n"]
    } else {
        return Err(format!(
            "installing needs root: run `{command}`, then cargo xtask test again"
        ));
    };
    eprintln!("xtask: installing {}", packages.join(" "));
    let apt = |args: &[&str]| {
        let mut line: Vec<&str> = sudo.to_vec();
        line.extend_from_slice(&["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
        line.extend_from_slice(args);
        run(&line)
    };
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(&packages);
    // The package lists may be missing or stale on a fresh machine: update, then install.
    if !(apt(&["update", "-qq"]) && apt(&install)) {
        return Err(format!(
            "apt-get could not install {}: run `{command}` and look at what it says",
            packages.join(" ")
        ));
    }
    let still: Vec<&str> = missing
        .iter()
        .filter(|p| !installed(p.program))
        .map(|p| p.program)
        .collect();
    if !still.is_empty() {
        return Err(format!("still missing after apt-get: {}", still.join(", ")));
    }
    Ok(())
}

/// Whether `program` is on `PATH` or in the system directories (dnsmasq lives in
/// `/usr/sbin`, which a user's `PATH` may leave out).
fn installed(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // Debian keeps PostgreSQL's server programs in a directory per major version.
    let postgres = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|version| version.path().join("bin"));
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(Into::into))
        .chain(postgres)
        .any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Runs a command with its output passed through; whether it succeeded.
fn run(line: &[&str]) -> bool {
    let Some((program, args)) = line.split_first() else {
        return false;
    };
    Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}
