//! YAML to JSON values, remembering the line each value starts on, so that errors found
//! later (by serde or by validation) can name the file, line and key.
//!
//! Plain scalars are read by YAML 1.2's core schema (`yes` stays a string), anchors and
//! aliases are resolved, a duplicate key is an error, block nesting is bounded
//! ([`MAX_INDENT`]) so that hostile input cannot exhaust the parser's stack, and so is the
//! number of values a document holds once its aliases are expanded ([`MAX_VALUES`]: a few
//! lines of nested aliases would otherwise expand to billions).
//!
//! # Examples
//!
//! ```
//! let doc = msa_core::yaml::parse("server:\n  port: 8080\n").unwrap();
//! assert_eq!(doc.value["server"]["port"], 8080);
//! assert_eq!(doc.line("server.port"), Some(2));
//! ```

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The deepest a line may be indented, in columns: it bounds block nesting, which the YAML
/// parser follows by recursion.
pub const MAX_INDENT: usize = 256;

/// The most values (scalars, lists and mappings, aliases counted as what they stand for)
/// a text may hold.
pub const MAX_VALUES: usize = 1_000_000;

/// A parsed document and the line (1-based) of each value, by path (`routes.0.uri`).
#[derive(Debug, Default, Clone)]
pub struct Document {
    /// The document's content.
    pub value: Value,
    lines: HashMap<String, usize>,
}

impl Document {
    /// The line of the value at `path`, or of its nearest ancestor that has one.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            path = &path[..path.rfind('.')?];
        }
    }
}

/// A syntax error: the message and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The line (1-based).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for SyntaxError {}

/// Parses a single-document `text` (an empty text is `null`).
pub fn parse(text: &str) -> Result<Document, SyntaxError> {
    let mut documents = parse_documents(text)?;
    if documents.len() > 1 {
        return Err(SyntaxError {
            line: documents[1].lines.get("").copied().unwrap_or(1),
            message: "expected one document, found several (`---`)".into(),
        });
    }
    Ok(documents.pop().unwrap_or_default())
}

/// Parses every document of `text` (separated by `---`), in order.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    for (number, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if indent > MAX_INDENT {
            return Err(SyntaxError {
                line: number + 1,
                message: format!("indented more than {MAX_INDENT} columns: nested too deep"),
            });
        }
    }
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, true).map_err(|e| SyntaxError {
        line: e.marker().line(),
        message: e.info().to_owned(),
    })?;
    if let Some(message) = builder.error {
        return Err(message);
    }
    Ok(builder.documents)
}

enum Frame {
    Seq(Vec<Value>, usize),
    Map(Map<String, Value>, Option<String>, usize),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// The path of each open frame's children.
    path: Vec<String>,
    documents: Vec<Document>,
    lines: HashMap<String, usize>,
    /// Anchored values, and how many values each holds.
    anchors: HashMap<usize, (Value, usize)>,
    /// Values read so far, aliases expanded; and, for each open list or mapping, the count
    /// when it started (what it holds, when it ends).
    values: usize,
    started: Vec<usize>,
    error: Option<SyntaxError>,
}

impl Builder {
    fn child_path(&self) -> Option<String> {
        match self.stack.last() {
            None => Some(String::new()),
            Some(Frame::Seq(items, _)) => Some(self.join(&items.len().to_string())),
            Some(Frame::Map(_, Some(key), _)) => Some(self.join(key)),
            Some(Frame::Map(_, None, _)) => None,
        }
    }

    fn join(&self, segment: &str) -> String {
        match self.path.last() {
            Some(parent) if !parent.is_empty() => format!("{parent}.{segment}"),
            _ => segment.to_owned(),
        }
    }

    /// Adds a finished value to its parent; `line` is where it started.
    fn push(&mut self, value: Value, anchor: usize, line: usize, holds: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, (value.clone(), holds));
        }
        match self.stack.last_mut() {
            None => self.documents.push(Document {
                value,
                lines: std::mem::take(&mut self.lines),
            }),
            Some(Frame::Seq(items, _)) => items.push(value),
            Some(Frame::Map(map, key, _)) => match key.take() {
                Some(key) => {
                    map.insert(key, value);
                }
                None => {
                    let key = match value {
                        Value::String(s) => s,
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    if map.contains_key(&key) && self.error.is_none() {
                        self.error = Some(SyntaxError {
                            line,
                            message: format!("duplicate key {key:?}"),
                        });
                    }
                    *key_slot(self.stack.last_mut()) = Some(key);
                    // A key's line is its value's: a nested mapping or list starts on
                    // the lines below it, but the key is what an error names.
                    self.remember(line);
                }
            },
        }
    }

    /// Counts `n` more values; false (and the error set) past [`MAX_VALUES`].
    fn count(&mut self, n: usize, line: usize) -> bool {
        self.values = self.values.saturating_add(n);
        if self.values <= MAX_VALUES {
            return true;
        }
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                line,
                message: format!(
                    "more than {MAX_VALUES} values once its aliases are expanded: refused"
                ),
            });
        }
        false
    }

    fn remember(&mut self, line: usize) {
        if let Some(path) = self.child_path() {
            self.lines.entry(path).or_insert(line);
        }
    }
}

