//! The upstream side: pooled connections per upstream (the gateway's own HTTP/1.1 client
//! for plain `http://`, hyper's for TLS, WebSocket and h2c) and TLS to upstreams.

pub(crate) mod pool;
pub(crate) mod tls;
