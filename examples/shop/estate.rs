//! The estate: every server and service of the shop in its own process, started in
//! order, and stopped in the reverse order on Ctrl-C (so services deregister while the
//! registry still runs, and the broker stops last).
//!
//! The services' messages go through a NATS server the estate starts on a free port with a
//! throwaway data directory. It provisions `nats-server` the way `cargo xtask test`
//! provisions the tests' peers: installed with `apt-get` when it is missing and this user
//! may (root, or password-less `sudo`); otherwise the estate says which command to run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::common::BoxError;

/// Options of the estate.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct EstateArgs {
    /// Listen on free ports instead of 8761 (registry), 8888 (config) and 8080 (gateway).
    #[arg(long)]
    pub(crate) free_ports: bool,
    /// The shared data directory (default: a new temporary directory, removed at exit).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// The directory the config server serves (default: examples/shop/config).
    #[arg(long)]
    pub(crate) config_dir: Option<PathBuf>,
    /// Stop when stdin closes (for a parent process; Ctrl-C always stops).
    #[arg(long)]
    pub(crate) stop_on_eof: bool,
}

/// One running process of the estate.
struct Process {
    name: String,
    url: String,
    child: Child,
    /// Closing it asks the process to stop (`None` for the broker: it is killed).
    stdin: Option<ChildStdin>,
}

/// Where Debian installs `nats-server`, beside `PATH`.
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin"];

