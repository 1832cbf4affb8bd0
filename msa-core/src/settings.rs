//! Settings as Spring Boot reads them: `application.yml` and `application-{profile}.yml`
//! (in the working directory and `config/`), environment variables with relaxed binding,
//! a config server's properties, and values set in code — layered, and bound to serde
//! types with errors that name the file, line and key.
//!
//! # Precedence
//!
//! Highest first, as in Spring Boot:
//!
//! 1. values set in code ([`Layer::Code`]);
//! 2. environment variables ([`Layer::Environment`]);
//! 3. properties from a config server ([`Layer::Remote`]);
//! 4. profile files, the last active profile first, `config/` before the working
//!    directory; then `application.yml` in `config/`, then in the working directory
//!    ([`Layer::File`]).
//!
//! Maps merge key by key across layers; a list comes whole from the highest layer that
//! has it, as in Spring.
//!
//! # Relaxed binding
//!
//! Key segments compare without case, dashes or underscores, so `failure-rate-threshold`,
//! `failureRateThreshold` and `failure_rate_threshold` are one key. An environment
//! variable names a key in upper case with `_` for dots: `SERVER_PORT` is `server.port`,
//! and `ORDERS_MAX_QUANTITY` and `ORDERS_MAXQUANTITY` are both `orders.max-quantity`;
//! `MY_LIST_0_NAME` is `my.list[0].name`. Binding is led by the target type, so a field
//! `max_quantity` finds the variable whichever spelling it uses.
//!
//! # Examples
//!
//! ```
//! use msa_core::settings::{Layer, Settings};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(rename_all = "kebab-case")]
//! struct Orders {
//!     max_quantity: u32,
//!     currency: String,
//! }
//!
//! let mut settings = Settings::new();
//! settings.add_yaml("application.yml", "orders:\n  maxQuantity: 5\n  currency: EUR\n").unwrap();
//! settings.add_environment([("ORDERS_MAX_QUANTITY".to_owned(), "12".to_owned())]);
//! let orders: Orders = settings.bind("orders").unwrap();
//! assert_eq!((orders.max_quantity, orders.currency.as_str()), (12, "EUR"));
//!
//! let origin = settings.origin("orders.currency").unwrap();
//! assert_eq!(origin.to_string(), "application.yml:3");
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde_json::Value;

use crate::yaml;

/// Where a layer of settings sits in the order of precedence (higher wins).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Layer {
    /// `application.yml` and profile files.
    File,
    /// A config server's properties.
    Remote,
    /// Environment variables.
    Environment,
    /// Values set in code (builder methods).
    Code,
}

/// Where a value came from, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file, and the line when known.
    File {
        /// The file as it was named.
        file: String,
        /// 1-based line.
        line: Option<usize>,
    },
    /// An environment variable.
    Environment(String),
    /// A named source: a config server's property source, or code.
    Source(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File {
                file,
                line: Some(line),
            } => write!(f, "{file}:{line}"),
            Origin::File { file, line: None } => f.write_str(file),
            Origin::Environment(name) => write!(f, "environment variable {name}"),
            Origin::Source(name) => f.write_str(name),
        }
    }
}

/// One source of [`Settings`] as `/actuator/env` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertySource {
    /// The file, `environment`, the config server's source, or `code`.
    pub name: String,
    /// Its properties, secrets masked.
    pub properties: Vec<Property>,
}

/// One property of a [`PropertySource`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// The key as written (an environment variable's name for the environment).
    pub key: String,
    /// The value, or [`MASK`](crate::secrets::MASK) for a secret.
    pub value: String,
    /// Where it was set (`application.yml:4`).
    pub origin: String,
}

/// A setting that does not read: the key, where it came from and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    /// The key (`orders.max-quantity`), or empty for the whole tree.
    pub key: String,
    /// Where the value came from, when known.
    pub origin: Option<Origin>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SettingsError {}

impl de::Error for SettingsError {
    fn custom<T: fmt::Display>(message: T) -> Self {
        SettingsError {
            key: String::new(),
            origin: None,
            message: message.to_string(),
        }
    }
}

/// One segment of a key: a name (compared relaxed) or a list index.
#[derive(Clone, Debug)]
enum Seg {
    Name(String),
    Index(usize),
}

impl Seg {
    fn matches(&self, other: &Seg) -> bool {
        match (self, other) {
            (Seg::Name(a), Seg::Name(b)) => same_name(a, b),
            (Seg::Index(a), Seg::Index(b)) => a == b,
            _ => false,
        }
    }
}

/// Whether two names are one key: compared without case, `-` or `_` (and without
/// allocating: binding compares every key it looks at).
fn same_name(a: &str, b: &str) -> bool {
    fn relaxed(name: &str) -> impl Iterator<Item = char> + '_ {
        name.chars()
            .filter(|c| *c != '-' && *c != '_')
            .map(|c| c.to_ascii_lowercase())
    }
    relaxed(a).eq(relaxed(b))
}

