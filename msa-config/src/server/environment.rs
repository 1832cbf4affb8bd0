//! Spring Cloud Config's Environment: the property sources of an application and its
//! profiles, in precedence order, and their merged view.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
#[cfg(feature = "server")]
use sha2::{Digest, Sha256};

#[cfg(feature = "server")]
use super::format::{EXTENSIONS, ParseError};
#[cfg(feature = "server")]
use super::repository::Snapshot;

/// A flattened property list: `key.path[0]` → scalar, in order.
pub type Flat = Vec<(String, Value)>;

/// The shared application name: `application.yml` applies to every application.
pub const SHARED: &str = "application";

/// The answer to `GET /{application}/{profiles}[/{label}]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Environment {
    /// The application.
    pub name: String,
    /// The profiles, as requested.
    pub profiles: Vec<String>,
    /// The label, as requested (`null` when none).
    pub label: Option<String>,
    /// The repository version (a content hash, or a git commit).
    pub version: Option<String>,
    /// Always `null`: Spring's field for Vault state.
    pub state: Option<String>,
    /// The sources, first wins.
    pub property_sources: Vec<PropertySource>,
}

/// One file's properties.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertySource {
    /// Where the properties come from (`file:/etc/config/orders-dev.yml`).
    pub name: String,
    /// Flattened properties, in file order.
    pub source: Map<String, Value>,
}

/// The files that make up `application` with `profiles`, most specific first: for each
/// profile from the last to the first, `{app}-{profile}` then `application-{profile}`;
/// then `{app}` and `application`.
pub fn base_names(application: &str, profiles: &[String]) -> Vec<String> {
    let mut names = Vec::new();
    for profile in profiles.iter().rev() {
        names.push(format!("{application}-{profile}"));
        if application != SHARED {
            names.push(format!("{SHARED}-{profile}"));
        }
    }
    names.push(application.to_owned());
    if application != SHARED {
        names.push(SHARED.to_owned());
    }
    names.dedup();
    names
}

/// The environment of `application` with `profiles`, or the first broken file it reads.
#[cfg(feature = "server")]
pub fn resolve(
    snapshot: &Snapshot,
    application: &str,
    profiles: &[String],
    label: Option<&str>,
) -> Result<Environment, ParseError> {
    let mut sources = Vec::new();
    for base in base_names(application, profiles) {
        for (ext, _) in EXTENSIONS {
            let file = format!("{base}.{ext}");
            match snapshot.files.get(&file) {
                None => {}
                Some(Err(error)) => return Err(error.clone()),
                Some(Ok(flat)) => sources.push(PropertySource {
                    name: format!("{}/{file}", snapshot.location.trim_end_matches('/')),
                    source: flat.iter().cloned().collect(),
                }),
            }
        }
    }
    Ok(Environment {
        name: application.to_owned(),
        profiles: profiles.to_vec(),
        label: label.map(str::to_owned),
        version: Some(snapshot.version.clone()),
        state: None,
        property_sources: sources,
    })
}

impl Environment {
    /// A hash of the property sources alone: it changes when what this application sees
    /// changes, and not when some other file does. Served as the `ETag`.
    #[cfg(feature = "server")]
    pub fn content_version(&self) -> String {
        let mut hash = Sha256::new();
        for source in &self.property_sources {
            hash.update(source.name.as_bytes());
            hash.update([0]);
            // Serializing a map of JSON values cannot fail.
            hash.update(serde_json::to_vec(&source.source).unwrap_or_default());
            hash.update([0]);
        }
        hex::encode(&hash.finalize()[..16])
    }

    /// The merged view: the first source to define a key wins, and a list is replaced
    /// whole by the first source that defines any of it.
    pub fn merged(&self) -> Flat {
        let mut merged = Flat::new();
        let mut defined: HashSet<String> = HashSet::new();
        let mut lists: HashSet<String> = HashSet::new();
        for source in &self.property_sources {
            let mut new_lists = HashSet::new();
            for (key, value) in &source.source {
                if defined.contains(key) {
                    continue;
                }
                let roots = list_roots(key);
                if roots
                    .iter()
                    .any(|root| lists.contains(*root) || defined.contains(*root))
                {
                    continue;
                }
                new_lists.extend(roots.into_iter().map(str::to_owned));
                defined.insert(key.clone());
                merged.push((key.clone(), value.clone()));
            }
            lists.extend(new_lists);
        }
        merged
    }
}

/// The keys of the lists `key` is inside: `a.b[0].c[1]` → `a.b`, `a.b[0].c`.
fn list_roots(key: &str) -> Vec<&str> {
    key.match_indices('[').map(|(i, _)| &key[..i]).collect()
}

/// Replaces `${key}` and `${key:default}` in string values with merged values, as Spring's
/// `resolvePlaceholders` does; unresolvable placeholders stay as written.
pub fn resolve_placeholders(flat: &mut Flat) {
    let lookup: std::collections::HashMap<String, Value> = flat.iter().cloned().collect();
    for (_, value) in flat.iter_mut() {
        if let Value::String(text) = value
            && text.contains("${")
        {
            *text = substitute(text, &lookup, 0);
        }
    }
}

fn substitute(
    text: &str,
    lookup: &std::collections::HashMap<String, Value>,
    depth: usize,
) -> String {
    if depth > 8 {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        let (key, default) = match inner.split_once(':') {
            Some((k, d)) => (k, Some(d)),
            None => (inner, None),
        };
        match (lookup.get(key), default) {
            (Some(Value::String(s)), _) => out.push_str(&substitute(s, lookup, depth + 1)),
            (Some(Value::Null), _) | (None, None) => out.push_str(&rest[start..start + len + 1]),
            (Some(other), _) => out.push_str(&other.to_string()),
            (None, Some(default)) => out.push_str(default),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(sources: Vec<Value>) -> Environment {
        Environment {
            name: "orders".into(),
            profiles: vec![],
            label: None,
            version: None,
            state: None,
            property_sources: sources
                .into_iter()
                .enumerate()
                .map(|(i, s)| PropertySource {
                    name: format!("s{i}"),
                    source: s.as_object().unwrap().clone(),
                })
                .collect(),
        }
    }

    #[test]
    fn order_is_profile_then_app_then_shared() {
        let profiles = ["dev".to_owned(), "eu".to_owned()];
        assert_eq!(
            base_names("orders", &profiles),
            [
                "orders-eu",
                "application-eu",
                "orders-dev",
                "application-dev",
                "orders",
                "application"
            ]
        );
        assert_eq!(base_names("application", &[]), ["application"]);
    }

    #[test]
    fn merged_first_wins_and_lists_are_replaced_whole() {
        let e = env(vec![
            json!({"a": 1, "list[0]": "x"}),
            json!({"a": 2, "b": 3, "list[0]": "y", "list[1]": "z", "other[0]": 9}),
        ]);
        let merged: Vec<_> = e.merged();
        assert_eq!(
            merged,
            [
                ("a".into(), json!(1)),
                ("list[0]".into(), json!("x")),
                ("b".into(), json!(3)),
                ("other[0]".into(), json!(9)),
            ]
        );
    }

    #[test]
    fn placeholders_resolve_with_defaults() {
        let mut flat: Flat = vec![
            ("host".into(), json!("db.local")),
            (
                "url".into(),
                json!("jdbc://${host}:${port:5432}/${missing}"),
            ),
        ];
        resolve_placeholders(&mut flat);
        assert_eq!(flat[1].1, json!("jdbc://db.local:5432/${missing}"));
    }
}