/// `nats-server`, installing Debian's package when it is missing and this user may.
fn nats_server() -> Result<PathBuf, BoxError> {
    let find = || {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(SYSTEM_DIRS.iter().map(PathBuf::from))
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    let sudo = !root
        && std::process::Command::new("sudo")
            .args(["-n", "true"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let apt = SYSTEM_DIRS
        .iter()
        .any(|dir| Path::new(dir).join("apt-get").is_file());
    if !(apt && (root || sudo)) {
        return Err(
            "the shop's services talk through NATS, and nats-server is not installed: \
                    run `sudo apt-get install -y nats-server` (Debian's package), then start \
                    the shop again"
                .into(),
        );
    }
    let prefix: &[&str] = if root { &[] } else { &["sudo", "-n"] };
    for step in [
        &["apt-get", "update", "-qq"][..],
        &["apt-get", "install", "-y", "-qq", "nats-server"][..],
    ] {
        let line: Vec<&str> = prefix.iter().chain(step).copied().collect();
        println!("shop: nats-server is missing; running {}", line.join(" "));
        let status = std::process::Command::new(line[0])
            .args(&line[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if !status.success() {
            return Err(format!(
                "`{}` failed ({status}): install nats-server and start the shop again",
                line.join(" ")
            )
            .into());
        }
    }
    find().ok_or_else(|| "apt-get installed nats-server, but it is not on PATH".into())
}

/// Starts `nats-server` (JetStream, data in `<data>/nats`) on a free port; returns its URL.
async fn start_nats(estate: &mut Vec<Process>, data: &Path) -> Result<String, BoxError> {
    let program = nats_server()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(program)
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(data.join("nats"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let url = format!("nats://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            println!(
                "shop: started nats-server pid={} url={url}",
                child.id().unwrap_or(0)
            );
            estate.push(Process {
                name: "nats-server".into(),
                url: url.clone(),
                child,
                stdin: None,
            });
            return Ok(url);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err("nats-server did not listen within 5 s".into())
}

const SOURCE: &str = env!("CARGO_MANIFEST_DIR");

pub(crate) async fn run(args: EstateArgs) -> Result<(), BoxError> {
    let (data, temporary) = match &args.data {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("msa-shop-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&data)?;
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| Path::new(SOURCE).join("examples/shop/config"));
    let port = |fixed: u16| {
        if args.free_ports {
            "127.0.0.1:0".to_owned()
        } else {
            format!("127.0.0.1:{fixed}")
        }
    };

    let mut estate: Vec<Process> = Vec::new();
    let started = start(&mut estate, &data, &config_dir, &port).await;
    let outcome = match started {
        Ok(()) => {
            banner(&estate, &config_dir, &data);
            wait_for_stop(args.stop_on_eof, &mut estate).await;
            Ok(())
        }
        Err(error) => Err(error),
    };
    println!("shop: stopping");
    stop(estate).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&data);
    }
    println!("shop: stopped");
    outcome
}

async fn start(
    estate: &mut Vec<Process>,
    data: &Path,
    config_dir: &Path,
    port: &dyn Fn(u16) -> String,
) -> Result<(), BoxError> {
    let nats = start_nats(estate, data).await?;
    // Every process sends its spans and log records to msa-admin's OTLP receiver (the
    // admin starts last: what is sent before it listens is dropped).
    let otlp = free_or(port(4318))?;
    let registry = spawn(
        estate,
        "msa-registry",
        &["registry", "--bind", &port(8761)],
        &otlp,
    )
    .await?;
    let config = spawn(
        estate,
        "msa-config-server",
        &[
            "config-server",
            "--bind",
            &port(8888),
            "--source",
            &config_dir.display().to_string(),
        ],
        &otlp,
    )
    .await?;
    let data_arg = data.display().to_string();
    let service = |name: &'static str| {
        vec![
            name.to_owned(),
            "--registry".to_owned(),
            registry.clone(),
            "--config".to_owned(),
            config.clone(),
            "--data".to_owned(),
            data_arg.clone(),
            "--nats".to_owned(),
            nats.clone(),
        ]
    };
    for (name, count) in [
        ("inventory", 2),
        ("payments", 1),
        ("order-history", 1),
        ("notifications", 1),
        ("orders", 2),
    ] {
        for n in 1..=count {
            let args = service(name);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            spawn(estate, &format!("{name}-{n}"), &args, &otlp).await?;
        }
        wait_registered(&registry, name, count).await?;
    }

    // The web gateway, and the phone app's (a backend for frontend with routes of its
    // own), each with its routes file pointed at this estate's registry.
    let mut gateways = Vec::new();
    for (name, file, fixed) in [
        ("msa-gateway", "gateway.yaml", 8080),
        ("msa-gateway-mobile", "gateway-mobile.yaml", 8081),
    ] {
        let routes = std::fs::read_to_string(Path::new(SOURCE).join("examples/shop").join(file))?
            .replace("http://127.0.0.1:8761", &registry);
        let routes_file = data.join(file);
        std::fs::write(&routes_file, routes)?;
        let source = routes_file.display().to_string();
        let args = ["gateway", "--bind", &port(fixed), "--source", &source];
        gateways.push(spawn(estate, name, &args, &otlp).await?);
    }
    let gateway = gateways.swap_remove(0);
    wait_routed(&gateway).await?;
    let admin_bind = free_or(port(8790))?;
    spawn(
        estate,
        "msa-admin",
        &[
            "admin",
            "--registry",
            &registry,
            "--bind",
            &admin_bind,
            "--otlp-bind",
            &otlp,
            "--gateway",
            &gateway,
            "--config-server",
            &config,
        ],
        &otlp,
    )
    .await?;
    Ok(())
}

/// `bind` itself, or a free port on 127.0.0.1 for `127.0.0.1:0` (for a process that must
/// be told its address before it listens).
fn free_or(bind: String) -> Result<String, BoxError> {
    if bind.ends_with(":0") {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Ok(format!("127.0.0.1:{port}"))
    } else {
        Ok(bind)
    }
}

/// Starts this executable as `args`, exporting its spans and logs to `otlp`, and waits for
/// its "listening on URL" line.
async fn spawn(
    estate: &mut Vec<Process>,
    name: &str,
    args: &[&str],
    otlp: &str,
) -> Result<String, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))
        .args(args)
        .arg("--stop-on-eof")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Its own process group: Ctrl-C reaches the estate only, which stops the
        // processes in order.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    let url = match first {
        Ok(Ok(Some(line))) => line
            .strip_prefix("listening on ")
            .map(str::to_owned)
            .ok_or_else(|| format!("{name} said {line:?} instead of where it listens"))?,
        Ok(_) => return Err(format!("{name} exited before it listened").into()),
        Err(_) => return Err(format!("{name} did not listen within 60 s").into()),
    };
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{line}");
        }
    });
    println!(
        "shop: started {name} pid={} url={url}",
        child.id().unwrap_or(0)
    );
    estate.push(Process {
        name: name.to_owned(),
        url: url.clone(),
        child,
        stdin,
    });
    Ok(url)
}

