//! A typed configuration that follows the config server.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use msa_core::BoxError;
use msa_core::actuator::RefreshHook;
use msa_core::backoff::Backoff;
use tokio::sync::{broadcast, watch};

use super::{ClientError, ConfigClient, ConfigServerSource, Fetched};
use crate::server::Environment;

type Build<T> = dyn Fn(&ConfigServerSource) -> Result<T, String> + Send + Sync;
type Validate<T> = dyn Fn(&T) -> Result<(), String> + Send + Sync;

/// A change that was applied: the keys whose values changed, and the new version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changed {
    /// Flattened keys (`shop.price`, `list[0]`) added, removed or changed.
    pub keys: Vec<String>,
    /// The new version (the server's `ETag`), when known.
    pub version: Option<String>,
}

/// A configuration that was received but not applied, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Why: a build, deserialization or validation error.
    pub reason: String,
    /// The rejected version (the server's `ETag`), when known.
    pub version: Option<String>,
}

/// A typed configuration kept current from a config server; cheap to clone. The watch
/// stops when the last clone is dropped.
///
/// - [`get`](Self::get) is the current value; [`subscribe`](Self::subscribe) a
///   `tokio::sync::watch` receiver of it.
/// - [`changes`](Self::changes) reports the keys of each applied change.
/// - A new configuration that does not build, deserialize or validate is rejected: logged,
///   reported on [`rejections`](Self::rejections), and the previous value kept.
/// - [`refresh`](Self::refresh) fetches now; [`refresh_hook`](Self::refresh_hook) wires it
///   to `POST /actuator/refresh`.
pub struct LiveConfig<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for LiveConfig<T> {
    fn clone(&self) -> Self {
        LiveConfig {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> fmt::Debug for LiveConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveConfig")
            .field("application", &self.inner.client.application())
            .finish_non_exhaustive()
    }
}

struct Inner<T> {
    client: ConfigClient,
    value: watch::Sender<Arc<T>>,
    changes: broadcast::Sender<Changed>,
    rejections: broadcast::Sender<Rejected>,
    build: Box<Build<T>>,
    validate: Box<Validate<T>>,
    state: Mutex<Seen>,
}

/// What the server last said, and what was last applied.
struct Seen {
    /// The last version received (applied or rejected): the watch waits for the next.
    latest: Option<Fetched>,
    /// The merged properties of the applied value.
    applied: Vec<(String, serde_json::Value)>,
}

/// Builds and validates the configuration for `environment`.
fn evaluate<T>(
    build: &Build<T>,
    validate: &Validate<T>,
    environment: Option<Environment>,
) -> Result<(T, ConfigServerSource), String> {
    let source = ConfigServerSource::new(environment);
    let value = build(&source)?;
    validate(&value)?;
    Ok((value, source))
}

impl<T> Inner<T>
where
    T: Send + Sync + 'static,
{
    /// Applies `fetched`; returns the changed keys, or why it was rejected.
    fn apply(&self, fetched: Fetched) -> Result<Vec<String>, String> {
        let version = fetched.etag.clone();
        let evaluated = evaluate(
            &*self.build,
            &*self.validate,
            Some(fetched.environment.clone()),
        );
        let mut seen = msa_core::sync::lock(&self.state);
        seen.latest = Some(fetched);
        let (value, source) = match evaluated {
            Ok(ok) => ok,
            Err(reason) => {
                tracing::warn!(
                    application = self.client.application(),
                    %reason,
                    "new configuration rejected; keeping the previous one"
                );
                let _ = self.rejections.send(Rejected {
                    reason: reason.clone(),
                    version,
                });
                return Err(reason);
            }
        };
        let keys = diff(&seen.applied, source.properties());
        seen.applied = source.properties().to_vec();
        drop(seen);
        if !keys.is_empty() {
            tracing::info!(
                application = self.client.application(),
                ?keys,
                "configuration changed"
            );
            self.value.send_replace(Arc::new(value));
            let _ = self.changes.send(Changed {
                keys: keys.clone(),
                version,
            });
        }
        Ok(keys)
    }

    fn latest(&self) -> Option<Fetched> {
        msa_core::sync::lock(&self.state).latest.clone()
    }
}

/// Keys whose values differ between two merged property lists.
fn diff(old: &[(String, serde_json::Value)], new: &[(String, serde_json::Value)]) -> Vec<String> {
    let old: std::collections::HashMap<&str, &serde_json::Value> =
        old.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let new_map: std::collections::HashMap<&str, &serde_json::Value> =
        new.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut keys = BTreeSet::new();
    for (key, value) in &new_map {
        if old.get(key) != Some(value) {
            keys.insert((*key).to_owned());
        }
    }
    for key in old.keys() {
        if !new_map.contains_key(key) {
            keys.insert((*key).to_owned());
        }
    }
    keys.into_iter().collect()
}

impl<T> LiveConfig<T>
where
    T: Send + Sync + 'static,
{
    pub(super) async fn start<F, V>(
        client: ConfigClient,
        build: F,
        validate: V,
    ) -> Result<Self, ClientError>
    where
        F: Fn(&ConfigServerSource) -> Result<T, String> + Send + Sync + 'static,
        V: Fn(&T) -> Result<(), String> + Send + Sync + 'static,
    {
        let build: Box<Build<T>> = Box::new(build);
        let validate: Box<Validate<T>> = Box::new(validate);
        let initial = client.initial().await?;
        let environment = initial.as_ref().map(|f| f.environment.clone());
        let (value, source) =
            evaluate(&*build, &*validate, environment).map_err(|reason| ClientError::Invalid {
                application: client.application().to_owned(),
                reason,
            })?;
        let inner = Arc::new(Inner {
            client,
            value: watch::Sender::new(Arc::new(value)),
            changes: broadcast::channel(64).0,
            rejections: broadcast::channel(64).0,
            build,
            validate,
            state: Mutex::new(Seen {
                latest: initial,
                applied: source.properties().to_vec(),
            }),
        });
        if inner.client.follows() {
            tokio::spawn(follow(Arc::downgrade(&inner)));
        }
        Ok(LiveConfig { inner })
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.inner.value.borrow().clone()
    }

    /// A receiver that sees every new value.
    pub fn subscribe(&self) -> watch::Receiver<Arc<T>> {
        self.inner.value.subscribe()
    }

    /// The keys of each applied change.
    pub fn changes(&self) -> broadcast::Receiver<Changed> {
        self.inner.changes.subscribe()
    }

    /// Each configuration received and rejected.
    pub fn rejections(&self) -> broadcast::Receiver<Rejected> {
        self.inner.rejections.subscribe()
    }

    /// Fetches now and applies the result; returns the keys that changed. A rejected
    /// configuration is an error and changes nothing.
    pub async fn refresh(&self) -> Result<Vec<String>, BoxError> {
        let fetched = self.inner.client.fetch_once().await?;
        self.inner.apply(fetched).map_err(Into::into)
    }

    /// Builds the value again from the configuration last fetched (no request), for when
    /// what the build reads besides the server has changed (properties set through a
    /// bus); subscribers see the new value. A value the build or validation rejects is
    /// logged and the current one kept. Holds the live configuration weakly: once the
    /// last [`LiveConfig`] is dropped, it does nothing.
    pub fn rebuilder(&self) -> impl Fn() + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        move || {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let latest = inner.latest();
            match evaluate(
                &*inner.build,
                &*inner.validate,
                latest.map(|f| f.environment),
            ) {
                Ok((value, _)) => {
                    inner.value.send_replace(Arc::new(value));
                }
                Err(reason) => tracing::warn!(
                    application = inner.client.application(),
                    %reason,
                    "configuration rebuilt and rejected; keeping the previous one"
                ),
            }
        }
    }

