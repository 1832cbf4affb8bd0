//! Config file formats: parsing into flattened property sources, and rendering the merged
//! view back out.

use std::fmt;

use serde_json::{Map, Value};
use yaml_rust2::{Yaml, YamlEmitter};

/// A file format the repository reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Java `.properties`.
    Properties,
    /// YAML (`.yml`, `.yaml`).
    Yaml,
    /// JSON.
    Json,
    /// TOML.
    Toml,
}

/// The extensions read, in the order sources of one base name are listed (Spring's order:
/// properties first).
pub const EXTENSIONS: [(&str, Format); 5] = [
    ("properties", Format::Properties),
    ("yml", Format::Yaml),
    ("yaml", Format::Yaml),
    ("json", Format::Json),
    ("toml", Format::Toml),
];

/// A flattened property source: `key.path[0]` → scalar, in file order.
pub use super::environment::Flat;

/// A file that does not parse: where and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The file, relative to the repository.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses the bytes of `file` (which must be UTF-8) and flattens them.
pub fn parse_bytes(file: &str, format: Format, bytes: &[u8]) -> Result<Flat, ParseError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse(file, format, text),
        Err(e) => Err(ParseError {
            file: file.to_owned(),
            line: Some(
                bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1,
            ),
            column: None,
            message: "not UTF-8".into(),
        }),
    }
}

/// The deepest a YAML line may be indented, in columns: it bounds block nesting, which
/// the YAML parser follows by recursion (msa_core's YAML reader's bound).
pub const MAX_YAML_INDENT: usize = msa_core::yaml::MAX_INDENT;
/// The largest list index a key may name when nested output (`.yml`, `.json`) is rebuilt
/// from flattened keys; `a[99999999]` stays a plain name instead of a list that long.
pub const MAX_LIST_INDEX: usize = 10_000;
/// The most steps (`a.b[0]` has three) a key may have to appear in nested output.
pub const MAX_KEY_STEPS: usize = 128;

/// Parses `text` (the contents of `file`) and flattens it.
pub fn parse(file: &str, format: Format, text: &str) -> Result<Flat, ParseError> {
    let error = |line, column, message: String| ParseError {
        file: file.to_owned(),
        line,
        column,
        message,
    };
    let mut flat = Flat::new();
    match format {
        Format::Yaml => {
            // msa's one YAML reader (lines in errors, nesting and alias expansion bounded,
            // a duplicate key refused as Spring's SnakeYAML refuses it).
            let docs = msa_core::yaml::parse_documents(text)
                .map_err(|e| error(Some(e.line), None, e.message))?;
            for doc in docs {
                flatten("", &doc.value, &mut flat);
            }
        }
        Format::Json => {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| error(Some(e.line()), Some(e.column()), e.to_string()))?;
            if !value.is_object() {
                return Err(error(
                    Some(1),
                    Some(1),
                    "the top level must be an object".into(),
                ));
            }
            flatten("", &value, &mut flat);
        }
        Format::Toml => {
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                let (line, column) = e
                    .span()
                    .map(|span| line_col(text, span.start))
                    .map_or((None, None), |(l, c)| (Some(l), Some(c)));
                error(line, column, e.message().to_owned())
            })?;
            let value =
                serde_json::to_value(table).map_err(|e| error(None, None, e.to_string()))?;
            flatten("", &value, &mut flat);
        }
        Format::Properties => {
            java_properties::PropertiesIter::new(text.as_bytes())
                .read_into(|key, value| flat.push((key, Value::String(value))))
                .map_err(|e| error(e.line_number(), None, e.to_string()))?;
        }
    }
    Ok(flat)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Flattens nested maps to dotted keys and lists to `key[0]`; an empty map or list becomes
/// an empty string, as Spring does.
pub fn flatten(prefix: &str, value: &Value, out: &mut Flat) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, value) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&path, value, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (index, value) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{index}]"), value, out);
            }
        }
        Value::Object(_) | Value::Array(_) => {
            out.push((prefix.to_owned(), Value::String(String::new())))
        }
        scalar => out.push((prefix.to_owned(), scalar.clone())),
    }
}

/// One step of a flattened key.
enum Step<'a> {
    Name(&'a str),
    Index(usize),
}

