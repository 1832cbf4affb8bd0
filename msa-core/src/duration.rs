//! Durations in config files, as Spring Boot reads them: `30s`, `500ms`, `1m 30s`, or a
//! bare number of milliseconds. Use with `#[serde(with = "msa_core::duration")]`.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     #[serde(with = "msa_core::duration")]
//!     timeout: Duration,
//! }
//!
//! let settings: Settings = serde_json::from_str(r#"{"timeout": "1m 30s"}"#).unwrap();
//! assert_eq!(settings.timeout, Duration::from_secs(90));
//! let settings: Settings = serde_json::from_str(r#"{"timeout": 250}"#).unwrap();
//! assert_eq!(settings.timeout, Duration::from_millis(250));
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes a duration as humantime text (`1m 30s`).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Reads a duration from a number of milliseconds or text such as `500ms`, `30s`, `2m`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Millis(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(text) => parse(&text).map_err(serde::de::Error::custom),
    }
}

/// Reads a duration from text: a number of milliseconds, or a value like `500ms`, `30s`,
/// `1m 30s`. The error says which forms are accepted.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(msa_core::duration::parse("2m"), Ok(Duration::from_secs(120)));
/// assert!(msa_core::duration::parse("soon").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!(
            "invalid duration {text:?} ({e}): use a number of milliseconds or a value like 500ms, 30s, 2m"
        )
    })
}

/// `Option<Duration>` in config files: absent or `null` is `None`. Use with
/// `#[serde(default, with = "msa_core::duration::option")]`.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     #[serde(default, with = "msa_core::duration::option")]
///     timeout: Option<Duration>,
/// }
///
/// let settings: Settings = serde_json::from_str(r#"{"timeout": "2s"}"#).unwrap();
/// assert_eq!(settings.timeout, Some(Duration::from_secs(2)));
/// let settings: Settings = serde_json::from_str("{}").unwrap();
/// assert_eq!(settings.timeout, None);
/// ```
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as humantime text, or nothing.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional duration as [`deserialize`](super::deserialize) does.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super")] Duration);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(d)| d))
    }
}