fn key_slot(frame: Option<&mut Frame>) -> &mut Option<String> {
    match frame {
        Some(Frame::Map(_, key, _)) => key,
        _ => unreachable!("a key is only read inside a mapping"),
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line();
        match event {
            Event::Scalar(text, style, anchor, _) => {
                let is_key = matches!(self.stack.last(), Some(Frame::Map(_, None, _)));
                if !is_key {
                    self.remember(line);
                }
                let value = if is_key || style != TScalarStyle::Plain {
                    Value::String(text)
                } else {
                    plain(text)
                };
                self.count(1, line);
                self.push(value, anchor, line, 1);
            }
            Event::Alias(anchor) => {
                self.remember(line);
                let holds = self.anchors.get(&anchor).map_or(1, |(_, holds)| *holds);
                let value = match self.count(holds, line) {
                    true => self.anchors.get(&anchor).map(|(value, _)| value.clone()),
                    false => None,
                };
                let value = value.unwrap_or(Value::Null);
                self.push(value, 0, line, holds);
            }
            Event::SequenceStart(anchor, _) => {
                self.remember(line);
                self.count(1, line);
                self.started.push(self.values);
                let path = self.child_path().unwrap_or_default();
                self.path.push(path);
                self.stack.push(Frame::Seq(Vec::new(), anchor));
            }
            Event::MappingStart(anchor, _) => {
                self.remember(line);
                self.count(1, line);
                self.started.push(self.values);
                let path = self.child_path().unwrap_or_default();
                self.path.push(path);
                self.stack.push(Frame::Map(Map::new(), None, anchor));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.path.pop();
                let holds = 1 + self.values - self.started.pop().unwrap_or(self.values);
                match self.stack.pop() {
                    Some(Frame::Seq(items, anchor)) => {
                        self.push(Value::Array(items), anchor, line, holds)
                    }
                    Some(Frame::Map(map, _, anchor)) => {
                        self.push(Value::Object(map), anchor, line, holds)
                    }
                    None => {}
                }
            }
            Event::DocumentStart => {
                self.anchors.clear();
                self.lines.clear();
                self.lines.insert(String::new(), line);
            }
            _ => {}
        }
    }
}

/// A plain scalar read by YAML 1.2's core schema.
fn plain(text: String) -> Value {
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::Number(n.into());
    }
    if text.contains(['.', 'e', 'E'])
        && text
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.')
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_their_lines() {
        let doc = parse(
            "server:\n  bind: 127.0.0.1:8080\nroutes:\n  - id: a\n    uri: http://x\n    order: 2\n    predicates:\n      - Path=/a/**\n",
        )
        .unwrap();
        assert_eq!(doc.value["routes"][0]["order"], 2);
        assert_eq!(doc.value["server"]["bind"], "127.0.0.1:8080");
        assert_eq!(doc.line("server.bind"), Some(2));
        assert_eq!(doc.line("routes.0.uri"), Some(5));
        assert_eq!(doc.line("routes.0.predicates.0"), Some(8));
        assert_eq!(doc.line("routes.0.predicates.0.nope"), Some(8));
        // A key whose value is nested is on its own line, not its first child's.
        assert_eq!(doc.line("server"), Some(1));
        assert_eq!(doc.line("routes.0.predicates"), Some(7));
    }

    #[test]
    fn aliases_are_expanded_within_a_bound() {
        let doc = parse("base: &b { a: 1, b: [x, y] }\ncopy: *b\n").unwrap();
        assert_eq!(doc.value["copy"]["b"][1], "y");
        // Nine levels of ten aliases each: a billion values from ten lines.
        let mut laughs =
            String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for n in 1..10 {
            let p = n - 1;
            laughs.push_str(&format!(
                "l{n}: &l{n} [*l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}, *l{p}]\n"
            ));
        }
        let error = parse(&laughs).unwrap_err();
        assert!(error.message.contains("aliases are expanded"), "{error}");
        assert_eq!(error.line, 6, "{error}");
    }

    #[test]
    fn quoted_scalars_stay_strings_and_flow_maps_work() {
        let doc = parse("a: '1'\nb: 1.5\nc: { name: x, args: { n: 3 } }\nd: yes\n").unwrap();
        assert_eq!(doc.value["a"], "1");
        assert_eq!(doc.value["b"], 1.5);
        assert_eq!(doc.value["c"]["args"]["n"], 3);
        assert_eq!(doc.value["d"], "yes");
    }

    #[test]
    fn syntax_errors_and_duplicate_keys_have_lines() {
        let error = parse("a: 1\nb: [1, 2\n").unwrap_err();
        assert!(error.line >= 2, "{error:?}");
        let error = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.message.contains("duplicate key \"a\""));
    }

    #[test]
    fn documents_keep_their_own_lines() {
        let docs = parse_documents("a: 1\n---\nb:\n  c: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value["a"], 1);
        assert_eq!(docs[1].line("b.c"), Some(4));
        assert_eq!(docs[1].line("a"), None);
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
        assert_eq!(parse("").unwrap().value, Value::Null);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep: String = (0..300)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let error = parse(&deep).unwrap_err();
        assert!(error.message.contains("nested too deep"), "{error}");
    }
}