/// `a.b[0].c` as segments; `None` for an empty segment or a bad index.
fn parse_key(key: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => part.split_at(at),
            None => (part, ""),
        };
        if name.is_empty() && segs.is_empty() && rest.is_empty() {
            return None;
        }
        if !name.is_empty() {
            segs.push(Seg::Name(name.to_owned()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']')?;
            segs.push(Seg::Index(inner[..end].trim().parse().ok()?));
            rest = &inner[end + 1..];
        }
        if !rest.is_empty() {
            return None;
        }
    }
    Some(segs)
}

/// Segments back to `a.b[0].c`.
fn key_of(segs: &[Seg]) -> String {
    let mut key = String::new();
    for seg in segs {
        match seg {
            Seg::Name(name) => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(name);
            }
            Seg::Index(i) => {
                key.push('[');
                key.push_str(&i.to_string());
                key.push(']');
            }
        }
    }
    key
}

/// The environment variable names of a key: Spring's (`-` removed) and its legacy form
/// (`-` as `_`).
fn env_names(segs: &[Seg]) -> [String; 2] {
    let join = |dash: Option<char>| {
        let mut out = String::new();
        for (i, seg) in segs.iter().enumerate() {
            if i > 0 {
                out.push('_');
            }
            match seg {
                Seg::Name(name) => {
                    for c in name.chars() {
                        match (c, dash) {
                            ('-', Some(d)) => out.push(d),
                            ('-', None) => {}
                            ('.', _) => out.push('_'),
                            (c, _) => out.push(c.to_ascii_uppercase()),
                        }
                    }
                }
                Seg::Index(i) => out.push_str(&i.to_string()),
            }
        }
        out
    };
    [join(None), join(Some('_'))]
}

#[derive(Clone, Debug)]
struct Entry {
    key: Vec<Seg>,
    value: Value,
    line: Option<usize>,
}

#[derive(Clone, Debug)]
enum Data {
    Entries(Vec<Entry>),
    Environment(BTreeMap<String, String>),
}

#[derive(Clone, Debug)]
struct Source {
    name: String,
    layer: Layer,
    data: Data,
}

impl Source {
    fn origin(&self, entry: Option<&Entry>, var: Option<&str>) -> Origin {
        match (&self.data, var) {
            (Data::Environment(_), Some(var)) => Origin::Environment(var.to_owned()),
            _ if self.layer == Layer::File => Origin::File {
                file: self.name.clone(),
                line: entry.and_then(|e| e.line),
            },
            _ => Origin::Source(self.name.clone()),
        }
    }

    /// The value at exactly `path`.
    fn scalar(&self, path: &[Seg]) -> Option<(Value, Origin)> {
        match &self.data {
            Data::Entries(entries) => entries
                .iter()
                .rev()
                .find(|e| e.key.len() == path.len() && starts_with(&e.key, path))
                .map(|e| (e.value.clone(), self.origin(Some(e), None))),
            Data::Environment(vars) => env_names(path).iter().find_map(|name| {
                vars.get(name)
                    .map(|v| (Value::String(v.clone()), self.origin(None, Some(name))))
            }),
        }
    }

    /// Whether anything sits at or below `path`, and where the first of it came from.
    fn under(&self, path: &[Seg]) -> Option<Origin> {
        match &self.data {
            Data::Entries(entries) => entries
                .iter()
                .find(|e| starts_with(&e.key, path))
                .map(|e| self.origin(Some(e), None)),
            Data::Environment(vars) => {
                if path.is_empty() {
                    return None;
                }
                env_names(path).iter().find_map(|name| {
                    let prefix = format!("{name}_");
                    vars.keys()
                        .find(|var| *var == name || var.starts_with(&prefix))
                        .map(|var| self.origin(None, Some(var)))
                })
            }
        }
    }

    /// The segments directly below `path`, in order of appearance.
    fn children(&self, path: &[Seg], out: &mut Vec<Seg>) {
        let mut add = |seg: Seg| {
            if !out.iter().any(|s| s.matches(&seg)) {
                out.push(seg);
            }
        };
        match &self.data {
            Data::Entries(entries) => {
                for e in entries {
                    if e.key.len() > path.len() && starts_with(&e.key, path) {
                        add(e.key[path.len()].clone());
                    }
                }
            }
            Data::Environment(vars) => {
                if path.is_empty() {
                    return;
                }
                for name in env_names(path) {
                    let prefix = format!("{name}_");
                    for var in vars.keys() {
                        if let Some(rest) = var.strip_prefix(&prefix) {
                            let token = rest.split('_').next().unwrap_or_default();
                            if token.is_empty() {
                                continue;
                            }
                            add(match token.parse() {
                                Ok(i) => Seg::Index(i),
                                Err(_) => Seg::Name(token.to_ascii_lowercase()),
                            });
                        }
                    }
                }
            }
        }
    }
}

