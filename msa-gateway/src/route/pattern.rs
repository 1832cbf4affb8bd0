//! Spring's path and host patterns: `/api/{id}/**`, `/files/{*path}`, `*.json`,
//! `{sub}.example.org`, `**.example.org`.

use regex::Regex;

/// One segment of a pattern.
#[derive(Debug, Clone)]
enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `{name}`: any one segment, captured.
    Variable(String),
    /// `*`: any one segment.
    Any,
    /// A segment mixing text, `*`, `?` and `{name}` (`{id}.json`, `v?`).
    Mixed(Regex, Vec<String>),
    /// `**` (zero or more segments) or `{*name}` (the rest, captured with its leading
    /// separator). Only last.
    Rest(Option<String>),
}

/// A compiled pattern over segments split by `separator` (`/` for paths, `.` for hosts).
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    separator: char,
    segments: Vec<Segment>,
    /// `**` at the start of a host pattern (`**.example.org`): any number of labels first.
    leading_rest: bool,
}

impl Pattern {
    /// A path pattern; it must start with `/`.
    pub(crate) fn path(source: &str) -> Result<Self, String> {
        if !source.starts_with('/') {
            return Err(format!("path pattern {source:?} must start with /"));
        }
        Self::compile(source, '/')
    }

    /// A host pattern (case-insensitive).
    pub(crate) fn host(source: &str) -> Result<Self, String> {
        Self::compile(&source.to_ascii_lowercase(), '.')
    }

    fn compile(source: &str, separator: char) -> Result<Self, String> {
        let trimmed = source.trim_start_matches(separator);
        let parts: Vec<&str> = if trimmed.is_empty() {
            Vec::new()
        } else {
            trimmed.split(separator).collect()
        };
        let mut segments = Vec::with_capacity(parts.len());
        let mut leading_rest = false;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let segment = if *part == "**" {
                if separator == '.' && i == 0 && !last {
                    leading_rest = true;
                    continue;
                }
                if !last {
                    return Err(format!("in {source:?}, ** may only end the pattern"));
                }
                Segment::Rest(None)
            } else if let Some(name) = part.strip_prefix("{*").and_then(|p| p.strip_suffix('}')) {
                if !last {
                    return Err(format!(
                        "in {source:?}, {{*{name}}} may only end the pattern"
                    ));
                }
                Segment::Rest(Some(name.to_owned()))
            } else if *part == "*" {
                Segment::Any
            } else if let Some(name) = part
                .strip_prefix('{')
                .and_then(|p| p.strip_suffix('}'))
                .filter(|n| !n.contains(['{', '}', ':']))
            {
                Segment::Variable(name.to_owned())
            } else if part.contains(['*', '?', '{']) {
                mixed(part).map_err(|e| format!("in {source:?}: {e}"))?
            } else {
                Segment::Literal((*part).to_owned())
            };
            segments.push(segment);
        }
        Ok(Pattern {
            separator,
            segments,
            leading_rest,
        })
    }

    /// The literal segments the pattern starts with (for the route index).
    pub(crate) fn literal_prefix(&self) -> Vec<&str> {
        if self.leading_rest {
            return Vec::new();
        }
        self.segments
            .iter()
            .map_while(|s| match s {
                Segment::Literal(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether `text` matches; captured variables are pushed to `vars`.
    pub(crate) fn matches(&self, text: &str, vars: &mut Vec<(String, String)>) -> bool {
        let start = vars.len();
        let ok = self.match_inner(text, vars);
        if !ok {
            vars.truncate(start);
        }
        ok
    }

    fn match_inner(&self, text: &str, vars: &mut Vec<(String, String)>) -> bool {
        let sep = self.separator;
        let body = text.strip_prefix(sep).unwrap_or(text);
        // An empty text has no segments (not one empty one).
        let parts = (!body.is_empty())
            .then(|| body.split(sep))
            .into_iter()
            .flatten();
        if self.leading_rest {
            // `**.example.org`: the last labels match, any (at least one) before them.
            let parts: Vec<&str> = parts.collect();
            let n = self.segments.len();
            if parts.len() <= n {
                return false;
            }
            return self.match_segments(parts[parts.len() - n..].iter().copied(), "", vars);
        }
        // Lazily split: matching a path allocates nothing unless it captures.
        self.match_segments(parts, body, vars)
    }

    fn match_segments<'a>(
        &self,
        mut parts: impl Iterator<Item = &'a str>,
        body: &str,
        vars: &mut Vec<(String, String)>,
    ) -> bool {
        let sep = self.separator;
        let mut offset = 0; // byte offset of the next part in body, for {*rest}
        for segment in &self.segments {
            if let Segment::Rest(name) = segment {
                if let Some(name) = name {
                    // Past the last part, the offset is beyond the body: the rest is empty.
                    let rest = body.get(offset..).unwrap_or("");
                    vars.push((name.clone(), decode(&format!("{sep}{rest}"))));
                }
                return true;
            }
            let Some(part) = parts.next() else {
                return false;
            };
            match segment {
                Segment::Literal(text) => {
                    let equal = if sep == '.' {
                        text.eq_ignore_ascii_case(part)
                    } else {
                        text == part
                    };
                    if !equal {
                        return false;
                    }
                }
                Segment::Variable(name) => {
                    if part.is_empty() {
                        return false;
                    }
                    vars.push((name.clone(), decode(part)));
                }
                Segment::Any => {
                    if part.is_empty() {
                        return false;
                    }
                }
                Segment::Mixed(regex, names) => {
                    let Some(captures) = regex.captures(part) else {
                        return false;
                    };
                    for (n, name) in names.iter().enumerate() {
                        let value = captures.get(n + 1).map_or("", |m| m.as_str());
                        vars.push((name.clone(), decode(value)));
                    }
                }
                // Handled before taking a part.
                Segment::Rest(_) => return true,
            }
            offset += part.len() + 1;
        }
        // Every segment matched: the text must not go on (a trailing separator is not
        // a match unless the pattern has one).
        parts.next().is_none()
    }
}

fn mixed(part: &str) -> Result<Segment, String> {
    let mut regex = String::from("^");
    let mut names = Vec::new();
    let mut chars = part.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => regex.push_str(".*"),
            '?' => regex.push('.'),
            '{' => {
                let mut name = String::new();
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                    name.push(c);
                }
                let (name, constraint) = match name.split_once(':') {
                    Some((name, constraint)) => (name.to_owned(), constraint.to_owned()),
                    None => (name, ".+?".to_owned()),
                };
                if name.is_empty() {
                    return Err("an empty {} variable".into());
                }
                regex.push('(');
                regex.push_str(&constraint);
                regex.push(')');
                names.push(name);
            }
            other => regex.push_str(&regex::escape(&other.to_string())),
        }
    }
    regex.push('$');
    let regex = Regex::new(&regex).map_err(|e| format!("bad segment {part:?}: {e}"))?;
    Ok(Segment::Mixed(regex, names))
}

