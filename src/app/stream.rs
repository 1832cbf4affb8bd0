//! Messaging in an `App`: the stream's bindings from the settings, its binder, its health,
//! and its place in the app's shutdown.

use std::sync::Arc;

use msa_core::actuator::{Actuator, Health};
use msa_core::settings::Settings;
use msa_stream::binder::Binder;
use msa_stream::bus::Bus;
use msa_stream::config::StreamSettings;
use msa_stream::memory::MemoryBinder;
use msa_stream::stream::{StreamBridge, StreamBuilder};

use super::{App, Error};

type Build = Box<dyn FnOnce(StreamBuilder) -> StreamBuilder + Send>;

/// What `App::stream` was given.
pub(crate) struct Wiring {
    build: Build,
    binder: Option<Arc<dyn Binder>>,
}

impl Wiring {
    /// A stream with no bindings of the app's (for the outbox relay, the bus).
    #[cfg_attr(not(feature = "events"), allow(dead_code))]
    pub(crate) fn empty() -> Wiring {
        Wiring {
            build: Box::new(|stream| stream),
            binder: None,
        }
    }
}

/// The stream's settings: `msa.stream.*` when set, else `spring.cloud.stream.*` (the same
/// keys); a mistake names the file, line and key.
fn stream_settings(settings: &Settings) -> Result<StreamSettings, Error> {
    let prefix = if settings.contains("msa.stream") {
        "msa.stream"
    } else {
        "spring.cloud.stream"
    };
    let stream: StreamSettings = settings
        .bind::<Option<StreamSettings>>(prefix)?
        .unwrap_or_default();
    stream.validate().map_err(|message| {
        let key = format!("{prefix}.{}", message.split(':').next().unwrap_or_default());
        Error::Settings(msa_core::settings::SettingsError {
            origin: settings.origin(&key),
            key,
            message,
        })
    })?;
    Ok(stream)
}

/// The binder the settings choose: `memory` (the process's), `nats` at its `url`
/// (`nats://127.0.0.1:4222` by default; msa's `nats` feature), or `rabbit` at its `url`,
/// else Spring Boot's `spring.rabbitmq.*` (msa's `rabbit` feature).
async fn binder_from(
    stream: &StreamSettings,
    settings: &Settings,
) -> Result<Arc<dyn Binder>, Error> {
    let (kind, url) = stream.default_binder();
    let invalid = |message: String| {
        Error::Settings(msa_core::settings::SettingsError {
            key: "spring.cloud.stream.default-binder".into(),
            origin: settings.origin("spring.cloud.stream.default-binder"),
            message,
        })
    };
    match kind.as_str() {
        "memory" => Ok(Arc::new(MemoryBinder::shared())),
        #[cfg(feature = "nats")]
        "nats" => {
            let url = url.unwrap_or_else(|| "nats://127.0.0.1:4222".into());
            let binder = msa_stream::nats::NatsBinder::connect(&url)
                .await
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Arc::new(binder))
        }
        #[cfg(feature = "rabbit")]
        "rabbit" => {
            let url = match url {
                Some(url) => url,
                None => settings
                    .bind::<Option<RabbitProperties>>("spring.rabbitmq")?
                    .unwrap_or_default()
                    .url(),
            };
            let binder = msa_stream::rabbit::RabbitBinder::connect(&url)
                .await
                .map_err(|e| invalid(e.to_string()))?;
            Ok(Arc::new(binder))
        }
        other => {
            let _ = url;
            let known = match (cfg!(feature = "nats"), cfg!(feature = "rabbit")) {
                (true, true) => "`memory`, `nats` and `rabbit`",
                (true, false) => "`memory` and `nats` (and `rabbit` with msa's `rabbit` feature)",
                (false, true) => "`memory` and `rabbit` (and `nats` with msa's `nats` feature)",
                (false, false) => {
                    "`memory` (and `nats`, `rabbit` with msa's features of those names)"
                }
            };
            Err(invalid(format!("binder type {other:?}: msa binds {known}")))
        }
    }
}

/// Spring Boot's `spring.rabbitmq.*`: where the `rabbit` binder connects when its binder
/// entry has no `url`.
#[cfg(feature = "rabbit")]
#[derive(serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
struct RabbitProperties {
    addresses: Option<String>,
    host: String,
    port: u16,
    username: String,
    password: String,
    virtual_host: String,
}

#[cfg(feature = "rabbit")]
impl Default for RabbitProperties {
    fn default() -> Self {
        RabbitProperties {
            addresses: None,
            host: "localhost".into(),
            port: 5672,
            username: "guest".into(),
            password: "guest".into(),
            virtual_host: "/".into(),
        }
    }
}

