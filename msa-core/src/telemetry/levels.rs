//! Log levels changed at run time: the model behind `/actuator/loggers`.
//!
//! The log filter is a list of directives (`info,msa_discovery=debug`). [`Loggers`] keeps
//! it as a root level plus a level per target, applies changes to the live filter at once
//! (through `tracing-subscriber`'s reload layer), and answers what a logger's configured
//! and effective levels are, as Spring Boot's loggers endpoint does.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::reload::Handle;
use tracing_subscriber::{EnvFilter, Registry};

/// The levels, most severe first, as Spring Boot lists them.
pub const LEVELS: [&str; 6] = ["OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// The most targets with a level of their own: a client changing levels cannot grow the
/// filter without bound.
pub const MAX_TARGETS: usize = 256;

/// The longest logger name accepted.
pub const MAX_NAME: usize = 200;

/// The name of the root logger.
pub const ROOT: &str = "ROOT";

/// A level change that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LevelError {
    /// Not one of [`LEVELS`] (or `FATAL`, read as `ERROR`).
    #[error("{0:?} is not a level (OFF, ERROR, WARN, INFO, DEBUG, TRACE)")]
    Level(String),
    /// Not a logger name: a Rust target (`msa_core::http`, or with dots), at most
    /// [`MAX_NAME`] characters of letters, digits, `_`, `-`, `:` and `.`.
    #[error("{0:?} is not a logger name")]
    Name(String),
    /// [`MAX_TARGETS`] targets already have a level.
    #[error("{MAX_TARGETS} loggers already have a level of their own")]
    TooMany,
    /// The resulting filter does not parse.
    #[error("the log filter does not parse: {0}")]
    Filter(String),
}

/// A logger's levels, as Spring Boot's loggers endpoint writes them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggerLevels {
    /// The level set for this very name, if any.
    pub configured_level: Option<&'static str>,
    /// The level in force: its own, else its nearest parent's, else the root's.
    pub effective_level: &'static str,
}

/// The filter as a model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Model {
    root: Option<&'static str>,
    targets: BTreeMap<String, &'static str>,
    /// Directives msa does not model (span and field filters), kept as written.
    other: Vec<String>,
}

/// `text` as one of [`LEVELS`].
fn level(text: &str) -> Option<&'static str> {
    let upper = text.trim().to_ascii_uppercase();
    if upper == "FATAL" {
        return Some("ERROR");
    }
    if upper == "WARNING" {
        return Some("WARN");
    }
    LEVELS.into_iter().find(|l| *l == upper)
}

/// A logger name as a tracing target: dots read as `::`.
fn target(name: &str) -> Result<String, LevelError> {
    let name = name.trim();
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'));
    if !valid {
        return Err(LevelError::Name(name.chars().take(MAX_NAME).collect()));
    }
    Ok(name.replace('.', "::"))
}

impl Model {
    fn parse(filter: &str) -> Model {
        let mut model = Model::default();
        for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            match directive.split_once('=') {
                None => match level(directive) {
                    Some(l) => model.root = Some(l),
                    None => model.other.push(directive.to_owned()),
                },
                Some((name, lvl)) if !name.contains(['[', '{']) => {
                    match (target(name), level(lvl)) {
                        (Ok(t), Some(l)) => {
                            model.targets.insert(t, l);
                        }
                        _ => model.other.push(directive.to_owned()),
                    }
                }
                Some(_) => model.other.push(directive.to_owned()),
            }
        }
        model
    }

    fn render(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        if let Some(root) = self.root {
            out.push(root.to_ascii_lowercase());
        }
        out.extend(self.other.iter().cloned());
        out.extend(
            self.targets
                .iter()
                .map(|(t, l)| format!("{t}={}", l.to_ascii_lowercase())),
        );
        out.join(",")
    }

    fn effective(&self, target: &str) -> &'static str {
        let mut best: Option<(&str, &'static str)> = None;
        for (name, level) in &self.targets {
            let applies = target == name
                || target
                    .strip_prefix(name.as_str())
                    .is_some_and(|rest| rest.starts_with("::"));
            if applies && best.is_none_or(|(b, _)| name.len() > b.len()) {
                best = Some((name, level));
            }
        }
        // Without a root directive, tracing-subscriber's filter lets errors through.
        best.map(|(_, l)| l).or(self.root).unwrap_or("ERROR")
    }
}

