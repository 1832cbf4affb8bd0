//! The shop's own gateway filter, for its backend for frontend: the mobile gateway trims
//! the services' answers to the fields a phone shows (`JsonFields=id, status, total`),
//! so the mobile app is sent neither the bytes nor the internals (reservations, traces)
//! it has no use for. Both gateways run this binary's `gateway` with these filters.

use bytes::Bytes;
use http::HeaderValue;
use msa_gateway::filter::{Exchange, Filters, GatewayFilter};
use serde_json::{Map, Value};

/// Keeps only the listed top-level fields of a JSON object answer (or of each object in an
/// array); other answers pass as they are.
#[derive(Debug)]
struct JsonFields(Vec<String>);

impl GatewayFilter for JsonFields {
    fn shapes_body(&self) -> bool {
        true
    }

    fn shape(&self, _: &Exchange, response: &mut http::response::Parts, body: Bytes) -> Bytes {
        let json = response
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let Some(value) = json
            .then(|| serde_json::from_slice::<Value>(&body).ok())
            .flatten()
        else {
            return body;
        };
        let keep = |object: &Map<String, Value>| -> Value {
            Value::Object(
                object
                    .iter()
                    .filter(|(key, _)| self.0.contains(key))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            )
        };
        let shaped = match &value {
            Value::Object(object) => keep(object),
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|item| item.as_object().map_or_else(|| item.clone(), keep))
                    .collect(),
            ),
            _ => return body,
        };
        response.headers.insert(
            http::header::HeaderName::from_static("x-shaped-for"),
            HeaderValue::from_static("mobile"),
        );
        Bytes::from(serde_json::to_vec(&shaped).unwrap_or_default())
    }
}

/// The filters the shop's gateways know besides Spring Cloud Gateway's.
pub(crate) fn filters() -> Filters {
    Filters::new().filter("JsonFields", |args| {
        let fields = args.list("fields", 0)?;
        if fields.is_empty() {
            return Err("JsonFields needs the fields to keep".into());
        }
        Ok(JsonFields(fields))
    })
}