    /// [`refresh`](Self::refresh) as a hook for msa's `POST /actuator/refresh`.
    pub fn refresh_hook(&self) -> impl RefreshHook {
        let live = self.clone();
        move || {
            let live = live.clone();
            async move { live.refresh().await }
        }
    }
}

/// Follows the server until the last [`LiveConfig`] is dropped.
async fn follow<T>(inner: Weak<Inner<T>>)
where
    T: Send + Sync + 'static,
{
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
    let mut failing = false;
    loop {
        let Some(live) = inner.upgrade() else { return };
        let client = live.client.clone();
        let latest = live.latest();
        drop(live);
        let next = match &latest {
            Some(latest) => client.next(latest).await,
            // Started without the server: fetch until it answers.
            None => client
                .fetch_once()
                .await
                .map(Some)
                .map_err(|e| e.to_string()),
        };
        match next {
            Ok(None) => {}
            Ok(Some(fetched)) => {
                let Some(live) = inner.upgrade() else { return };
                let environment = fetched.environment.clone();
                if live.apply(fetched).is_ok() {
                    // The last known good copy is the configuration in use.
                    client.save(&environment).await;
                }
                backoff.reset();
                failing = false;
            }
            Err(reason) => {
                if !failing {
                    tracing::warn!(%reason, "config server unreachable; keeping the current configuration");
                    failing = true;
                }
                backoff.wait().await;
            }
        }
    }
}