/// The process's log levels, changeable at run time; see the [module docs](self).
#[derive(Clone)]
pub struct Loggers {
    handle: Handle<EnvFilter, Registry>,
    model: Arc<Mutex<Model>>,
}

impl fmt::Debug for Loggers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loggers")
            .field("filter", &self.filter())
            .finish()
    }
}

static GLOBAL: OnceLock<Loggers> = OnceLock::new();

/// The log levels of the process's global subscriber, once
/// [`Telemetry::init`](super::Telemetry::init) has installed it.
pub fn loggers() -> Option<Loggers> {
    GLOBAL.get().cloned()
}

impl Loggers {
    pub(super) fn new(handle: Handle<EnvFilter, Registry>, filter: &str) -> Self {
        Loggers {
            handle,
            model: Arc::new(Mutex::new(Model::parse(filter))),
        }
    }

    pub(super) fn install_global(&self) {
        let _ = GLOBAL.set(self.clone());
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        crate::sync::lock(&self.model)
    }

    /// The filter in force, as directives.
    pub fn filter(&self) -> String {
        self.model().render()
    }

    /// Every logger with a level of its own, and the root, with their levels.
    pub fn all(&self) -> BTreeMap<String, LoggerLevels> {
        let model = self.model();
        let mut all = BTreeMap::new();
        all.insert(
            ROOT.to_owned(),
            LoggerLevels {
                configured_level: model.root,
                effective_level: model.root.unwrap_or("ERROR"),
            },
        );
        for (name, level) in &model.targets {
            all.insert(
                name.clone(),
                LoggerLevels {
                    configured_level: Some(level),
                    effective_level: level,
                },
            );
        }
        all
    }

    /// One logger's levels (any name: one without a level of its own inherits one).
    pub fn get(&self, name: &str) -> Result<LoggerLevels, LevelError> {
        let model = self.model();
        if name.eq_ignore_ascii_case(ROOT) {
            return Ok(LoggerLevels {
                configured_level: model.root,
                effective_level: model.root.unwrap_or("ERROR"),
            });
        }
        let target = target(name)?;
        Ok(LoggerLevels {
            configured_level: model.targets.get(&target).copied(),
            effective_level: model.effective(&target),
        })
    }

    /// Sets `name`'s level (`ROOT` for the root), or removes its own level with `None`;
    /// takes effect at once.
    pub fn set(&self, name: &str, level_text: Option<&str>) -> Result<(), LevelError> {
        let level = level_text
            .map(|text| {
                level(text).ok_or_else(|| LevelError::Level(text.chars().take(20).collect()))
            })
            .transpose()?;
        let mut model = self.model();
        let mut next = model.clone();
        if name.eq_ignore_ascii_case(ROOT) {
            next.root = level;
        } else {
            let target = target(name)?;
            match level {
                Some(level) => {
                    if !next.targets.contains_key(&target) && next.targets.len() >= MAX_TARGETS {
                        return Err(LevelError::TooMany);
                    }
                    next.targets.insert(target, level);
                }
                None => {
                    next.targets.remove(&target);
                }
            }
        }
        let filter =
            EnvFilter::try_new(next.render()).map_err(|e| LevelError::Filter(e.to_string()))?;
        self.handle
            .reload(filter)
            .map_err(|e| LevelError::Filter(e.to_string()))?;
        *model = next;
        tracing::info!(logger = %name, level = level.unwrap_or("inherited"), "log level changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_read_into_root_targets_and_the_rest() {
        let model = Model::parse("warn,msa_core::http=debug,my.app=TRACE,[span]=info,x=loud");
        assert_eq!(model.root, Some("WARN"));
        assert_eq!(model.targets["msa_core::http"], "DEBUG");
        assert_eq!(model.targets["my::app"], "TRACE");
        assert_eq!(model.other, ["[span]=info", "x=loud"]);
        assert_eq!(model.effective("msa_core::http::server"), "DEBUG");
        assert_eq!(model.effective("msa_core::httpx"), "WARN");
        assert_eq!(model.effective("other"), "WARN");
        assert_eq!(
            model.render(),
            "warn,[span]=info,x=loud,msa_core::http=debug,my::app=trace"
        );
    }

    #[test]
    fn names_and_levels_are_checked() {
        assert!(target("msa_core.http").is_ok());
        assert!(target("a b").is_err());
        assert!(target(&"a".repeat(MAX_NAME + 1)).is_err());
        assert_eq!(level("fatal"), Some("ERROR"));
        assert_eq!(level("LOUD"), None);
    }
}