/// Percent-decodes a capture (invalid sequences stay as they are). A capture written into a
/// path is encoded again (see `filter::substitute_path`).
fn decode(text: &str) -> String {
    if !text.contains('%') {
        return text.to_owned();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(pattern: &str, text: &str) -> Option<Vec<(String, String)>> {
        let mut vars = Vec::new();
        Pattern::path(pattern)
            .unwrap()
            .matches(text, &mut vars)
            .then_some(vars)
    }

    #[test]
    fn path_patterns_as_spring_reads_them() {
        assert!(path("/api/orders/**", "/api/orders").is_some());
        assert!(path("/api/orders/**", "/api/orders/7/items").is_some());
        assert!(path("/api/orders/**", "/api/ordersX").is_none());
        assert!(path("/api/orders", "/api/orders/").is_none());
        assert_eq!(
            path("/api/{id}", "/api/7").unwrap(),
            [("id".into(), "7".into())]
        );
        assert!(path("/api/{id}", "/api/").is_none());
        assert!(path("/api/{id}", "/api/7/x").is_none());
        assert_eq!(
            path("/files/{*rest}", "/files/a/b").unwrap(),
            [("rest".into(), "/a/b".into())]
        );
        assert_eq!(
            path("/files/{*rest}", "/files").unwrap(),
            [("rest".into(), "/".into())]
        );
        assert_eq!(
            path("/r/{name}.json", "/r/a%20b.json").unwrap(),
            [("name".into(), "a b".into())]
        );
        assert!(path("/r/*.json", "/r/x.json").is_some());
        assert!(path("/v?/x", "/v2/x").is_some());
        assert!(path("/*/x", "/a/x").is_some());
        assert!(path("/", "/").is_some());
        assert!(path("/**", "/").is_some());
        assert!(path("/**", "/a/b").is_some());
        assert_eq!(
            path("/files/{*rest}", "/files/").unwrap(),
            [("rest".into(), "/".into())]
        );
        assert!(path("/a/b", "/a").is_none());
        assert!(Pattern::path("/a/**/b").is_err());
        assert!(Pattern::path("a").is_err());
    }

    #[test]
    fn host_patterns() {
        let host = |p: &str, h: &str| {
            let mut vars = Vec::new();
            Pattern::host(p)
                .unwrap()
                .matches(h, &mut vars)
                .then_some(vars)
        };
        assert!(host("**.example.org", "a.b.example.org").is_some());
        assert!(host("**.example.org", "example.org").is_none());
        assert_eq!(
            host("{sub}.example.org", "Shop.Example.org").unwrap(),
            [("sub".into(), "Shop".into())]
        );
        assert!(host("api.example.org", "API.example.org").is_some());
        assert!(host("api.example.org", "x.api.example.org").is_none());
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(
            Pattern::path("/api/orders/**").unwrap().literal_prefix(),
            ["api", "orders"]
        );
        assert_eq!(
            Pattern::path("/api/{id}/x").unwrap().literal_prefix(),
            ["api"]
        );
        assert!(Pattern::path("/**").unwrap().literal_prefix().is_empty());
    }

    proptest::proptest! {
        /// Hostile patterns and paths: any pattern compiles or is an error, and matching
        /// any path against it ends without a panic; captures are parts of the path.
        /// Longer runs: `PROPTEST_CASES=100000 cargo test -p msa-gateway --lib hostile`.
        #[test]
        fn hostile_patterns_and_paths_match_or_not(
            pattern in "(/(\\{[a-z*]{0,3}\\}|\\*\\*|\\*|[a-z.%{}]{0,4})){0,6}",
            path in "(/([a-z.%2Fe]{0,5}|\\.\\.)){0,8}",
            long in 0usize..5_000,
        ) {
            if let Ok(compiled) = Pattern::path(&pattern) {
                let mut vars = Vec::new();
                let _ = compiled.matches(&path, &mut vars);
                let deep = "/a".repeat(long);
                vars.clear();
                let _ = compiled.matches(&deep, &mut vars);
            }
            let _ = Pattern::host(&pattern);
        }
    }
}
