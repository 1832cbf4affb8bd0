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
        let mut dns = Dnsmasq {
            child,
            port,
            hosts: file,
        };
        // Ready once its port is bound (it has read its files by then): a query sent
        // earlier is refused, and a resolver may hold on to that.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !udp_bound(port) {
            if let Ok(Some(status)) = dns.child.try_wait() {
                panic!("dnsmasq exited at start: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dnsmasq did not listen on port {port} within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        dns
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

/// Whether a UDP socket is bound to 127.0.0.1:`port`, as `/proc/net/udp` lists them.
fn udp_bound(port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|table| {
        table
            .lines()
            .skip(1)
            .any(|line| line.split_whitespace().nth(1) == Some(local.as_str()))
    })
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
