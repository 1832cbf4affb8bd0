//! `msa-config-server`: a Spring Cloud Config-compatible config server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use msa_config::server::{Cipher, ConfigServer, DirRepository, GitOptions, GitRepository};
use msa_core::cli::ServerArgs;
use msa_core::secrets::mask_url;
use msa_core::shutdown;
use msa_core::telemetry::Telemetry;

/// A Spring Cloud Config-compatible config server: serves a directory or a git repository of
/// YAML, properties, JSON and TOML files to Spring and msa clients, and tells watching
/// clients of changes within milliseconds.
#[derive(Debug, Parser)]
#[command(name = "msa-config-server", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8888")]
    bind: String,
    /// A directory of config files; edits are served without a restart.
    #[arg(
        long,
        value_name = "PATH",
        required_unless_present_any = ["git", "etcd"],
        conflicts_with_all = ["git", "etcd"]
    )]
    dir: Option<PathBuf>,
    /// A git repository (path or URL); labels are branches, tags or commits.
    #[arg(long, value_name = "REPO", conflicts_with = "etcd")]
    git: Option<String>,
    /// Files in etcd (`etcd://host:port[,...]`): keys `/msa/config/<label>/<file>`, the
    /// format by the file's suffix; changes are served at once (feature `etcd`).
    #[arg(long, value_name = "URL")]
    etcd: Option<String>,
    /// The label served when a request names none (git; main, then master).
    #[arg(long, value_name = "LABEL")]
    default_label: Option<String>,
    /// How often a remote --git repository is fetched.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = msa_core::duration::parse)]
    git_refresh_rate: std::time::Duration,
    /// How long one fetch of a remote --git repository may take; the server keeps serving
    /// what it has meanwhile (and fails to start if the first fetch takes longer).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = msa_core::duration::parse)]
    git_timeout: std::time::Duration,
    /// Key material for `{cipher}` values and /encrypt, /decrypt.
    #[arg(long, value_name = "PATH")]
    encrypt_key_file: Option<PathBuf>,
    /// Require HTTP Basic auth with this user (and --password).
    #[arg(long, requires = "password")]
    user: Option<String>,
    /// The Basic auth password.
    #[arg(long, requires = "user")]
    password: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    shutdown::exit("msa-config-server", run(Args::parse()).await)
}

async fn run(args: Args) -> Result<(), String> {
    let _telemetry = Telemetry::new("msa-config-server")
        .version(env!("CARGO_PKG_VERSION"))
        .init()
        .map_err(|e| e.to_string())?;
    let (mut server, source) = match (&args.git, &args.dir) {
        _ if args.etcd.is_some() => {
            let url = args.etcd.as_deref().unwrap_or_default();
            let label = args.default_label.as_deref().unwrap_or("main");
            (etcd_server(url, label)?, mask_url(url))
        }
        (Some(git), _) => {
            let options = GitOptions {
                default_label: args.default_label.clone(),
                refresh: args.git_refresh_rate,
                timeout: args.git_timeout,
            };
            let repository = GitRepository::open_with(git, options)
                .map_err(|e| format!("--git {}: {e}", mask_url(git)))?;
            (ConfigServer::new(repository), mask_url(git))
        }
        (None, Some(dir)) => {
            if args.default_label.is_some() {
                tracing::warn!("--default-label applies to --git only; a directory has no labels");
            }
            let repository =
                DirRepository::open(dir).map_err(|e| format!("--dir {}: {e}", dir.display()))?;
            (ConfigServer::new(repository), dir.display().to_string())
        }
        (None, None) => return Err("--dir PATH, --git REPO or --etcd URL is required".into()),
    };
    if let Some(path) = &args.encrypt_key_file {
        let material = std::fs::read(path)
            .map_err(|e| format!("--encrypt-key-file {}: {e}", path.display()))?;
        let cipher = Cipher::new(&material)
            .map_err(|e| format!("--encrypt-key-file {}: {e}", path.display()))?;
        server = server.cipher(cipher);
    }
    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        server = server.basic_auth(user, password);
    }
    tracing::info!(repository = %source, "serving");
    let availability = server.availability();
    args.server
        .serve(&args.bind, availability, |management| {
            server.management(management).router()
        })
        .await
}

#[cfg(feature = "etcd")]
fn etcd_server(url: &str, label: &str) -> Result<ConfigServer, String> {
    let repository =
        msa_config::server::EtcdRepository::open(url, label).map_err(|e| format!("--etcd {e}"))?;
    Ok(ConfigServer::new(repository))
}

#[cfg(not(feature = "etcd"))]
fn etcd_server(_: &str, _: &str) -> Result<ConfigServer, String> {
    Err("--etcd: this msa-config-server was built without the `etcd` feature".into())
}
