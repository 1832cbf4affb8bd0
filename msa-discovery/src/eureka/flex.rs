//! Lenient readers for the shapes Eureka clients send.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A boolean that Eureka writes as the string `"true"`/`"false"`; reads a bool or a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlexBool(pub bool);

impl Serialize for FlexBool {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0 { "true" } else { "false" })
    }
}

impl<'de> Deserialize<'de> for FlexBool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FlexBool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false, as a boolean or a string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FlexBool, E> {
                Ok(FlexBool(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FlexBool, E> {
                match v.trim() {
                    t if t.eq_ignore_ascii_case("true") => Ok(FlexBool(true)),
                    t if t.eq_ignore_ascii_case("false") || t.is_empty() => Ok(FlexBool(false)),
                    other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A number that Eureka writes as a string (timestamps); reads a number or a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlexU64(pub u64);

impl Serialize for FlexU64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative integer, as a number or a string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 {
            Ok(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(0);
        }
        v.parse()
            .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
    }
}

impl<'de> Deserialize<'de> for FlexU64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(U64Visitor).map(FlexU64)
    }
}

/// Integers written as numbers, read from numbers or strings.
pub(super) mod number {
    use super::*;

    pub(crate) fn serialize<T: Copy + Into<u64>, S: Serializer>(
        v: &T,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64((*v).into())
    }

    pub(crate) fn deserialize<'de, T: TryFrom<u64>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<T, D::Error> {
        let v = d.deserialize_any(U64Visitor)?;
        T::try_from(v).map_err(|_| de::Error::custom(format!("{v} is out of range")))
    }
}

/// Strings read from strings or numbers (`versions__delta`).
pub(super) mod string {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        })
    }
}

/// Metadata: string values (numbers and booleans read as their text), `@class` ignored.
pub(super) mod metadata {
    use std::collections::BTreeMap;

    use super::*;

    pub(crate) fn serialize<S: Serializer>(
        v: &BTreeMap<String, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        // Anything but an object (XML's empty `<metadata/>` reads as "") is no metadata.
        let raw = match serde_json::Value::deserialize(d)? {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Ok(raw
            .into_iter()
            .filter(|(key, _)| key != "@class")
            .filter_map(|(key, value)| match value {
                serde_json::Value::String(s) => Some((key, s)),
                serde_json::Value::Null => None,
                other => Some((key, other.to_string())),
            })
            .collect())
    }
}

/// A list written as an array and read from an array, a single object, or nothing.
pub(super) mod one_or_many {
    use super::*;

    pub(crate) fn serialize<T: Serialize, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<Vec<T>, D::Error>
    where
        T: serde::de::DeserializeOwned,
        D: Deserializer<'de>,
    {
        // Through a Value so the error of a malformed element is the element's own.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Array(items) => items
                .into_iter()
                .map(|item| serde_json::from_value(item).map_err(de::Error::custom))
                .collect(),
            serde_json::Value::Null => Ok(Vec::new()),
            one => serde_json::from_value(one)
                .map(|item| vec![item])
                .map_err(de::Error::custom),
        }
    }
}
