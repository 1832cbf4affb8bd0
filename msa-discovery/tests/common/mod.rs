//! The msa-registry binary as the tests run it.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// An msa-registry process, killed on drop.
pub struct Registry(Child);

impl Registry {
    pub fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    pub fn start_with(port: u16, args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_msa-registry"))
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Registry(child)
    }
}

impl Registry {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (on the native watch, retrying while the registry starts) until `service` has
/// `count` instances; returns the watch's answer.
pub async fn wait_for(port: u16, service: &str, count: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut index = 0;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never had {count} instances"
        );
        let url =
            format!("http://127.0.0.1:{port}/msa/v1/services/{service}?index={index}&wait=5s");
        let Ok(response) = reqwest::get(url).await else {
            // The registry process is (re)starting: poll until it listens.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let answer: Value = response.json().await.unwrap();
        if answer["instances"].as_array().unwrap().len() == count {
            return answer;
        }
        index = answer["index"].as_u64().unwrap();
    }
}
