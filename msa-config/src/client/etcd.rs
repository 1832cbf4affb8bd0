//! The config client reading etcd itself (an `etcd://` URI, feature `etcd`): no config
//! server between the service and its files. The files are the config server's
//! ([`EtcdRepository`]'s key layout, `/msa/config/<label>/<file>`), resolved the same way
//! (application, profiles, label), and a watch of etcd brings a change within
//! milliseconds.
//!
//! The URI names the members and, as its path, the key prefix:
//! `etcd://10.0.0.1:2379,10.0.0.2:2379` (prefix `/msa`) or `etcd://10.0.0.1:2379/shop`.
//! Values sealed as `{cipher}…` stay sealed: only a config server holds the key to
//! decrypt them.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{ConfigClient, Fetched};
use crate::server::{EtcdRepository, environment};

/// The label read when the client names none (as `msa-config-server --default-label`).
const DEFAULT_LABEL: &str = "main";

/// The etcd repositories a client reads, one per `etcd://` URI, opened on first use.
#[derive(Debug, Default)]
pub(super) struct Direct {
    repositories: Mutex<HashMap<String, EtcdRepository>>,
}

/// The members and the key prefix of an `etcd://` URI.
fn split(uri: &str) -> (&str, &str) {
    let rest = uri.strip_prefix("etcd://").unwrap_or(uri);
    match rest.find('/') {
        Some(at) if rest.len() > at + 1 => (&rest[..at], &rest[at..]),
        Some(at) => (&rest[..at], crate::server::etcd::PREFIX),
        None => (rest, crate::server::etcd::PREFIX),
    }
}

impl Direct {
    fn repository(&self, uri: &str) -> Result<EtcdRepository, String> {
        let mut repositories = msa_core::sync::lock(&self.repositories);
        if let Some(repository) = repositories.get(uri) {
            return Ok(repository.clone());
        }
        let (members, prefix) = split(uri);
        let client = msa_core::etcd::LazyClient::new(members).map_err(|e| e.to_string())?;
        let location = format!("etcd://{members}");
        let repository = EtcdRepository::with_client(client, prefix, DEFAULT_LABEL, &location);
        repositories.insert(uri.to_owned(), repository.clone());
        Ok(repository)
    }
}

impl ConfigClient {
    /// The environment as the files in etcd at `uri` make it now.
    pub(super) async fn fetch_etcd(&self, uri: &str) -> Result<Fetched, String> {
        let repository = self.direct.repository(uri)?;
        self.resolve_etcd(&repository).await
    }

    async fn resolve_etcd(&self, repository: &EtcdRepository) -> Result<Fetched, String> {
        let s = &self.inner;
        let snapshot = repository
            .snapshot(s.label.as_deref())
            .await
            .map_err(|e| e.to_string())?;
        let profiles: Vec<String> = s
            .profiles
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        let environment =
            environment::resolve(&snapshot, &s.application, &profiles, s.label.as_deref())
                .map_err(|e| format!("cannot read config file {e}"))?;
        Ok(Fetched {
            etag: Some(format!("\"{}\"", environment.content_version())),
            environment,
        })
    }

    /// Waits (up to the watch wait) for the files in etcd at `uri` to make an environment
    /// other than `current`. Files that do not make one (a file that does not parse, the
    /// label gone) are logged and waited past: the next change may mend them, and is
    /// taken at once.
    pub(super) async fn next_etcd(
        &self,
        uri: &str,
        current: &Fetched,
    ) -> Result<Option<Fetched>, String> {
        let repository = self.direct.repository(uri)?;
        let deadline = tokio::time::Instant::now() + self.inner.watch_wait;
        let mut changes = repository.subscribe();
        loop {
            changes.mark_unchanged();
            match self.resolve_etcd(&repository).await {
                Ok(fetched) if fetched.etag != current.etag => return Ok(Some(fetched)),
                Ok(_) => {}
                Err(reason) => tracing::warn!(
                    application = %self.inner.application,
                    %reason,
                    "the config files in etcd do not make a configuration; keeping the current one"
                ),
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the etcd repository closed".into()),
                Err(_) => return Ok(None),
            }
        }
    }
}