fn steps(key: &str) -> Vec<Step<'_>> {
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            steps.push(Step::Name(name));
        }
        while let Some(end) = rest.find(']') {
            match rest.get(1..end).unwrap_or_default().parse() {
                Ok(index) if index <= MAX_LIST_INDEX => steps.push(Step::Index(index)),
                _ => steps.push(Step::Name(&rest[..=end])),
            }
            rest = &rest[end + 1..];
        }
    }
    steps
}

/// Rebuilds nested JSON from flattened keys. A key that collides with another's structure
/// (`a` a scalar and `a.b` a key) keeps the first one seen.
pub fn unflatten(flat: &[(String, Value)]) -> Value {
    let mut root = Value::Object(Map::new());
    for (key, value) in flat {
        let steps = steps(key);
        if steps.len() > MAX_KEY_STEPS {
            tracing::warn!(%key, "a key deeper than {MAX_KEY_STEPS} steps is left out of nested output");
            continue;
        }
        insert(&mut root, &steps, value.clone());
    }
    root
}

fn insert(node: &mut Value, steps: &[Step<'_>], value: Value) {
    let Some((first, rest)) = steps.split_first() else {
        return;
    };
    let child = match first {
        Step::Name(name) => {
            let Value::Object(map) = node else { return };
            let fresh = if rest.is_empty() {
                value.clone()
            } else {
                empty_for(&rest[0])
            };
            map.entry(name.to_string()).or_insert(fresh)
        }
        Step::Index(index) => {
            let Value::Array(items) = node else { return };
            while items.len() <= *index {
                items.push(Value::Null);
            }
            if items[*index].is_null() {
                items[*index] = if rest.is_empty() {
                    value.clone()
                } else {
                    empty_for(&rest[0])
                };
            }
            &mut items[*index]
        }
    };
    if !rest.is_empty() {
        insert(child, rest, value);
    }
}

fn empty_for(step: &Step<'_>) -> Value {
    match step {
        Step::Name(_) => Value::Object(Map::new()),
        Step::Index(_) => Value::Array(Vec::new()),
    }
}

/// The merged view as YAML.
pub fn to_yaml(flat: &[(String, Value)]) -> String {
    let mut out = String::new();
    let yaml = json_to_yaml(&unflatten(flat));
    // Writing to a String cannot fail.
    let _ = YamlEmitter::new(&mut out).dump(&yaml);
    // Drop the document marker Spring does not print.
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    format!("{body}\n")
}

fn json_to_yaml(value: &Value) -> Yaml {
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(json_to_yaml).collect()),
        Value::Object(map) => Yaml::Hash(
            map.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), json_to_yaml(v)))
                .collect(),
        ),
    }
}