fn starts_with(key: &[Seg], prefix: &[Seg]) -> bool {
    key.len() >= prefix.len() && key.iter().zip(prefix).all(|(a, b)| a.matches(b))
}

/// Layered settings; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Highest precedence first.
    sources: Vec<Source>,
    active_profiles: Vec<String>,
}

/// What [`Settings::load`] reads.
#[derive(Clone, Debug)]
pub struct Load {
    /// The directories to read `application*.yml` from, lowest precedence first (default:
    /// the working directory, then `config/`).
    pub dirs: Vec<PathBuf>,
    /// The environment (default: the process's).
    pub env: BTreeMap<String, String>,
    /// The active profiles, when set in code; otherwise `MSA_PROFILES_ACTIVE`,
    /// `SPRING_PROFILES_ACTIVE`, then `spring.profiles.active` in the files.
    pub profiles: Option<Vec<String>>,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            dirs: vec![PathBuf::from("."), PathBuf::from("config")],
            // `vars()` panics on a variable that is not UTF-8; such a variable cannot name
            // or hold a setting, so it is left out.
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            profiles: None,
        }
    }
}

/// The base name Spring Boot reads (`spring.config.name`'s default).
const BASE: &str = "application";

impl Settings {
    /// No settings.
    pub fn new() -> Self {
        Settings::default()
    }

    /// Reads the files and environment [`Load`] names, with the profiles it decides; see
    /// the [module docs](self). A file that does not parse is an error naming its line.
    pub fn load(load: Load) -> Result<Settings, SettingsError> {
        let mut settings = Settings::new();
        settings.add_environment(load.env.clone());
        let read_base = |settings: &mut Settings, profile: Option<&str>| {
            for dir in &load.dirs {
                for ext in ["yml", "yaml"] {
                    let name = match profile {
                        Some(p) => format!("{BASE}-{p}.{ext}"),
                        None => format!("{BASE}.{ext}"),
                    };
                    settings.add_file(&dir.join(name))?;
                }
            }
            Ok::<_, SettingsError>(())
        };
        read_base(&mut settings, None)?;
        let profiles = match &load.profiles {
            Some(profiles) => profiles.clone(),
            None => settings.profiles_from_keys(),
        };
        for profile in &profiles {
            read_base(&mut settings, Some(profile))?;
        }
        settings.drop_inactive(&profiles);
        settings.active_profiles = profiles;
        Ok(settings)
    }

    /// `MSA_PROFILES_ACTIVE`, `SPRING_PROFILES_ACTIVE`, `spring.profiles.active` or
    /// `msa.profiles.active`, as a list.
    fn profiles_from_keys(&self) -> Vec<String> {
        let list = ["msa.profiles.active", "spring.profiles.active"]
            .iter()
            .find_map(|key| self.get_string(key));
        list.map(|list| split_list(&list)).unwrap_or_default()
    }

    /// Removes documents that `spring.config.activate.on-profile` keeps for profiles not
    /// active.
    fn drop_inactive(&mut self, profiles: &[String]) {
        let key = parse_key("spring.config.activate.on-profile").unwrap_or_default();
        let legacy = parse_key("spring.profiles").unwrap_or_default();
        self.sources.retain(|source| {
            let Data::Entries(entries) = &source.data else {
                return true;
            };
            let condition = entries.iter().find(|e| {
                (e.key.len() == key.len() && starts_with(&e.key, &key))
                    || (e.key.len() == legacy.len() && starts_with(&e.key, &legacy))
            });
            match condition.map(|e| &e.value) {
                None => true,
                Some(Value::String(expr)) => {
                    split_list(expr).iter().any(|p| match p.strip_prefix('!') {
                        Some(not) => !profiles.iter().any(|a| a == not),
                        None => profiles.iter().any(|a| a == p),
                    })
                }
                Some(_) => false,
            }
        });
    }

