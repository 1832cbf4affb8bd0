//! Durations in config files, as Spring Boot reads them: `30s`, `500ms`, `1m 30s`, or a
//! bare number of milliseconds.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(text) => {
            let text = text.trim();
            if let Ok(ms) = text.parse::<u64>() {
                return Ok(Duration::from_millis(ms));
            }
            humantime::parse_duration(text).map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {text:?} ({e}): use a number of milliseconds or a value like 500ms, 30s, 2m"
                ))
            })
        }
    }
}
