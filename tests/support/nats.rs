//! A `nats-server` with JetStream for the tests, on a free port with a throwaway store.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use msa_stream::binder::{Binder, ProducerOptions};
use msa_stream::nats::NatsBinder;

/// A `nats-server` with JetStream, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn start(store: &Path, port: u16) -> Server {
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (Debian's nats-server package; `cargo xtask test` installs it)");
        Server { child, port }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn binder(&self) -> NatsBinder {
        for _ in 0..200 {
            if let Ok(binder) = NatsBinder::connect(&self.url()).await {
                // JetStream answers once the server has read its store.
                if binder
                    .producer("ready", &ProducerOptions::default())
                    .await
                    .is_ok()
                {
                    return binder;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server never answered on {}", self.url());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