    /// Reads one YAML file, if it exists; each of its documents becomes a source.
    pub fn add_file(&mut self, path: &Path) -> Result<(), SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(SettingsError {
                    key: String::new(),
                    origin: Some(Origin::File {
                        file: path.display().to_string(),
                        line: None,
                    }),
                    message: format!("cannot read: {e}"),
                });
            }
        };
        let name = path.strip_prefix(".").unwrap_or(path).display().to_string();
        self.add_yaml(&name, &text)
    }

    /// Adds YAML text as the file `name` (each document a source of its own, later
    /// documents above earlier ones).
    pub fn add_yaml(&mut self, name: &str, text: &str) -> Result<(), SettingsError> {
        let documents = yaml::parse_documents(text).map_err(|e| SettingsError {
            key: String::new(),
            origin: Some(Origin::File {
                file: name.to_owned(),
                line: Some(e.line),
            }),
            message: e.message,
        })?;
        for document in documents {
            let mut entries = Vec::new();
            flatten(
                &document,
                &mut Vec::new(),
                "",
                &document.value,
                &mut entries,
            );
            self.push(Source {
                name: name.to_owned(),
                layer: Layer::File,
                data: Data::Entries(entries),
            });
        }
        Ok(())
    }

    /// Adds flattened properties (`a.b[0]` → value), as a config server sends them, as a
    /// source called `name` in `layer`. Keys that do not parse are skipped.
    pub fn add_properties(
        &mut self,
        layer: Layer,
        name: &str,
        properties: impl IntoIterator<Item = (String, Value)>,
    ) {
        let entries = properties
            .into_iter()
            .filter_map(|(key, value)| {
                Some(Entry {
                    key: parse_key(&key)?,
                    value,
                    line: None,
                })
            })
            .collect();
        self.push(Source {
            name: name.to_owned(),
            layer,
            data: Data::Entries(entries),
        });
    }

    /// Sets `key` to `value` in code: above every other layer.
    pub fn set(&mut self, key: &str, value: impl Into<Value>) {
        let Some(key) = parse_key(key) else { return };
        let entry = Entry {
            key,
            value: value.into(),
            line: None,
        };
        match self
            .sources
            .iter_mut()
            .find(|s| s.layer == Layer::Code)
            .map(|s| &mut s.data)
        {
            Some(Data::Entries(entries)) => entries.push(entry),
            _ => self.push(Source {
                name: "code".to_owned(),
                layer: Layer::Code,
                data: Data::Entries(vec![entry]),
            }),
        }
    }

    /// Adds environment variables, bound with Spring's relaxed rules.
    pub fn add_environment(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        self.push(Source {
            name: "environment".to_owned(),
            layer: Layer::Environment,
            data: Data::Environment(vars.into_iter().collect()),
        });
    }

    /// Removes every source of `layer` called `name` (a config server's, before its new
    /// properties are added).
    pub fn remove(&mut self, layer: Layer, name: &str) {
        self.sources
            .retain(|s| !(s.layer == layer && s.name == name));
    }

    /// Inserts above sources of the same or lower layer, below higher layers.
    fn push(&mut self, source: Source) {
        let at = self
            .sources
            .iter()
            .position(|s| s.layer <= source.layer)
            .unwrap_or(self.sources.len());
        self.sources.insert(at, source);
    }

    /// The value of `key` as text (numbers and booleans as written), if set.
    pub fn get_string(&self, key: &str) -> Option<String> {
        let path = parse_key(key)?;
        let (value, _) = self.scalar(&path)?;
        match value {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Whether anything is set at or below `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.origin(key).is_some()
    }

    /// Where the value at (or the first value below) `key` comes from.
    pub fn origin(&self, key: &str) -> Option<Origin> {
        let path = parse_key(key)?;
        if let Some((_, origin)) = self.scalar(&path) {
            return Some(origin);
        }
        self.sources.iter().find_map(|s| s.under(&path))
    }

    /// Binds everything below `prefix` (`""` for the whole tree) to `T`.
    pub fn bind<T: DeserializeOwned>(&self, prefix: &str) -> Result<T, SettingsError> {
        let path = if prefix.is_empty() {
            Vec::new()
        } else {
            parse_key(prefix).ok_or_else(|| SettingsError {
                key: prefix.to_owned(),
                origin: None,
                message: "not a key".into(),
            })?
        };
        let node = Node {
            settings: self,
            path,
        };
        T::deserialize(node.clone()).map_err(|e| {
            let mut error = node.locate(e);
            // serde's messages quote the value; a secret's stays out of logs and errors.
            if crate::secrets::is_secret_name(&error.key) {
                error.message =
                    "does not read as the type expected (the value is not shown: a secret)".into();
            }
            error
        })
    }

    /// Every key set in files, config server sources and code (not the environment) at
    /// or below `prefix`, with where it was set; the highest source's spelling of each.
    pub fn keys(&self, prefix: &str) -> Vec<(String, Origin)> {
        let prefix = parse_key(prefix).unwrap_or_default();
        let mut out: Vec<(Vec<Seg>, Origin)> = Vec::new();
        for source in &self.sources {
            let Data::Entries(entries) = &source.data else {
                continue;
            };
            for e in entries {
                if starts_with(&e.key, &prefix)
                    && !out
                        .iter()
                        .any(|(k, _)| k.len() == e.key.len() && starts_with(k, &e.key))
                {
                    out.push((e.key.clone(), source.origin(Some(e), None)));
                }
            }
        }
        out.into_iter().map(|(k, o)| (key_of(&k), o)).collect()
    }

    /// Every source, highest precedence first, with its properties as written — secrets
    /// masked ([`is_secret_name`](crate::secrets::is_secret_name), credentials in URLs):
    /// what `/actuator/env` lists.
    pub fn property_sources(&self) -> Vec<PropertySource> {
        let shown = |key: &str, value: &Value| -> String {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            if crate::secrets::is_secret_name(key) {
                crate::secrets::MASK.to_owned()
            } else {
                crate::secrets::mask_url(&text)
            }
        };
        self.sources
            .iter()
            .map(|source| {
                let properties = match &source.data {
                    Data::Entries(entries) => entries
                        .iter()
                        .map(|e| {
                            let key = key_of(&e.key);
                            Property {
                                value: shown(&key, &e.value),
                                origin: source.origin(Some(e), None).to_string(),
                                key,
                            }
                        })
                        .collect(),
                    Data::Environment(vars) => vars
                        .iter()
                        .map(|(name, value)| Property {
                            key: name.clone(),
                            value: shown(name, &Value::String(value.clone())),
                            origin: format!("environment variable {name}"),
                        })
                        .collect(),
                };
                PropertySource {
                    name: source.name.clone(),
                    properties,
                }
            })
            .collect()
    }

    /// The active profiles [`load`](Self::load) decided.
    pub fn active_profiles(&self) -> &[String] {
        &self.active_profiles
    }

    fn scalar(&self, path: &[Seg]) -> Option<(Value, Origin)> {
        self.sources.iter().find_map(|s| s.scalar(path))
    }
}

/// Splits `a, b,c` into its items.
pub fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn flatten(
    doc: &yaml::Document,
    key: &mut Vec<Seg>,
    yaml_path: &str,
    value: &Value,
    out: &mut Vec<Entry>,
) {
    let join = |segment: &str| {
        if yaml_path.is_empty() {
            segment.to_owned()
        } else {
            format!("{yaml_path}.{segment}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (name, child) in map {
                // A YAML key may itself be dotted (`server.port: 8080`).
                let Some(segs) = parse_key(name) else {
                    continue;
                };
                let depth = key.len();
                key.extend(segs);
                flatten(doc, key, &join(name), child, out);
                key.truncate(depth);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                key.push(Seg::Index(i));
                flatten(doc, key, &join(&i.to_string()), child, out);
                key.pop();
            }
        }
        _ if key.is_empty() => {}
        Value::Object(_) | Value::Array(_) => out.push(Entry {
            key: key.clone(),
            value: Value::String(String::new()),
            line: doc.line(yaml_path),
        }),
        scalar => out.push(Entry {
            key: key.clone(),
            value: scalar.clone(),
            line: doc.line(yaml_path),
        }),
    }
}

/// A point in the settings tree, deserialized on demand: what the target type asks for
/// decides which keys and environment variables are read.
#[derive(Clone)]
struct Node<'a> {
    settings: &'a Settings,
    path: Vec<Seg>,
}

impl<'a> Node<'a> {
    fn child(&self, seg: Seg) -> Node<'a> {
        let mut path = self.path.clone();
        path.push(seg);
        Node {
            settings: self.settings,
            path,
        }
    }

    fn scalar(&self) -> Option<(Value, Origin)> {
        // A scalar counts only if no higher source has keys below it.
        for source in &self.settings.sources {
            if let Some(found) = source.scalar(&self.path) {
                return Some(found);
            }
            if !self.path.is_empty() && source.under(&self.path).is_some() {
                return None;
            }
        }
        None
    }

    fn exists(&self) -> bool {
        self.settings
            .sources
            .iter()
            .any(|s| s.under(&self.path).is_some())
    }

    fn children(&self) -> Vec<Seg> {
        let mut out = Vec::new();
        for source in &self.settings.sources {
            source.children(&self.path, &mut out);
        }
        out
    }

    /// The list items: from the highest source that has any.
    fn items(&self) -> Vec<Node<'a>> {
        for source in &self.settings.sources {
            let mut segs = Vec::new();
            source.children(&self.path, &mut segs);
            let mut indexes: Vec<usize> = segs
                .iter()
                .filter_map(|s| match s {
                    Seg::Index(i) => Some(*i),
                    Seg::Name(_) => None,
                })
                .collect();
            if !indexes.is_empty() {
                indexes.sort_unstable();
                return indexes
                    .into_iter()
                    .map(|i| self.child(Seg::Index(i)))
                    .collect();
            }
        }
        Vec::new()
    }

    /// Gives `error` this node's key and origin, unless a deeper node already did.
    fn locate(&self, mut error: SettingsError) -> SettingsError {
        if error.key.is_empty() && !self.path.is_empty() {
            error.key = key_of(&self.path);
        }
        if error.origin.is_none() {
            let path = parse_key(&error.key).unwrap_or_default();
            error.origin = self
                .settings
                .scalar(&path)
                .map(|(_, o)| o)
                .or_else(|| self.settings.sources.iter().find_map(|s| s.under(&path)));
        }
        error
    }

    /// Visits `entries` as a map; an error names this node unless a deeper one did.
    fn visit_entries<'de, V: Visitor<'de>>(
        &self,
        entries: Vec<(String, Node<'a>)>,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        visitor
            .visit_map(Entries {
                entries: entries.into_iter(),
                next: None,
            })
            .map_err(|e| self.locate(e))
    }

    /// The scalar, converted to what a typed request needs.
    fn typed(&self, want: Want) -> Result<Value, SettingsError> {
        let Some((value, _)) = self.scalar() else {
            return Err(self.locate(de::Error::custom(match want {
                Want::Text => "expected a value, found a map or list",
                _ => "expected a value, found none or a map",
            })));
        };
        Ok(match (want, value) {
            (Want::Bool, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(s),
            },
            (Want::Number, Value::String(s)) => {
                let t = s.trim();
                t.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| t.parse::<u64>().map(Value::from))
                    .ok()
                    .or_else(|| {
                        t.parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                            .map(Value::Number)
                    })
                    .unwrap_or(Value::String(s))
            }
            (Want::Text, Value::Number(n)) => Value::String(n.to_string()),
            (Want::Text, Value::Bool(b)) => Value::String(b.to_string()),
            (_, value) => value,
        })
    }
}

#[derive(Clone, Copy)]
enum Want {
    Bool,
    Number,
    Text,
}

fn json_error(e: serde_json::Error) -> SettingsError {
    de::Error::custom(e)
}

macro_rules! typed {
    ($($method:ident => $want:expr),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
                let value = self.typed($want)?;
                value.$method(visitor).map_err(|e| self.locate(json_error(e)))
            }
        )*
    };
}

impl<'de> de::Deserializer<'de> for Node<'_> {
    type Error = SettingsError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        if let Some((value, _)) = self.scalar() {
            return value
                .deserialize_any(visitor)
                .map_err(|e| self.locate(json_error(e)));
        }
        let children = self.children();
        if children.is_empty() {
            visitor.visit_unit()
        } else if children.iter().all(|s| matches!(s, Seg::Index(_))) {
            self.deserialize_seq(visitor)
        } else {
            self.deserialize_map(visitor)
        }
    }

    typed! {
        deserialize_bool => Want::Bool,
        deserialize_i8 => Want::Number,
        deserialize_i16 => Want::Number,
        deserialize_i32 => Want::Number,
        deserialize_i64 => Want::Number,
        deserialize_i128 => Want::Number,
        deserialize_u8 => Want::Number,
        deserialize_u16 => Want::Number,
        deserialize_u32 => Want::Number,
        deserialize_u64 => Want::Number,
        deserialize_u128 => Want::Number,
        deserialize_f32 => Want::Number,
        deserialize_f64 => Want::Number,
        deserialize_char => Want::Text,
        deserialize_str => Want::Text,
        deserialize_string => Want::Text,
        deserialize_bytes => Want::Text,
        deserialize_byte_buf => Want::Text,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        match self.scalar() {
            Some((Value::Null, _)) => visitor.visit_none(),
            Some(_) => visitor.visit_some(self),
            None if self.exists() => visitor.visit_some(self),
            None => visitor.visit_none(),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        // `a, b, c` is a list too, as Spring converts it.
        if let Some((value, _)) = self.scalar() {
            let items: Vec<Value> = match value {
                Value::String(s) => split_list(&s).into_iter().map(Value::String).collect(),
                Value::Null => Vec::new(),
                other => vec![other],
            };
            return Value::Array(items)
                .deserialize_seq(visitor)
                .map_err(|e| self.locate(json_error(e)));
        }
        let items = self.items();
        let located = self.clone();
        visitor
            .visit_seq(Items {
                items: items.into_iter(),
            })
            .map_err(|e| located.locate(e))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, SettingsError> {
        let entries = self
            .children()
            .into_iter()
            .map(|seg| {
                let name = match &seg {
                    Seg::Name(name) => name.clone(),
                    Seg::Index(i) => i.to_string(),
                };
                (name, self.child(seg))
            })
            .collect();
        self.visit_entries(entries, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        // The struct's fields, wherever they are set (the environment included), then any
        // other key in a file, so that a struct that denies unknown fields names it.
        let mut entries = Vec::new();
        for field in fields {
            let node = self.child(Seg::Name((*field).to_owned()));
            if node.exists() {
                entries.push(((*field).to_owned(), node));
            }
        }
        for seg in self.children() {
            if let Seg::Name(name) = &seg
                && !fields.iter().any(|f| same_name(f, name))
                && self.settings.sources.iter().any(|s| {
                    matches!(s.data, Data::Entries(_))
                        && s.under(&self.child(seg.clone()).path).is_some()
                })
            {
                entries.push((name.clone(), self.child(seg)));
            }
        }
        self.visit_entries(entries, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        match self.typed(Want::Text)? {
            Value::String(s) => visitor
                .visit_enum(s.into_deserializer())
                .map_err(|e: SettingsError| self.locate(e)),
            _ => Err(self.locate(de::Error::custom("expected the name of a variant"))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(
        self,
        visitor: V,
    ) -> Result<V::Value, SettingsError> {
        visitor.visit_unit()
    }
}

struct Items<'a> {
    items: std::vec::IntoIter<Node<'a>>,
}

impl<'de> de::SeqAccess<'de> for Items<'_> {
    type Error = SettingsError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, SettingsError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(node.clone())
                .map(Some)
                .map_err(|e| node.locate(e)),
            None => Ok(None),
        }
    }
}

struct Entries<'a> {
    entries: std::vec::IntoIter<(String, Node<'a>)>,
    next: Option<Node<'a>>,
}

impl<'de> de::MapAccess<'de> for Entries<'_> {
    type Error = SettingsError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, SettingsError> {
        let Some((name, node)) = self.entries.next() else {
            return Ok(None);
        };
        let key = seed
            .deserialize(name.into_deserializer())
            .map_err(|e: SettingsError| node.locate(e))?;
        self.next = Some(node);
        Ok(Some(key))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, SettingsError> {
        let node = self
            .next
            .take()
            .ok_or_else(|| de::Error::custom("a value without its key"))?;
        seed.deserialize(node.clone()).map_err(|e| node.locate(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    fn env(vars: &[(&str, &str)]) -> BTreeMap<String, String> {
        vars.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Orders {
        max_quantity: u32,
        #[serde(default)]
        prices: BTreeMap<String, f64>,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        enabled: Option<bool>,
    }

    #[test]
    fn keys_compare_relaxed_and_the_environment_wins_over_files() {
        let mut s = Settings::new();
        s.add_yaml(
            "application.yml",
            "orders:\n  maxQuantity: 5\n  prices:\n    Widget: 2.5\n  tags: [a, b]\n",
        )
        .unwrap();
        let o: Orders = s.bind("orders").unwrap();
        assert_eq!(o.max_quantity, 5);
        assert_eq!(o.prices["Widget"], 2.5);
        s.add_environment(env(&[
            ("ORDERS_MAX_QUANTITY", "12"),
            ("ORDERS_PRICES_GADGET", "4"),
            ("ORDERS_TAGS", "x, y"),
            ("ORDERS_ENABLED", "TRUE"),
        ]));
        let o: Orders = s.bind("orders").unwrap();
        assert_eq!(o.max_quantity, 12);
        assert_eq!(o.prices.len(), 2);
        assert_eq!(o.prices["gadget"], 4.0);
        assert_eq!(o.tags, ["x", "y"]);
        assert_eq!(o.enabled, Some(true));
        assert_eq!(s.get_string("ORDERS.max_quantity").as_deref(), Some("12"));
        assert_eq!(
            s.origin("orders.max-quantity"),
            Some(Origin::Environment("ORDERS_MAX_QUANTITY".into()))
        );
    }

    #[test]
    fn spring_env_names_without_dashes_bind_too() {
        let mut s = Settings::new();
        s.add_environment(env(&[
            ("ORDERS_MAXQUANTITY", "7"),
            ("MY_LIST_1_NAME", "b"),
            ("MY_LIST_0_NAME", "a"),
        ]));
        let o: Orders = s.bind("orders").unwrap();
        assert_eq!(o.max_quantity, 7);
        #[derive(Deserialize)]
        struct Item {
            name: String,
        }
        let list: Vec<Item> = s.bind("my.list").unwrap();
        assert_eq!(
            list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_list_comes_whole_from_the_highest_source() {
        let mut s = Settings::new();
        s.add_yaml("application.yml", "tags: [a, b, c]\n").unwrap();
        s.add_yaml("application-dev.yml", "tags: [d]\n").unwrap();
        let tags: Vec<String> = s.bind("tags").unwrap();
        assert_eq!(tags, ["d"]);
        s.set("tags[0]", "code");
        let tags: Vec<String> = s.bind("tags").unwrap();
        assert_eq!(tags, ["code"]);
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let mut s = Settings::new();
        s.add_yaml(
            "config/application.yml",
            "server:\n  port: 80\norders:\n  max-quantity: many\n",
        )
        .unwrap();
        let e = s.bind::<Orders>("orders").unwrap_err();
        assert_eq!(e.key, "orders.max-quantity");
        assert_eq!(
            e.to_string().split(": ").next(),
            Some("config/application.yml:4"),
            "{e}"
        );

        s.add_yaml(
            "application-dev.yml",
            "orders:\n  max-quantity: 1\n  max-quantiy: 2\n",
        )
        .unwrap();
        let e = s.bind::<Orders>("orders").unwrap_err();
        assert_eq!(e.key, "orders.max-quantiy", "{e}");
        assert!(
            e.to_string()
                .starts_with("application-dev.yml:3: orders.max-quantiy: unknown field"),
            "{e}"
        );

        let mut s = Settings::new();
        s.add_environment(env(&[("ORDERS_MAX_QUANTITY", "-1")]));
        let e = s.bind::<Orders>("orders").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("environment variable ORDERS_MAX_QUANTITY: orders.max-quantity:"),
            "{e}"
        );

        // A secret's value never appears in the message.
        let mut s = Settings::new();
        s.add_environment(env(&[("DB_PASSWORD", "hunter2")]));
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Db {
            password: u32,
        }
        let e = s.bind::<Db>("db").unwrap_err();
        assert_eq!(e.key, "db.password");
        assert!(!e.to_string().contains("hunter2"), "{e}");

        let e = Settings::new().add_yaml("a.yml", "a: [\n").unwrap_err();
        assert!(e.to_string().starts_with("a.yml:"), "{e}");
    }

    #[test]
    fn profiles_choose_files_and_documents() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("application.yml"),
            "a: base\nb: base\nc: base\nspring.profiles.active: dev\n---\nspring:\n  config:\n    activate:\n      on-profile: prod\nb: prod-doc\n---\nspring.config.activate.on-profile: dev\nc: dev-doc\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("config/application.yml"), "a: config-dir\n").unwrap();
        std::fs::write(dir.path().join("application-dev.yml"), "d: dev-file\n").unwrap();
        std::fs::write(
            dir.path().join("config/application-prod.yml"),
            "d: prod-file\n",
        )
        .unwrap();
        let load = |vars: &[(&str, &str)]| {
            Settings::load(Load {
                dirs: vec![dir.path().to_owned(), dir.path().join("config")],
                env: env(vars),
                profiles: None,
            })
            .unwrap()
        };
        let get = |s: &Settings, k: &str| s.get_string(k).unwrap_or_default();

        let s = load(&[]);
        assert_eq!(s.active_profiles(), ["dev"]);
        assert_eq!(get(&s, "a"), "config-dir");
        assert_eq!(get(&s, "b"), "base");
        assert_eq!(get(&s, "c"), "dev-doc");
        assert_eq!(get(&s, "d"), "dev-file");

        let s = load(&[("SPRING_PROFILES_ACTIVE", "dev,prod")]);
        assert_eq!(s.active_profiles(), ["dev", "prod"]);
        assert_eq!(get(&s, "b"), "prod-doc");
        assert_eq!(get(&s, "d"), "prod-file");
        let s = load(&[
            ("SPRING_PROFILES_ACTIVE", "dev"),
            ("MSA_PROFILES_ACTIVE", "prod"),
        ]);
        assert_eq!(s.active_profiles(), ["prod"]);
        assert_eq!(get(&s, "c"), "base");
    }

    #[test]
    fn keys_lists_what_files_and_code_set() {
        let mut s = Settings::new();
        s.add_yaml(
            "application.yml",
            "msa:\n  loadbalancer:\n    strategy: random\n  typo: 1\n",
        )
        .unwrap();
        s.set("msa.loadbalancer.zone", "a");
        let keys: Vec<String> = s.keys("msa").into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "msa.loadbalancer.zone",
                "msa.loadbalancer.strategy",
                "msa.typo"
            ]
        );
        assert_eq!(
            s.keys("msa.typo")[0].1,
            Origin::File {
                file: "application.yml".into(),
                line: Some(4)
            }
        );
    }

    #[test]
    fn hostile_keys_and_values_are_errors_not_panics() {
        let mut s = Settings::new();
        s.add_environment(env(&[
            ("A_", "x"),
            ("_", "y"),
            ("A__B", "z"),
            ("A_99999999999999999999", "w"),
        ]));
        s.add_properties(
            Layer::Remote,
            "remote",
            [
                ("a[".into(), Value::Null),
                ("a[x]".into(), Value::Null),
                ("..".into(), Value::Null),
            ],
        );
        let _ = s.bind::<BTreeMap<String, Value>>("a");
        let _ = s.bind::<Value>("");
        assert!(s.bind::<u8>("a").is_err());
    }
}
