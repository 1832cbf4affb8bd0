use serde_json::Value;

/// A predicate or filter as written: a name and its arguments.
///
/// Both of Spring Cloud Gateway's forms read to this: the shortcut `Name=a, b` (the
/// arguments are positional, matched to names by each factory's order) and the full
/// `{name: Name, args: {key: value}}` (named).
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// The predicate's or filter's name (`Path`, `StripPrefix`).
    pub name: String,
    /// Its arguments.
    pub args: Args,
}

/// A definition's arguments, positional (shortcut form) or named (full form).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args {
    positional: Vec<String>,
    named: serde_json::Map<String, Value>,
}

impl Definition {
    /// Reads either form; `Err` says what is wrong with it.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Self::shortcut(text),
            Value::Object(map) => {
                let name = match map.get("name") {
                    Some(Value::String(name)) if !name.trim().is_empty() => name.trim(),
                    Some(_) => return Err("`name` must be a non-empty string".into()),
                    None => {
                        return Err(
                            "expected `Name=args` or `{name: Name, args: {...}}`; `name` is missing"
                                .into(),
                        );
                    }
                };
                if let Some(unknown) = map.keys().find(|k| *k != "name" && *k != "args") {
                    return Err(format!(
                        "unknown key `{unknown}` (a definition has `name` and `args`)"
                    ));
                }
                let named = match map.get("args") {
                    None | Some(Value::Null) => serde_json::Map::new(),
                    Some(Value::Object(args)) => args.clone(),
                    Some(_) => return Err("`args` must be a mapping".into()),
                };
                Ok(Definition {
                    name: name.to_owned(),
                    args: Args {
                        positional: Vec::new(),
                        named,
                    },
                })
            }
            _ => Err("expected `Name=args` or `{name: Name, args: {...}}`".into()),
        }
    }

    /// `Name=a, b`, or `Name` alone.
    pub fn shortcut(text: &str) -> Result<Self, String> {
        let (name, rest) = match text.split_once('=') {
            Some((name, rest)) => (name.trim(), Some(rest)),
            None => (text.trim(), None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "{text:?} is not `Name=args` (a name is letters and digits)"
            ));
        }
        let positional = rest
            .map(|rest| rest.split(',').map(|arg| arg.trim().to_owned()).collect())
            .unwrap_or_default();
        Ok(Definition {
            name: name.to_owned(),
            args: Args {
                positional,
                named: serde_json::Map::new(),
            },
        })
    }
}

pub use msa_core::secrets::{MASK, mask_url};

/// Filters whose positional arguments are secrets (`ApiKey=key-1, key-2`).
const SECRET_POSITIONAL: &[&str] = &["ApiKey", "JwtAuth"];

impl Definition {
    /// This definition with its secrets shown as [`MASK`]: every positional argument of
    /// `ApiKey` and `JwtAuth`; named arguments called `keys`, `key` or holding `secret`,
    /// `password`, `token` or `credential` in their names; the password of any URL.
    pub fn masked(&self) -> Definition {
        let secret_positional = SECRET_POSITIONAL.contains(&self.name.as_str());
        let positional = self
            .args
            .positional
            .iter()
            .map(|value| match secret_positional {
                true => MASK.to_owned(),
                false => mask_url(value),
            })
            .collect();
        let named = self
            .args
            .named
            .iter()
            .map(|(name, value)| (name.clone(), mask_named(name, value)))
            .collect();
        Definition {
            name: self.name.clone(),
            args: Args { positional, named },
        }
    }
}

/// Whether an argument called `name` holds a secret.
fn secret_name(name: &str) -> bool {
    msa_core::secrets::is_secret_name(name)
}

/// Named values (a route's metadata) with their secrets masked, as [`Definition::masked`]
/// masks arguments.
pub(crate) fn masked_map(map: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    map.iter()
        .map(|(name, value)| (name.clone(), mask_named(name, value)))
        .collect()
}

