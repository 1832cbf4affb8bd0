//! HTTP/1.1 on the wire: the message head as it arrived ([`wire`]), the downstream
//! connection loop ([`server`]) and the upstream client ([`client`]).

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod wire;