#[cfg(feature = "rabbit")]
impl RabbitProperties {
    /// `addresses` (its first, as a URI) or the URI the parts make.
    fn url(&self) -> String {
        if let Some(first) = self.addresses.as_deref().and_then(|a| a.split(',').next()) {
            let first = first.trim();
            return if first.contains("://") {
                first.to_owned()
            } else {
                format!(
                    "amqp://{}:{}@{first}/{}",
                    uri_part(&self.username),
                    uri_part(&self.password),
                    uri_part(&self.virtual_host)
                )
            };
        }
        format!(
            "amqp://{}:{}@{}:{}/{}",
            uri_part(&self.username),
            uri_part(&self.password),
            self.host,
            self.port,
            uri_part(&self.virtual_host)
        )
    }
}

/// `part` percent-encoded for an AMQP URI (a virtual host `/` is `%2f`).
#[cfg(feature = "rabbit")]
fn uri_part(part: &str) -> String {
    part.bytes()
        .map(|b| match b {
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') => {
                char::from(b).to_string()
            }
            b => format!("%{b:02x}"),
        })
        .collect()
}

impl App {
    /// Messaging: `build` registers the app's consumers and functions on a
    /// [`StreamBuilder`]; their bindings come from `spring.cloud.stream.bindings` (or
    /// `msa.stream.bindings`), Spring Cloud Stream's keys. The stream starts with the app,
    /// its binder's health is the `binders` component of `/actuator/health`, and on
    /// shutdown it stops fetching, finishes and acknowledges what it holds before the
    /// listener drains. Without a broker binder ([`binder`](Self::binder)), the process's
    /// in-memory binder: apps in one process share its destinations.
    ///
    /// ```no_run
    /// use msa::stream::message::Message;
    ///
    /// # #[derive(serde::Deserialize)] struct OrderPlaced { id: u64 }
    /// # async fn run() -> Result<(), msa::Error> {
    /// msa::App::from_settings()
    ///     .stream(|stream| {
    ///         stream.consumer("billing", |order: Message<OrderPlaced>| async move {
    ///             tracing::info!(id = order.payload.id, "billing");
    ///             Ok::<_, String>(())
    ///         })
    ///     })
    ///     .run()
    ///     .await
    /// # }
    /// ```
    pub fn stream(
        mut self,
        build: impl FnOnce(StreamBuilder) -> StreamBuilder + Send + 'static,
    ) -> Self {
        let binder = self.stream.take().and_then(|w| w.binder);
        self.stream = Some(Wiring {
            build: Box::new(build),
            binder,
        });
        self
    }

    /// The binder the app's stream uses (a broker's), instead of the in-memory one.
    pub fn binder(mut self, binder: impl Binder) -> Self {
        let wiring = self.stream.take().unwrap_or_else(|| Wiring {
            build: Box::new(|stream| stream),
            binder: None,
        });
        self.stream = Some(Wiring {
            binder: Some(Arc::new(binder)),
            ..wiring
        });
        self
    }

    /// A handle for sending through the app's stream from handlers made before it starts
    /// (Spring's `StreamBridge`): `bridge.send("orders", event).await`.
    pub fn stream_bridge(&self) -> StreamBridge {
        self.bridge.clone()
    }

    /// Starts the stream, when the app has one.
    pub(super) async fn start_stream(&mut self, settings: &Settings) -> Result<(), Error> {
        let Some(wiring) = self.stream.take() else {
            return Ok(());
        };
        let mut stream_settings = stream_settings(settings)?;
        let binder = match wiring.binder {
            Some(binder) => binder,
            None => binder_from(&stream_settings, settings).await?,
        };
        let bus = if settings
            .bind::<Option<bool>>("spring.cloud.bus.enabled")?
            .unwrap_or(true)
        {
            let id = match settings.bind::<Option<String>>("spring.cloud.bus.id")? {
                Some(id) => id,
                None => Bus::id_for(&self.name, settings.active_profiles()),
            };
            Bus::bindings(&mut stream_settings);
            Some(Bus::new(id, self.bridge.clone()))
        } else {
            None
        };
        let mut builder = (wiring.build)(StreamBuilder::on(binder.clone(), stream_settings));
        if let Some(bus) = bus {
            let listener = super::bus::listener(self.actuator.refresher(), self.overrides.clone());
            builder = bus.consume(builder, listener.clone());
            tracing::debug!(id = bus.id(), "on the bus");
            self.actuator = std::mem::replace(&mut self.actuator, Actuator::new(""))
                .operations(super::bus::routes(bus, listener));
        }
        let stream = builder.start().await?;
        self.bridge.connect(stream.clone());
        let checked = binder.clone();
        self.actuator = std::mem::replace(&mut self.actuator, Actuator::new(""))
            .health_indicator_in("binders", &[], move || {
                let binder = checked.clone();
                async move {
                    let health = match binder.check().await {
                        Ok(()) => Health::up(),
                        Err(error) => Health::down().with_detail("error", error.to_string()),
                    };
                    health.with_detail("binder", binder.name().to_owned())
                }
            });
        self.shutdown.before_drain("stream", move || async move {
            stream.shutdown().await;
        });
        Ok(())
    }
}
