//! Event-sourced aggregates: the events are the state. A command is checked against the
//! state folded from the aggregate's past events and produces new events, appended at the
//! version the command saw ([`EventStore`](crate::event_store::EventStore)).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An aggregate whose state is the fold of its events.
///
/// ```
/// use msa_events::Aggregate;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Default, Serialize, Deserialize)]
/// struct Account { balance: i64 }
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(tag = "type")]
/// enum AccountEvent { Deposited { amount: i64 }, Withdrawn { amount: i64 } }
///
/// #[derive(Clone)]
/// enum Command { Deposit(i64), Withdraw(i64) }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("insufficient funds")]
/// struct Insufficient;
///
/// impl Aggregate for Account {
///     const TYPE: &'static str = "account";
///     type Command = Command;
///     type Event = AccountEvent;
///     type Error = Insufficient;
///
///     fn handle(&self, command: Command) -> Result<Vec<AccountEvent>, Insufficient> {
///         match command {
///             Command::Deposit(amount) => Ok(vec![AccountEvent::Deposited { amount }]),
///             Command::Withdraw(amount) if amount > self.balance => Err(Insufficient),
///             Command::Withdraw(amount) => Ok(vec![AccountEvent::Withdrawn { amount }]),
///         }
///     }
///
///     fn apply(&mut self, event: &AccountEvent) {
///         match event {
///             AccountEvent::Deposited { amount } => self.balance += amount,
///             AccountEvent::Withdrawn { amount } => self.balance -= amount,
///         }
///     }
/// }
///
/// let mut account = Account::default();
/// for event in account.handle(Command::Deposit(10)).unwrap() {
///     account.apply(&event);
/// }
/// assert!(account.handle(Command::Withdraw(11)).is_err());
/// ```
pub trait Aggregate: Default + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The aggregate's type as stored and published (`order`): 1 to 255 bytes.
    const TYPE: &'static str;
    /// The version of the events' schema written now. Events written at an older version
    /// are upcast when read ([`EventStore::upcast`](crate::event_store::EventStore::upcast)).
    const EVENT_VERSION: u32 = 1;
    /// The version of the state's schema in snapshots: snapshots of another version are
    /// ignored (the state is folded from the events instead).
    const SNAPSHOT_VERSION: u32 = 1;

    /// What the aggregate is asked to do (cloned to ask again after a concurrent append).
    type Command: Clone + Send;
    /// What happened to it.
    type Event: Serialize + DeserializeOwned + Send + Sync;
    /// Why a command is refused.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The events `command` produces against this state, or why it is refused. Decides;
    /// changes nothing.
    fn handle(&self, command: Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Folds `event` into the state. Cannot fail: an event is a fact.
    fn apply(&mut self, event: &Self::Event);

    /// The event's type as stored and sent in the `msa-event-type` header, from its JSON:
    /// the `type` field of an internally tagged enum (`#[serde(tag = "type")]`), the
    /// variant of an externally tagged one (`{"Placed": {…}}`), else the aggregate's type.
    fn event_type(event: &serde_json::Value) -> String {
        match event {
            serde_json::Value::Object(fields) => match fields.get("type") {
                Some(serde_json::Value::String(name)) => name.clone(),
                _ if fields.len() == 1 => fields.keys().next().cloned().unwrap_or_default(),
                _ => Self::TYPE.to_owned(),
            },
            serde_json::Value::String(name) => name.clone(),
            _ => Self::TYPE.to_owned(),
        }
    }
}
