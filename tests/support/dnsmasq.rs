//! A dnsmasq process on 127.0.0.1 answering for `*.test` from a hosts file and SRV
//! records: the DNS the discovery tests resolve against (Debian's dnsmasq-base, which
//! `cargo xtask test` installs). Shared by msa-discovery's and `msa::App`'s tests.

#![allow(dead_code, unreachable_pub)]

use std::process::{Child, Command, Stdio};

/// A dnsmasq process answering for `*.test` from a hosts file and SRV records.
pub struct Dnsmasq {
    child: Child,
    pub port: u16,
    hosts: tempfile::NamedTempFile,
}

impl Dnsmasq {
    pub fn start(hosts: &str, srv: &[&str]) -> Self {
        let port = free_udp_port();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), hosts).unwrap();
        let mut command = Command::new(dnsmasq());
        command.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=root",
            // Authoritative for .test, as a cluster's DNS is for its zone: unknown names
            // get NXDOMAIN (without this, dnsmasq answers REFUSED, a server error).
            "--local=/test/",
        ]);
        command.arg(format!("--port={port}"));
        command.arg(format!("--addn-hosts={}", file.path().display()));
        for record in srv {
            command.arg(format!("--srv-host={record}"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts (Debian's dnsmasq-base; `cargo xtask test` installs it)");
        Dnsmasq {
            child,
            port,
            hosts: file,
        }
    }

    /// Replaces the hosts file and tells dnsmasq to read it again.
    pub fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.hosts.path(), hosts).unwrap();
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dnsmasq() -> &'static str {
    ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
        .expect("dnsmasq is installed (Debian's dnsmasq-base; `cargo xtask test` installs it)")
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