fn mask_named(name: &str, value: &Value) -> Value {
    match value {
        _ if secret_name(name) => Value::String(MASK.to_owned()),
        Value::String(text) => Value::String(mask_url(text)),
        Value::Array(items) => Value::Array(items.iter().map(|v| mask_named("", v)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), mask_named(k, v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl std::fmt::Display for Definition {
    /// The shortcut form (`Name=a, b`), or `Name` with its named arguments.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.args.positional.is_empty() {
            write!(f, "={}", self.args.positional.join(", "))?;
        } else if !self.args.named.is_empty() {
            write!(f, " {}", Value::Object(self.args.named.clone()))?;
        }
        Ok(())
    }
}

impl Args {
    /// The same arguments with every text value passed through `f` (the discovery
    /// locator's templates).
    pub(crate) fn map_text(&self, f: impl Fn(&str) -> String) -> Args {
        Args {
            positional: self.positional.iter().map(|s| f(s)).collect(),
            named: self
                .named
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k.clone(), Value::String(f(s))),
                    other => (k.clone(), other.clone()),
                })
                .collect(),
        }
    }

    /// Named arguments, as the full form gives them.
    pub fn named(named: serde_json::Map<String, Value>) -> Self {
        Args {
            positional: Vec::new(),
            named,
        }
    }

    /// The argument called `name`, or the shortcut form's argument at `position`, as text.
    pub fn text(&self, name: &str, position: usize) -> Result<Option<String>, String> {
        if let Some(value) = self.named.get(name) {
            return match value {
                Value::String(s) => Ok(Some(s.clone())),
                Value::Number(n) => Ok(Some(n.to_string())),
                Value::Bool(b) => Ok(Some(b.to_string())),
                Value::Null => Ok(None),
                _ => Err(format!("`{name}` must be a single value")),
            };
        }
        Ok(self
            .positional
            .get(position)
            .filter(|s| !s.is_empty())
            .cloned())
    }

    /// As [`text`](Self::text), required.
    pub fn required(&self, name: &str, position: usize) -> Result<String, String> {
        self.text(name, position)?
            .ok_or_else(|| format!("`{name}` is required"))
    }

    /// A list: the named argument (a sequence, or one comma-separated string), or every
    /// positional argument from `from` on.
    pub fn list(&self, name: &str, from: usize) -> Result<Vec<String>, String> {
        match self.named.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => Err(format!("`{name}` must be a list of values")),
                })
                .collect(),
            Some(Value::String(s)) => Ok(s
                .split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()),
            Some(Value::Number(n)) => Ok(vec![n.to_string()]),
            Some(Value::Null) => Ok(Vec::new()),
            Some(_) => Err(format!("`{name}` must be a list")),
            None => Ok(self
                .positional
                .iter()
                .skip(from)
                .filter(|s| !s.is_empty())
                .cloned()
                .collect()),
        }
    }

    /// A nested mapping argument (full form only), such as Retry's `backoff`.
    pub fn map(&self, name: &str) -> Option<&serde_json::Map<String, Value>> {
        self.named.get(name).and_then(Value::as_object)
    }

    /// Whether the argument called `name` was given by name.
    pub fn has(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_forms() {
        let short = Definition::from_value(&json!("RewritePath=/red/?(?<segment>.*), /${segment}"))
            .unwrap();
        assert_eq!(short.name, "RewritePath");
        assert_eq!(
            short.args.required("regexp", 0).unwrap(),
            "/red/?(?<segment>.*)"
        );
        assert_eq!(
            short.args.required("replacement", 1).unwrap(),
            "/${segment}"
        );
        let full =
            Definition::from_value(&json!({"name": "StripPrefix", "args": {"parts": 2}})).unwrap();
        assert_eq!(full.args.required("parts", 0).unwrap(), "2");
        let list = Definition::from_value(&json!("Path=/a/**, /b/{x}")).unwrap();
        assert_eq!(list.args.list("patterns", 0).unwrap(), ["/a/**", "/b/{x}"]);
        let named_list = Definition::from_value(
            &json!({"name": "Method", "args": {"methods": ["GET", "POST"]}}),
        )
        .unwrap();
        assert_eq!(named_list.args.list("methods", 0).unwrap(), ["GET", "POST"]);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            Definition::from_value(&json!("Pa th=/x"))
                .unwrap_err()
                .contains("not `Name=args`")
        );
        assert!(
            Definition::from_value(&json!({"args": {}}))
                .unwrap_err()
                .contains("`name` is missing")
        );
        assert!(
            Definition::from_value(&json!({"name": "X", "arg": {}}))
                .unwrap_err()
                .contains("unknown key `arg`")
        );
        assert!(Definition::from_value(&json!(3)).is_err());
    }

    fn shown(definition: &str) -> String {
        Definition::shortcut(definition)
            .unwrap()
            .masked()
            .to_string()
    }

    #[test]
    fn secrets_are_masked_wherever_a_definition_is_shown() {
        assert_eq!(
            shown("ApiKey=k-partner-a, k-partner-b"),
            "ApiKey=******, ******"
        );
        assert_eq!(shown("StripPrefix=1"), "StripPrefix=1");
        let full = Definition::from_value(&serde_json::json!({
            "name": "RequestRateLimiter",
            "args": {
                "replenishRate": 10,
                "keyResolver": "header:X-User",
                "redis-url": "redis://app:hunter2@redis:6379/0",
                "hs256-secret": "0123456789abcdef0123456789abcdef",
                "nested": {"client-secret": "x", "plain": "y"}
            }
        }))
        .unwrap();
        let text = full.masked().to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("0123456789"),
            "{text}"
        );
        assert!(text.contains("redis://app:******@redis:6379/0"), "{text}");
        assert!(text.contains(r#""keyResolver":"header:X-User""#), "{text}");
        assert!(text.contains(r#""plain":"y""#), "{text}");
    }

    #[test]
    fn urls_lose_only_their_password() {
        assert_eq!(mask_url("lb://orders"), "lb://orders");
        assert_eq!(mask_url("http://up:8080/x?a=b@c"), "http://up:8080/x?a=b@c");
        assert_eq!(mask_url("https://u:p@up/x"), "https://u:******@up/x");
        assert_eq!(mask_url("https://token@up/x"), "https://******@up/x");
    }
}
