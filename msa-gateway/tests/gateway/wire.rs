//! The gateway's own HTTP/1.1 path: header lines passed on as they arrived, less the hop-by-hop ones.

use std::net::SocketAddr;

use serde_json::Value;

use crate::support::{GatewayProcess, upstream};

/// Routes that only rewrite the target are forwarded line by line, as the request arrived:
/// what they must still do to its headers and to the answer's.
#[tokio::test]
async fn header_lines_pass_as_they_arrived_without_the_hop_by_hop_ones() {
    let a = upstream("a").await;
    let hand = hand_written_upstream().await;
    let yaml = format!(
        "
routes:
  - id: plain
    uri: http://{a}
    predicates: [ 'Path=/plain/**' ]
    filters: [ 'StripPrefix=1', 'AddRequestParameter=via, gw' ]
  - id: hand
    uri: http://{hand}
    predicates: [ 'Path=/hand/**' ]
    filters: [ 'StripPrefix=1' ]
  - id: filtered
    uri: http://{a}
    predicates: [ 'Path=/filtered/**' ]
    filters: [ 'StripPrefix=1', 'AddRequestHeader=X-Route, filtered' ]
"
    );
    let gateway = GatewayProcess::start(&yaml).await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();

    // The request's own lines pass, with their case; hop-by-hop ones (also those that
    // Connection names) stay; earlier proxies' X-Forwarded-For and Forwarded lines are
    // all kept, the gateway's entry after them.
    let answer = exchange(
        &gateway,
        &format!(
            "POST /plain/echo?x=1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close, X-Hop\r\n\
             X-Hop: no\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Mixed-Case: Yes\r\n\
             X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-For: 198.51.100.2\r\n\
             Forwarded: for=203.0.113.9\r\nContent-Length: 5\r\n\r\nhello"
        ),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nx-echo-path: /echo\r\n"), "{head}");
    let echoed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(echoed["body"], "hello");
    let headers = &echoed["headers"];
    assert_eq!(headers["x-mixed-case"], "Yes");
    assert_eq!(headers["host"], a.to_string());
    assert_eq!(headers["content-length"], "5");
    assert_eq!(
        headers["x-forwarded-for"],
        "203.0.113.9, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], addr);
    assert_eq!(
        headers["forwarded"],
        format!("for=203.0.113.9, for=127.0.0.1;proto=http;host=\"{addr}\"")
    );
    for hop in ["x-hop", "keep-alive", "te", "connection"] {
        assert!(headers.get(hop).is_none(), "{hop} passed: {headers}");
    }

    // The upstream's answer: its connection headers stay with its connection, which it
    // closes; the client's connection goes on, and a chunked answer is passed on chunked.
    let answer = exchange(
        &gateway,
        &format!(
            "GET /hand/hop HTTP/1.1\r\nHost: {addr}\r\n\r\n\
             GET /hand/chunked HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    let (first, rest) = answer.split_once("\r\n\r\n").expect("a first answer");
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(first.contains("\r\nX-Kept: Yes"), "{first}");
    let first_lower = first.to_ascii_lowercase();
    for hop in [
        "connection:",
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(!first_lower.contains(hop), "{hop} passed: {first}");
    }
    let (body, second) = rest.split_at(2);
    assert_eq!(body, "ok");
    let (head, body) = second.split_once("\r\n\r\n").expect("a second answer");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\ntransfer-encoding: chunked"), "{head}");
    // The upstream's Content-Length next to its chunks does not pass.
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close"), "{head}");
    assert_eq!(dechunk(body), "abcde");

    // A route whose filters need the header map, in the same table: served from the
    // route it matched, the general way.
    let answer = exchange(
        &gateway,
        &format!("GET /filtered/f HTTP/1.1\r\nHost: {addr}\r\nX-Mixed-Case: Yes\r\nConnection: close\r\n\r\n"),
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.contains("\r\nx-echo-path: /f\r\n"), "{head}");
    let echoed: Value = serde_json::from_str(body).unwrap();
    assert_eq!(echoed["headers"]["x-route"], "filtered");
    assert_eq!(echoed["headers"]["x-mixed-case"], "Yes");
    assert_eq!(echoed["headers"]["x-forwarded-for"], "127.0.0.1");
}

/// Sends `request` as written on a new connection and reads until the gateway closes it.
async fn exchange(gateway: &GatewayProcess, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gateway.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// An upstream that answers by hand: `/hop` with its own connection headers (and then
/// closes), anything else chunked (with a Content-Length that contradicts the chunks).
async fn hand_written_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut received = Vec::new();
                loop {
                    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => received.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&received[..end]).into_owned();
                    received.drain(..end);
                    if head.starts_with("GET /hop ") {
                        let answer = "HTTP/1.1 200 OK\r\nConnection: close, X-Secret-Hop\r\n\
                            X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\n\
                            X-Kept: Yes\r\nContent-Length: 2\r\n\r\nok";
                        let _ = socket.write_all(answer.as_bytes()).await;
                        return;
                    }
                    let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\nX-Kept: yes\r\n\r\n\
                        3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A chunked body's data (however it was cut into chunks), up to its last chunk.
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("a chunk size line");
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            assert_eq!(rest, "\r\n", "what follows the last chunk");
            return data;
        }
        data.push_str(&rest[..size]);
        body = rest[size..]
            .strip_prefix("\r\n")
            .expect("CRLF after a chunk");
    }
}
