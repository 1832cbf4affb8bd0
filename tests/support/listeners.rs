//! Probes of the listener contract every msa server keeps (msa-core's `listener` module),
//! shared by the tests of msa-registry, msa-config-server, msa-gateway and `msa::App`:
//! each test starts its server with short limits and runs these against it over TCP.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The flags the probes expect a server to run with.
pub const FLAGS: [&str; 6] = [
    "--header-read-timeout",
    "1s",
    "--idle-timeout",
    "2s",
    "--max-connections",
    "4",
];
/// `--header-read-timeout` in [`FLAGS`].
pub const HEADER_READ: Duration = Duration::from_secs(1);
/// `--idle-timeout` in [`FLAGS`].
pub const IDLE: Duration = Duration::from_secs(2);
/// `--max-connections` in [`FLAGS`] (for the gateway, one worker's share: run it with
/// `workers: 1`).
pub const MAX_CONNECTIONS: usize = 4;

/// Reads until the server closes the connection (at most 10 s); what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    match read.await {
        Ok(_) => answer,
        Err(_) => panic!("the server kept the connection open for 10 s"),
    }
}

/// GET `path` on a connection of its own; the status line's code.
pub async fn status(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&answer);
    text.get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"))
}

/// Asks for `/actuator/health` on a kept-alive `stream`; the status line's first 12 bytes.
/// The answer is small: one more read takes the rest of it.
async fn ask_health(stream: &mut TcpStream) -> [u8; 12] {
    stream
        .write_all(b"GET /actuator/health HTTP/1.1\r\nHost: probe\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    let mut rest = [0u8; 4096];
    let _ = stream.read(&mut rest).await.unwrap();
    head
}

/// The resident memory of process `pid`, from `/proc`, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// A client that sends half a request head and then nothing is cut off once the
/// header-read timeout has passed, and not before.
pub async fn a_head_that_stops_arriving_is_cut_off(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"GET /actuator/health HTTP/1.1\r\nHost: pro")
        .await
        .unwrap();
    let answer = until_closed(&mut stream).await;
    let waited = started.elapsed();
    assert!(waited >= HEADER_READ, "cut off after {waited:?}");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "a slow head got {text:?}"
    );
}

/// A keep-alive connection with no request for the idle timeout is closed; one used
/// more often than that is not.
pub async fn an_idle_connection_is_closed(addr: SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    for _ in 0..3 {
        // Half the idle timeout between requests: the connection stays.
        tokio::time::sleep(IDLE / 2).await;
        let head = ask_health(&mut stream).await;
        assert_eq!(&head[..9], b"HTTP/1.1 ");
    }
    let idle = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 4096];
        while let Ok(1..) = stream.read(&mut chunk).await {}
    });
    closed.await.expect("the idle connection was never closed");
    let waited = idle.elapsed();
    assert!(
        waited >= IDLE - Duration::from_millis(300),
        "closed after {waited:?}"
    );
}

/// With the maximum of connections open, another is not served until one of them closes.
pub async fn connections_past_the_cap_wait_for_one_to_close(addr: SocketAddr) {
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        // A request answered proves the connection was accepted and is being served.
        ask_health(&mut stream).await;
        held.push(stream);
    }
    let mut waiting = TcpStream::connect(addr).await.unwrap(); // the kernel's backlog
    waiting
        .write_all(b"GET /actuator/health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1];
    let early = tokio::time::timeout(IDLE / 4, waiting.read(&mut first)).await;
    assert!(early.is_err(), "a connection past the cap was served");
    drop(held.pop());
    let answer = until_closed(&mut waiting).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "once a slot was free: {text:?}"
    );
}

/// With a management listener, the probes answer on both listeners and every other
/// actuator endpoint only on the management one.
pub async fn the_actuator_moves_to_the_management_listener(
    main: SocketAddr,
    management: SocketAddr,
) {
    for probe in [
        "/actuator/health",
        "/actuator/health/readiness",
        "/actuator/info",
    ] {
        assert_eq!(
            status(main, probe).await,
            200,
            "{probe} on the main listener"
        );
        assert_eq!(
            status(management, probe).await,
            200,
            "{probe} on management"
        );
    }
    assert_eq!(status(main, "/actuator/prometheus").await, 404);
    assert_eq!(status(management, "/actuator/prometheus").await, 200);
    assert_eq!(status(main, "/actuator").await, 404);
    assert_eq!(status(management, "/actuator").await, 200);
}

/// After SIGTERM to `pid` (started with `--shutdown-grace 3s`), readiness answers 503
/// while the process still serves, liveness stays 200, and the process exits after the
/// grace.
pub async fn readiness_goes_down_on_sigterm(pid: u32, addr: SocketAddr) {
    assert_eq!(status(addr, "/actuator/health/readiness").await, 200);
    let sent = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut readiness = 200;
    while readiness == 200 {
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "readiness never went down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        readiness = status(addr, "/actuator/health/readiness").await;
    }
    assert_eq!(readiness, 503);
    assert_eq!(status(addr, "/actuator/health/liveness").await, 200);
    // Past the grace it drains and exits: connections are refused.
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still listening long after the grace"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        sent.elapsed() >= Duration::from_secs(3),
        "stopped before the grace ended"
    );
}

/// Waits (up to 20 s) until `addr` accepts connections.
pub async fn wait_until_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every probe but the shutdown one, against a server started with [`FLAGS`] and a
/// management listener.
pub async fn the_listener_contract_holds(main: SocketAddr, management: SocketAddr) {
    wait_until_listening(main).await;
    wait_until_listening(management).await;
    tokio::join!(
        a_head_that_stops_arriving_is_cut_off(main),
        a_head_that_stops_arriving_is_cut_off(management),
        an_idle_connection_is_closed(main),
        the_actuator_moves_to_the_management_listener(main, management),
    );
    // Alone: it counts every open connection.
    connections_past_the_cap_wait_for_one_to_close(main).await;
}

/// `binary` started through `sh` with 64 file descriptors at most (add its arguments);
/// output discarded.
pub fn with_few_descriptors(binary: &str) -> std::process::Command {
    let mut command = std::process::Command::new("sh");
    command
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\"", binary])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// User and system CPU time of process `pid` so far, from `/proc`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// With its descriptors used up by idle connections (process `pid`, started through
/// [`with_few_descriptors`]), a server retries `accept()` after pauses instead of at once,
/// and serves again once they are closed.
pub async fn out_of_descriptors_it_pauses(pid: u32, addr: SocketAddr) {
    wait_until_listening(addr).await;
    let mut held = Vec::new();
    for _ in 0..120 {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // accept() now fails: EMFILE
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - before;
    // Retrying at once burns the whole 2 s of a core (200 ticks at 100 Hz).
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s with no descriptors left"
    );
    drop(held);
    // With descriptors back it serves again, after at most its 1 s pause.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Ok(mut stream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await
        {
            let request =
                b"GET /actuator/health HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n";
            if stream.write_all(request).await.is_ok() {
                let mut answer = Vec::new();
                let read =
                    tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut answer));
                if read.await.is_ok() && answer.starts_with(b"HTTP/1.1 200") {
                    return;
                }
            }
        }
        assert!(Instant::now() < deadline, "never served again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