/// Waits until `count` instances of `service` are registered and up.
async fn wait_registered(registry: &str, service: &str, count: usize) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    let url = format!("{registry}/msa/v1/services/{service}");
    for _ in 0..300 {
        if let Ok(response) = http.get(&url).send().await
            && let Ok(answer) = response.json::<serde_json::Value>().await
        {
            let up = answer["instances"].as_array().map_or(0, |instances| {
                instances.iter().filter(|i| i["status"] == "UP").count()
            });
            if up >= count {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{service}: {count} instances did not register within 30 s").into())
}

/// Waits until the gateway routes to the services.
async fn wait_routed(gateway: &str) -> Result<(), BoxError> {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(response) = http.get(format!("{gateway}/api/stock")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the gateway did not reach inventory within 30 s".into())
}

fn banner(estate: &[Process], config_dir: &Path, data: &Path) {
    let url = |name: &str| {
        estate
            .iter()
            .find(|p| p.name == name)
            .map_or("", |p| p.url.as_str())
            .to_owned()
    };
    let gateway = url("msa-gateway");
    println!();
    println!("The shop is running:");
    for process in estate {
        println!("  {:<18} {}", process.name, process.url);
    }
    println!();
    println!("Try:");
    println!(
        "  curl -si -X POST {gateway}/api/orders -H 'content-type: application/json' -d '{{\"item\": \"widget\", \"qty\": 2}}'"
    );
    println!("  curl -s {gateway}/api/orders/<id>");
    println!("  curl -s {gateway}/api/orders/history   # order-history's read model (CQRS)");
    println!("  curl -s {gateway}/api/stock");
    println!(
        "  curl -s {}/m/stock/widget -H 'X-Device-Id: phone-1'   # the mobile gateway (BFF): trimmed answers, a limit per device",
        url("msa-gateway-mobile")
    );
    println!(
        "  curl -si -X POST {gateway}/api/orders -H 'content-type: application/json' -d '{{\"item\": \"gizmo\", \"qty\": 5}}'   # over the payment limit: REJECTED, stock released"
    );
    println!(
        "Edit {}/application.yml (shop.prices) or orders.yml (orders.accepting): the next order sees it.",
        config_dir.display()
    );
    println!(
        "Each service's SQLite database (orders.db, inventory.db, ...) in {}; sagas at <orders>/actuator/sagas.",
        data.display()
    );
    println!(
        "The estate at a glance: {} (instances, breakers, the service graph, traces and logs).",
        url("msa-admin")
    );
    println!("Ctrl-C stops everything.");
    println!();
    println!(
        "shop: ready gateway={gateway} registry={} config={} nats={} admin={} mobile={}",
        url("msa-registry"),
        url("msa-config-server"),
        url("nats-server"),
        url("msa-admin"),
        url("msa-gateway-mobile")
    );
}

async fn wait_for_stop(stop_on_eof: bool, estate: &mut [Process]) {
    let eof = async {
        if stop_on_eof {
            use tokio::io::AsyncReadExt;
            let mut stdin = tokio::io::stdin();
            let mut buffer = [0u8; 256];
            while let Ok(n) = stdin.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match &mut terminate {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    // A process of the estate that exits on its own is reported; the rest keep running.
    let exited = async {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for process in estate.iter_mut() {
                if process.url.is_empty() {
                    continue; // reported already
                }
                if let Ok(Some(status)) = process.child.try_wait() {
                    println!("shop: {} exited ({status})", process.name);
                    process.url.clear();
                }
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
        () = eof => {}
        () = exited => {}
    }
}

/// Stops the processes in reverse order of starting: the gateway, then every service at
/// once, then the config server, the registry and the broker. Closing a process's stdin
/// asks it to stop cleanly (a service deregisters, then drains); one that has not stopped
/// in 15 s is killed.
async fn stop(estate: Vec<Process>) {
    let is_service = |p: &Process| !p.name.starts_with("msa-") && p.name != "nats-server";
    let (services, servers): (Vec<Process>, Vec<Process>) =
        estate.into_iter().partition(is_service);
    let mut servers = servers.into_iter().rev().collect::<Vec<_>>();
    // The gateway (started last) first.
    if servers.first().is_some_and(|p| p.name == "msa-gateway") {
        stop_all(vec![servers.remove(0)]).await;
    }
    stop_all(services).await;
    for server in servers {
        stop_all(vec![server]).await;
    }
}

async fn stop_all(processes: Vec<Process>) {
    let mut waiting = tokio::task::JoinSet::new();
    for mut process in processes {
        if process.stdin.is_none() {
            // The broker: SIGTERM, it stops at once.
            if let Some(pid) = process.child.id() {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
        }
        drop(process.stdin.take());
        waiting.spawn(async move {
            if tokio::time::timeout(Duration::from_secs(15), process.child.wait())
                .await
                .is_err()
            {
                println!("shop: {} did not stop in 15 s; killing it", process.name);
                let _ = process.child.kill().await;
            }
        });
    }
    waiting.join_all().await;
}
