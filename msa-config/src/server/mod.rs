//! The config server: Spring Cloud Config's HTTP API over a config repository, plus a
//! watch API so clients learn of changes within milliseconds, with no message bus.
//!
//! | request | answer |
//! |---|---|
//! | `GET /{application}/{profiles}[/{label}]` | the [`Environment`] JSON, most specific source first, with an `ETag` |
//! | `GET [/{label}]/{application}-{profiles}.{yml,yaml,properties,json}` | the merged view in that format (`?resolvePlaceholders=false` to keep `${...}`) |
//! | `POST /encrypt`, `POST /decrypt` | cipher text for a plain text body, and back (see [`cipher`]) |
//! | `GET /_msa/watch/{application}/{profiles}[/{label}]` | long-poll: with `If-None-Match: "<etag>"`, answers as soon as the environment differs, or `304` after `?wait=` (default 30 s, at most 5 min) |
//! | `GET /actuator/health`, `/actuator/prometheus`, ... | msa's actuator |
//!
//! A `/` inside an application or label is written `(_)`. An unknown application answers
//! `200` with no property sources, as Spring does. A broken file answers `500` naming the
//! file, line and column, for the applications that read it only.

// Everything but the wire model is the server's (feature `server`); git repositories are
// feature `git`. A service that only reads configuration links neither.
#[cfg(feature = "server")]
pub mod cipher;
pub mod environment;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "server")]
pub mod format;
#[cfg(feature = "git")]
pub mod git;
#[cfg(feature = "server")]
mod http;
#[cfg(feature = "server")]
pub mod repository;

#[cfg(feature = "server")]
pub use self::cipher::Cipher;
pub use self::environment::{Environment, PropertySource};
#[cfg(feature = "etcd")]
pub use self::etcd::EtcdRepository;
#[cfg(feature = "git")]
pub use self::git::{GitOptions, GitRepository};
#[cfg(feature = "server")]
pub use self::http::*;
#[cfg(feature = "server")]
pub use self::repository::DirRepository;

/// The prefix of an encrypted value (`{cipher}…`), as Spring Cloud Config writes it.
pub const CIPHER_PREFIX: &str = "{cipher}";

/// Why a label cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No branch, tag or commit has this name.
    #[error("no label {0:?}: not a branch, tag or commit of the repository")]
    Unknown(String),
    /// The repository could not be read.
    #[error("cannot read the repository: {0}")]
    Repository(String),
}
