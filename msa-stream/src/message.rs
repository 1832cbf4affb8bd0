//! Messages: a typed [`Message`] for handlers, and the [`Envelope`] binders carry (bytes
//! and headers, as they cross the wire).

use std::collections::BTreeMap;

use bytes::Bytes;

/// Message headers: names and values as text, in a stable order.
pub type Headers = BTreeMap<String, String>;

/// The header naming the payload's content type (Spring Cloud Stream's name).
pub const CONTENT_TYPE: &str = "contentType";
/// The content type msa writes and expects by default.
pub const JSON: &str = "application/json";
/// Why a message was dead-lettered (Spring Cloud Stream's name).
pub const EXCEPTION_MESSAGE: &str = "x-exception-message";
/// The failure's kind, where msa knows it (`decode`, `handler`).
pub const EXCEPTION_KIND: &str = "x-exception-kind";
/// How many times the message was handled before it was dead-lettered.
pub const ATTEMPTS: &str = "x-attempts";
/// The destination a dead-lettered message was consumed from.
pub const ORIGINAL_DESTINATION: &str = "x-original-destination";
/// The header carrying a message's key on brokers without keys of their own.
pub const KEY: &str = "msa-key";
/// The partition a message was sent to (Spring Cloud Stream's `scst_partition`).
pub const PARTITION: &str = "scst_partition";

/// The header carrying a message's unique id, by which consumers recognise a message the
/// broker (or an outbox relay) delivers twice.
pub const MESSAGE_ID: &str = "msa-message-id";

/// A new random id in the form of a version 4 UUID (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`),
/// as Spring writes message and event ids.
pub fn random_id() -> String {
    let bits = (fastrand::u128(..) & !(0xf000 << 64) & !(0xc << 60)) | (0x4000 << 64) | (0x8 << 60);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// What a handler receives and a producer sends: a payload with its headers and key.
#[derive(Clone, Debug, PartialEq)]
pub struct Message<T> {
    /// The payload.
    pub payload: T,
    /// Headers (`contentType`, `traceparent`, the application's own).
    pub headers: Headers,
    /// The key: messages with one key go to one partition and keep their order.
    pub key: Option<String>,
}

impl<T> Message<T> {
    /// A message with no headers and no key.
    pub fn new(payload: T) -> Self {
        Message {
            payload,
            headers: Headers::new(),
            key: None,
        }
    }

    /// With `key`, which decides the partition and the order messages keep.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// With a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// A message as binders carry it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The payload's bytes.
    pub payload: Bytes,
    /// Its headers.
    pub headers: Headers,
    /// Its key, if any.
    pub key: Option<String>,
    /// The partition it goes to, when the producer is partitioned.
    pub partition: Option<u32>,
}

impl Envelope {
    /// An envelope of `payload` with no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Envelope {
            payload: payload.into(),
            headers: Headers::new(),
            key: None,
            partition: None,
        }
    }

    /// The content type: the `contentType` header, else `default`.
    pub fn content_type<'a>(&'a self, default: &'a str) -> &'a str {
        self.headers
            .get(CONTENT_TYPE)
            .map_or(default, String::as_str)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_ids_are_version_4_uuids() {
        let id = super::random_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, super::random_id());
    }
}
