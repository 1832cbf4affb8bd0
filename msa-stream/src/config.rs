//! Bindings from configuration, in Spring Cloud Stream's vocabulary: `msa.stream.*` or
//! `spring.cloud.stream.*` (the same keys).
//!
//! ```yaml
//! spring.cloud.stream:
//!   bindings:
//!     placed-in-0:                       # the consumer `placed`, its first input
//!       destination: orders
//!       group: billing
//!       consumer: { max-attempts: 4, back-off-initial-interval: 100, concurrency: 4 }
//!     placed-out-0:
//!       destination: invoices
//!       producer: { partition-count: 4 }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Every binding's settings, and what they share.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct StreamSettings {
    /// Bindings by name (`<fn>-in-<n>`, `<fn>-out-<n>`, or a name given to `send`).
    pub bindings: BTreeMap<String, BindingSettings>,
    /// This instance's index among the instances of its app (`instance-index`).
    pub instance_index: Option<u32>,
    /// How many instances the app runs (`instance-count`).
    pub instance_count: Option<u32>,
    /// The binder used by bindings that name none (a name under `binders`, or a type:
    /// `memory`, `nats`).
    pub default_binder: Option<String>,
    /// Binders by name: their type and where their broker is.
    pub binders: BTreeMap<String, BinderSettings>,
}

/// One binder (Spring's `binders.<name>.type`; msa takes the broker's address as `url`
/// instead of Spring's `environment` block).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct BinderSettings {
    /// `memory` or `nats`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The broker's address (`nats://127.0.0.1:4222`).
    pub url: Option<String>,
}

impl StreamSettings {
    /// The default binder's type and address: `default-binder` names an entry of
    /// `binders` (or a type), else the only entry there is, else `memory`.
    pub fn default_binder(&self) -> (String, Option<String>) {
        let named = self
            .default_binder
            .as_ref()
            .and_then(|name| self.binders.get(name).map(|b| (name, b)))
            .or_else(|| {
                (self.binders.len() == 1)
                    .then(|| self.binders.iter().next())
                    .flatten()
            });
        match named {
            Some((name, binder)) => (
                binder.kind.clone().unwrap_or_else(|| name.clone()),
                binder.url.clone(),
            ),
            None => (
                self.default_binder
                    .clone()
                    .unwrap_or_else(|| "memory".into()),
                None,
            ),
        }
    }
}

/// One binding.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct BindingSettings {
    /// The destination (topic, exchange, subject); default: the binding's name.
    pub destination: Option<String>,
    /// The consumer group: a durable subscription shared by the group's instances.
    pub group: Option<String>,
    /// The content type written (and assumed for messages without one); JSON by default.
    pub content_type: Option<String>,
    /// The binder, when several are configured.
    pub binder: Option<String>,
    /// Consumer settings (inputs).
    pub consumer: ConsumerSettings,
    /// Producer settings (outputs).
    pub producer: ProducerSettings,
}

/// An input's settings; Spring Cloud Stream's defaults.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConsumerSettings {
    /// Attempts in all, the first included (3); 1 turns retries off.
    pub max_attempts: u32,
    /// The wait before the first retry (1 s; a bare number is milliseconds).
    #[serde(with = "msa_core::duration")]
    pub back_off_initial_interval: Duration,
    /// How much each wait grows (2.0).
    pub back_off_multiplier: f64,
    /// The longest wait (10 s).
    #[serde(with = "msa_core::duration")]
    pub back_off_max_interval: Duration,
    /// Messages handled at once by this instance (1); messages with one key are handled
    /// in order whatever the concurrency.
    pub concurrency: u32,
    /// Whether the input is partitioned: this instance then receives only its partitions.
    pub partitioned: bool,
    /// This instance's index (over the stream-wide `instance-index`).
    pub instance_index: Option<u32>,
    /// The group's instance count (over the stream-wide `instance-count`).
    pub instance_count: Option<u32>,
    /// Partitions of a partitioned input (the producers' `partition-count`).
    pub partition_count: Option<u32>,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            max_attempts: 3,
            back_off_initial_interval: Duration::from_secs(1),
            back_off_multiplier: 2.0,
            back_off_max_interval: Duration::from_secs(10),
            concurrency: 1,
            partitioned: false,
            instance_index: None,
            instance_count: None,
            partition_count: None,
        }
    }
}

/// An output's settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct ProducerSettings {
    /// The header whose value is the partition key, when messages carry no key of their
    /// own (Spring's `partition-key-expression: headers['orderId']`).
    pub partition_key: Option<String>,
    /// Partitions of the destination (1: not partitioned).
    pub partition_count: Option<u32>,
}

/// The most bindings, concurrency and partitions settings may ask for: a mistake (an extra
/// zero) is refused instead of spawning a million tasks.
pub const MAX_CONCURRENCY: u32 = 256;
/// The most partitions a destination may have.
pub const MAX_PARTITIONS: u32 = 4096;

impl StreamSettings {
    /// The binding called `name` (its defaults when the settings do not mention it).
    pub fn binding(&self, name: &str) -> BindingSettings {
        self.bindings.get(name).cloned().unwrap_or_default()
    }

    /// Checks every binding: attempts, multipliers, concurrency and partitions in range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, binding) in &self.bindings {
            let key = |k: &str| format!("bindings.{name}.{k}");
            let c = &binding.consumer;
            if c.max_attempts == 0 {
                return Err(format!(
                    "{}: must be at least 1",
                    key("consumer.max-attempts")
                ));
            }
            if !(c.back_off_multiplier.is_finite() && c.back_off_multiplier >= 1.0) {
                return Err(format!(
                    "{}: {} is not a finite number of at least 1",
                    key("consumer.back-off-multiplier"),
                    c.back_off_multiplier
                ));
            }
            if !(1..=MAX_CONCURRENCY).contains(&c.concurrency) {
                return Err(format!(
                    "{}: {} is not within 1..={MAX_CONCURRENCY}",
                    key("consumer.concurrency"),
                    c.concurrency
                ));
            }
            for (k, count) in [
                ("consumer.partition-count", c.partition_count),
                ("producer.partition-count", binding.producer.partition_count),
            ] {
                if let Some(count) = count
                    && !(1..=MAX_PARTITIONS).contains(&count)
                {
                    return Err(format!(
                        "{}: {count} is not within 1..={MAX_PARTITIONS}",
                        key(k)
                    ));
                }
            }
        }
        Ok(())
    }
}