/// The merged view as Java properties, `key: value` per line as Spring prints it.
pub fn to_properties(flat: &[(String, Value)]) -> String {
    let mut out = String::new();
    for (key, value) in flat {
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        out.push_str(key);
        out.push_str(": ");
        for c in text.chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(flat: &Flat) -> Vec<(&str, &Value)> {
        flat.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }

    #[test]
    fn every_format_flattens_alike() {
        let yaml = "server:\n  port: 8081\norders:\n  limits: [5, 7]\n  name: shop\n";
        let props = "server.port=8081\norders.limits[0]=5\n";
        let json = r#"{"server": {"port": 8081}, "orders": {"limits": [5, 7]}}"#;
        let toml = "[server]\nport = 8081\n[orders]\nlimits = [5, 7]\n";
        let y = parse("a.yml", Format::Yaml, yaml).unwrap();
        assert_eq!(
            keys(&y),
            [
                ("server.port", &json!(8081)),
                ("orders.limits[0]", &json!(5)),
                ("orders.limits[1]", &json!(7)),
                ("orders.name", &json!("shop"))
            ]
        );
        assert_eq!(parse("a.json", Format::Json, json).unwrap()[..3], y[..3]);
        assert_eq!(parse("a.toml", Format::Toml, toml).unwrap()[..3], y[..3]);
        let p = parse("a.properties", Format::Properties, props).unwrap();
        assert_eq!(
            keys(&p),
            [
                ("server.port", &json!("8081")),
                ("orders.limits[0]", &json!("5"))
            ]
        );
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = parse("orders.yml", Format::Yaml, "a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert_eq!(e.file, "orders.yml");
        assert!(e.line.is_some(), "{e}");
        assert!(e.to_string().starts_with("orders.yml:"), "{e}");
        let e = parse("x.json", Format::Json, "{\n  \"a\": 1,\n  oops\n}").unwrap_err();
        assert_eq!((e.line, e.column), (Some(3), Some(3)), "{e}");
        let e = parse("x.toml", Format::Toml, "a = 1\nb = = 2\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn unflatten_inverts_flatten() {
        let value = json!({"a": {"b": [1, {"c": "x"}], "d": true}, "e": "f"});
        let mut flat = Flat::new();
        flatten("", &value, &mut flat);
        assert_eq!(unflatten(&flat), value);
        assert_eq!(
            to_properties(&flat),
            "a.b[0]: 1\na.b[1].c: x\na.d: true\ne: f\n"
        );
        let yaml = to_yaml(&flat);
        assert_eq!(parse("r.yml", Format::Yaml, &yaml).unwrap(), flat, "{yaml}");
    }

    mod fuzz {
        //! Hostile files: any text in any format, keys built to reach the limits. Longer
        //! runs: `PROPTEST_CASES=100000 cargo test -p msa-config --lib fuzz`.

        use proptest::prelude::*;

        use super::super::*;

        /// Keys made of names, dots and brackets, valid or not, up to the step limit and
        /// past it, with indexes up to the list limit and past it.
        fn key() -> impl Strategy<Value = String> {
            let part = prop_oneof![
                "[a-z]{1,3}",
                Just(".".to_owned()),
                Just("[".to_owned()),
                Just("]".to_owned()),
                (0usize..20).prop_map(|i| format!("[{i}]")),
                (0usize..=2 * MAX_LIST_INDEX).prop_map(|i| format!("[{i}]")),
                Just("[99999999999999999999]".to_owned()),
            ];
            prop_oneof![
                proptest::collection::vec(part.clone(), 0..12).prop_map(|p| p.concat()),
                (MAX_KEY_STEPS - 2..MAX_KEY_STEPS + 40).prop_map(|n| vec!["a"; n].join(".")),
            ]
        }

        proptest! {
            #[test]
            fn any_text_in_any_format_parses_or_is_an_error(text in "\\PC{0,400}") {
                for format in [Format::Yaml, Format::Json, Format::Toml, Format::Properties] {
                    let _ = parse("fuzz", format, &text);
                }
            }

            #[test]
            fn nesting_past_the_limits_is_an_error_not_a_crash(depth in 1usize..2_000, flow in 0usize..600) {
                let mut yaml = String::new();
                for level in 0..depth {
                    yaml.push_str(&" ".repeat(level));
                    yaml.push_str("a:\n");
                }
                yaml.push_str(&" ".repeat(depth));
                yaml.push_str(&"[".repeat(flow));
                yaml.push_str(&"]".repeat(flow));
                yaml.push('\n');
                let parsed = parse("deep.yml", Format::Yaml, &yaml);
                if depth > MAX_YAML_INDENT {
                    prop_assert!(parsed.is_err());
                }
                let json = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
                let _ = parse("deep.json", Format::Json, &format!("{{\"a\": {json}}}"));
                let _ = parse("deep.toml", Format::Toml, &format!("a = {json}"));
            }

            #[test]
            fn rebuilding_nested_output_stays_within_the_limits(
                keys in proptest::collection::vec(key(), 0..24),
            ) {
                let flat: Flat = keys
                    .into_iter()
                    .map(|k| (k, serde_json::Value::from(1)))
                    .collect();
                let nested = unflatten(&flat);
                // No list longer than the index limit allows, however large the index.
                fn longest(value: &serde_json::Value) -> usize {
                    match value {
                        serde_json::Value::Array(items) => {
                            items.iter().map(longest).max().unwrap_or(0).max(items.len())
                        }
                        serde_json::Value::Object(map) => map.values().map(longest).max().unwrap_or(0),
                        _ => 0,
                    }
                }
                prop_assert!(longest(&nested) <= MAX_LIST_INDEX + 1);
                let _ = to_yaml(&flat);
                let _ = to_properties(&flat);
            }
        }
    }
}
