//! Sagas: a business transaction across services as a sequence of local steps, each with a
//! compensation that undoes it. An [`Orchestrator`] runs named [`Saga`]s step by step,
//! persists where each stands after every step (`msa_sagas`), applies per-step timeouts,
//! and when a step fails compensates the completed steps in reverse order. An instance
//! that dies mid-saga leaves a lease that runs out; another instance (or the same one
//! restarted) resumes the saga from its last persisted step.
//!
//! A step is either a **call** (an async function: an HTTP request to the service that
//! owns the data, typically) or a **command** sent through the outbox to a participant
//! that answers with a reply message ([`reply`]), which the orchestrator's service hands
//! to [`Orchestrator::handle_reply`]. Steps may run more than once (an instance dies after
//! a step's effect and before recording it), so they and their compensations must be
//! idempotent: [`StepContext::idempotency_key`] names one execution of a step.
//!
//! When a step fails (its participant said no), the steps before it are compensated; when
//! it times out, its own effect is uncertain, so it is compensated too. A compensation that
//! keeps failing is retried with a growing delay, then the saga is `FAILED` for an
//! operator to see at `/actuator/sagas` ([`Orchestrator::report`]).
//!
//! ```
//! use msa_events::saga::{Orchestrator, Saga, Status};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Clone, Serialize, Deserialize)]
//! struct Trip { hotel: Option<String> }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), msa_events::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let store = msa_events::Store::connect(&format!("sqlite://{}/trips.db", dir.path().display())).await?;
//! let book = Saga::<Trip>::new("book-trip")
//!     .step("hotel", |_, mut trip: Trip| async move {
//!         trip.hotel = Some("H-1".into());
//!         Ok::<_, String>(trip)
//!     })
//!     .compensate(|_, mut trip: Trip| async move {
//!         trip.hotel = None;
//!         Ok::<_, String>(trip)
//!     })
//!     .step("flight", |_, _trip: Trip| async move { Err::<Trip, _>("no seats") });
//! let orchestrator = Orchestrator::new(store).saga(book);
//! orchestrator.start("book-trip", "trip-1", Trip { hotel: None }).await?;
//! let trip = orchestrator.wait("trip-1", std::time::Duration::from_secs(5)).await?;
//! assert_eq!(trip.status, Status::Compensated);
//! assert_eq!(trip.error.as_deref(), Some("flight: no seats"));
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use msa_stream::message::{Headers, JSON, Message};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::watch;
use tracing::Instrument;

use crate::Error;
use crate::store::{Backend, Store, now_ms};
use crate::wake::TaskHandle;

/// The header carrying a saga's id on its commands and their replies.
pub const SAGA_ID: &str = "msa-saga-id";
/// The header naming the saga step a command or reply belongs to.
pub const SAGA_STEP: &str = "msa-saga-step";
/// The header naming the binding a participant sends its reply through.
pub const SAGA_REPLY_TO: &str = "msa-saga-reply-to";
/// The header of a reply: `success` or `failure`.
pub const SAGA_OUTCOME: &str = "msa-saga-outcome";

/// The longest saga id.
pub const MAX_ID: usize = 255;
/// The most history entries kept per saga (the newest).
const MAX_HISTORY: usize = 100;
/// The longest error kept per saga.
const MAX_ERROR: usize = 1024;

/// Where a saga stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Running its steps forward.
    Running,
    /// A step failed: undoing the completed ones, newest first.
    Compensating,
    /// Every step succeeded.
    Completed,
    /// A step failed and every completed step was undone.
    Compensated,
    /// A compensation kept failing: an operator must look.
    Failed,
}

impl Status {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Compensating => "COMPENSATING",
            Status::Completed => "COMPLETED",
            Status::Compensated => "COMPENSATED",
            Status::Failed => "FAILED",
        }
    }

    fn parse(stored: &str) -> Result<Status, Error> {
        Ok(match stored {
            "RUNNING" => Status::Running,
            "COMPENSATING" => Status::Compensating,
            "COMPLETED" => Status::Completed,
            "COMPENSATED" => Status::Compensated,
            "FAILED" => Status::Failed,
            other => return Err(Error::Invalid(format!("saga status {other:?}"))),
        })
    }

    /// Whether the saga has finished (completed, compensated or failed).
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Running | Status::Compensating)
    }
}

/// What a step is told about the execution it is part of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepContext {
    /// The saga's id.
    pub saga_id: String,
    /// The step's name.
    pub step: String,
    /// Which attempt of the step (or its compensation) this is: 1 for the first.
    pub attempt: u32,
    /// For a compensation: why the saga is compensating.
    pub error: Option<String>,
}

impl StepContext {
    /// `<saga id>:<step>`: the same for every execution of the step, to let the service
    /// the step calls recognise a repeat.
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.saga_id, self.step)
    }
}

/// Why a step did not succeed: it failed (the saga compensates), or it asks to be run
/// again later (a participant that is away: the saga waits, holding what it has done).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepError {
    /// The step failed for good: compensate.
    Failed(String),
    /// Try the step again after `after` (the resumer runs it then); the saga stays where it
    /// is meanwhile.
    RetryLater {
        /// Why.
        reason: String,
        /// How long to wait.
        after: Duration,
    },
}

impl StepError {
    /// A failure: the saga compensates.
    pub fn failed(reason: impl fmt::Display) -> StepError {
        StepError::Failed(reason.to_string())
    }

    /// Run the step again after `after`.
    pub fn retry_later(reason: impl fmt::Display, after: Duration) -> StepError {
        StepError::RetryLater {
            reason: reason.to_string(),
            after,
        }
    }
}

impl From<String> for StepError {
    fn from(reason: String) -> Self {
        StepError::Failed(reason)
    }
}

impl From<&str> for StepError {
    fn from(reason: &str) -> Self {
        StepError::Failed(reason.to_owned())
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::Failed(reason) => f.write_str(reason),
            StepError::RetryLater { reason, after } => {
                write!(f, "{reason} (trying again in {after:?})")
            }
        }
    }
}

/// Saga data: carried from step to step, persisted as JSON after each.
pub trait SagaData: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> SagaData for T {}

type Call<D> =
    Arc<dyn Fn(StepContext, D) -> BoxFuture<'static, Result<D, StepError>> + Send + Sync>;
type MakeCommand<D> = Arc<dyn Fn(&StepContext, &D) -> Result<Message<Value>, String> + Send + Sync>;
type OnReply<D> = Arc<dyn Fn(D, Value) -> Result<D, String> + Send + Sync>;

enum Action<D> {
    Call(Call<D>),
    Command {
        binding: String,
        make: MakeCommand<D>,
        on_reply: OnReply<D>,
    },
}

struct StepDef<D> {
    name: String,
    action: Action<D>,
    compensation: Option<Call<D>>,
    timeout: Duration,
}

/// A saga's definition: named steps in order, each with an optional compensation and a
/// timeout (30 s unless set).
pub struct Saga<D> {
    name: String,
    steps: Vec<StepDef<D>>,
}

impl<D> fmt::Debug for Saga<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let steps: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("Saga")
            .field("name", &self.name)
            .field("steps", &steps)
            .finish()
    }
}

fn call<D, F, Fut, E>(f: F) -> Call<D>
where
    F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<D, E>> + Send + 'static,
    E: Into<StepError>,
{
    Arc::new(move |context, data| {
        let future = f(context, data);
        Box::pin(async move { future.await.map_err(Into::into) })
    })
}

impl<D: SagaData> Saga<D> {
    /// A saga named `name` (1 to 255 bytes), with no steps yet.
    pub fn new(name: &str) -> Saga<D> {
        Saga {
            name: name.to_owned(),
            steps: Vec::new(),
        }
    }

    /// Adds a step that runs `action` (an HTTP call, a local transaction): `Ok` with the
    /// data for the next step, or why it failed.
    pub fn step<F, Fut, E>(mut self, name: &str, action: F) -> Saga<D>
    where
        F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D, E>> + Send + 'static,
        E: Into<StepError>,
    {
        self.steps.push(StepDef {
            name: name.to_owned(),
            action: Action::Call(call(action)),
            compensation: None,
            timeout: Duration::from_secs(30),
        });
        self
    }

    /// Adds a step that sends the command `make` builds through `binding` (by the outbox,
    /// with the saga's headers) and waits for the participant's [`reply`]; `on_reply`
    /// folds a successful reply's payload into the data.
    pub fn command<M, R>(mut self, name: &str, binding: &str, make: M, on_reply: R) -> Saga<D>
    where
        M: Fn(&StepContext, &D) -> Result<Message<Value>, String> + Send + Sync + 'static,
        R: Fn(D, Value) -> Result<D, String> + Send + Sync + 'static,
    {
        self.steps.push(StepDef {
            name: name.to_owned(),
            action: Action::Command {
                binding: binding.to_owned(),
                make: Arc::new(make),
                on_reply: Arc::new(on_reply),
            },
            compensation: None,
            timeout: Duration::from_secs(30),
        });
        self
    }

    /// Sets the compensation of the step added last: what undoes it.
    pub fn compensate<F, Fut, E>(mut self, compensation: F) -> Saga<D>
    where
        F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<D, E>> + Send + 'static,
        E: Into<StepError>,
    {
        if let Some(step) = self.steps.last_mut() {
            step.compensation = Some(call(compensation));
        }
        self
    }

    /// Sets the timeout of the step added last (and of its compensation).
    pub fn timeout(mut self, timeout: Duration) -> Saga<D> {
        if let Some(step) = self.steps.last_mut() {
            step.timeout = timeout;
        }
        self
    }
}

/// A saga definition with its data as JSON, so that one orchestrator runs sagas of any
/// data type.
trait Definition: Send + Sync {
    fn len(&self) -> usize;
    fn step_name(&self, step: usize) -> &str;
    fn timeout(&self, step: usize) -> Duration;
    /// Runs a call step; `None` for a command step.
    fn run(&self, step: usize, context: StepContext, data: Value) -> Option<Running>;
    /// A command step's binding and message.
    fn command(
        &self,
        step: usize,
        context: &StepContext,
        data: &Value,
    ) -> Option<Result<(String, Message<Value>), String>>;
    fn reply(&self, step: usize, data: Value, reply: Value) -> Result<Value, String>;
    fn compensate(&self, step: usize, context: StepContext, data: Value) -> Option<Running>;
}

type Running = BoxFuture<'static, Result<Value, StepError>>;

fn decode<D: DeserializeOwned>(data: Value) -> Result<D, String> {
    serde_json::from_value(data).map_err(|e| format!("the saga's data does not decode: {e}"))
}

fn encode<D: Serialize>(data: &D) -> Result<Value, String> {
    serde_json::to_value(data).map_err(|e| format!("the saga's data does not encode: {e}"))
}

fn run_call<D: SagaData>(call: &Call<D>, context: StepContext, data: Value) -> Running {
    let call = call.clone();
    Box::pin(async move {
        let data = decode::<D>(data)?;
        let data = call(context, data).await?;
        Ok(encode(&data)?)
    })
}

impl<D: SagaData> Definition for Saga<D> {
    fn len(&self) -> usize {
        self.steps.len()
    }

    fn step_name(&self, step: usize) -> &str {
        self.steps.get(step).map_or("", |s| s.name.as_str())
    }

    fn timeout(&self, step: usize) -> Duration {
        self.steps.get(step).map_or(Duration::ZERO, |s| s.timeout)
    }

    fn run(&self, step: usize, context: StepContext, data: Value) -> Option<Running> {
        match &self.steps.get(step)?.action {
            Action::Call(call) => Some(run_call(call, context, data)),
            Action::Command { .. } => None,
        }
    }

    fn command(
        &self,
        step: usize,
        context: &StepContext,
        data: &Value,
    ) -> Option<Result<(String, Message<Value>), String>> {
        match &self.steps.get(step)?.action {
            Action::Call(_) => None,
            Action::Command { binding, make, .. } => Some(
                decode::<D>(data.clone())
                    .and_then(|data| make(context, &data))
                    .map(|message| (binding.clone(), message)),
            ),
        }
    }

    fn reply(&self, step: usize, data: Value, reply: Value) -> Result<Value, String> {
        match self.steps.get(step).map(|s| &s.action) {
            Some(Action::Command { on_reply, .. }) => encode(&on_reply(decode(data)?, reply)?),
            _ => Err("not a command step".to_owned()),
        }
    }

    fn compensate(&self, step: usize, context: StepContext, data: Value) -> Option<Running> {
        let compensation = self.steps.get(step)?.compensation.as_ref()?;
        Some(run_call(compensation, context, data))
    }
}

/// A saga as `/actuator/sagas` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SagaInfo {
    /// Its id.
    pub id: String,
    /// The saga's name.
    #[serde(rename = "type")]
    pub saga_type: String,
    /// Where it stands.
    pub status: Status,
    /// The step it is at (running or compensating), if any.
    pub step: Option<String>,
    /// Why it is compensating, compensated or failed.
    pub error: Option<String>,
    /// Attempts at the current step.
    pub attempts: u32,
    /// When a command step started waiting for its reply (ms since the epoch).
    pub waiting_since: Option<i64>,
    /// When the current step times out.
    pub deadline: Option<i64>,
    /// What happened, step by step (the newest 100 entries).
    pub history: Vec<Value>,
    /// Its data.
    pub data: Value,
    /// When it started.
    pub created_at: i64,
    /// When it last changed.
    pub updated_at: i64,
}

/// One saga row.
struct SagaRow {
    id: String,
    saga_type: String,
    status: Status,
    step: i64,
    data: Value,
    error: Option<String>,
    waiting_since: Option<i64>,
    deadline: Option<i64>,
    attempts: i64,
    history: Vec<Value>,
    created_at: i64,
    updated_at: i64,
    /// The trace it was started in.
    traceparent: Option<String>,
}

const COLUMNS: &str = "id, saga_type, status, step, data, error, waiting_since, deadline, \
                       attempts, history, created_at, updated_at, traceparent";

impl SagaRow {
    fn read(row: &AnyRow) -> Result<SagaRow, Error> {
        let data: String = row.try_get(4)?;
        let history: String = row.try_get(9)?;
        Ok(SagaRow {
            id: row.try_get(0)?,
            saga_type: row.try_get(1)?,
            status: Status::parse(&row.try_get::<String, _>(2)?)?,
            step: row.try_get(3)?,
            data: serde_json::from_str(&data).unwrap_or(Value::Null),
            error: row.try_get(5)?,
            waiting_since: row.try_get(6)?,
            deadline: row.try_get(7)?,
            attempts: row.try_get(8)?,
            history: serde_json::from_str(&history).unwrap_or_default(),
            created_at: row.try_get(10)?,
            updated_at: row.try_get(11)?,
            traceparent: row.try_get(12)?,
        })
    }

    fn info(self, definition: Option<&dyn Definition>) -> SagaInfo {
        let step = usize::try_from(self.step).ok().and_then(|step| {
            let name = definition?.step_name(step);
            (!self.status.is_final() && !name.is_empty()).then(|| name.to_owned())
        });
        SagaInfo {
            id: self.id,
            saga_type: self.saga_type,
            status: self.status,
            step,
            error: self.error,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            waiting_since: self.waiting_since,
            deadline: self.deadline,
            history: self.history,
            data: self.data,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// What an advance of a saga writes.
#[derive(Default)]
struct Change {
    status: Option<Status>,
    step: Option<i64>,
    data: Option<Value>,
    error: Option<String>,
    attempts: Option<i64>,
    /// `Some(None)` clears.
    waiting_since: Option<Option<i64>>,
    deadline: Option<Option<i64>>,
    history: Option<Value>,
    /// Gives up the lease (the saga waits for a reply, or has finished).
    release: bool,
    /// Gives up the lease until then: the step runs again at that time.
    retry_at: Option<i64>,
}

/// Runs sagas: see the [module](self). Cheap to clone.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    sagas: HashMap<String, Arc<dyn Definition>>,
    owner: String,
    lease: Duration,
    poll: Duration,
    reply_to: Option<String>,
    compensation_attempts: u32,
    /// Sagas this process is advancing now.
    advancing: Mutex<HashSet<String>>,
    /// Changes whenever a saga of this process changes, for [`Orchestrator::wait`].
    changed: watch::Sender<u64>,
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sagas: Vec<&String> = self.inner.sagas.keys().collect();
        sagas.sort();
        f.debug_struct("Orchestrator")
            .field("sagas", &sagas)
            .field("owner", &self.inner.owner)
            .field("lease", &self.inner.lease)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator keeping sagas in `store`: a 10 s lease on a saga it advances
    /// (renewed while a step runs), due sagas looked for every second, five attempts at a
    /// compensation.
    pub fn new(store: Store) -> Orchestrator {
        Orchestrator {
            inner: Arc::new(Inner {
                store,
                sagas: HashMap::new(),
                owner: msa_stream::message::random_id(),
                lease: Duration::from_secs(10),
                poll: Duration::from_secs(1),
                reply_to: None,
                compensation_attempts: 5,
                advancing: Mutex::default(),
                changed: watch::Sender::new(0),
            }),
        }
    }

    fn configure(mut self, change: impl FnOnce(&mut Inner)) -> Orchestrator {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => change(inner),
            None => tracing::warn!("an orchestrator configured after it was cloned: ignored"),
        }
        self
    }

    /// Runs sagas defined by `saga` (configure before cloning or starting).
    pub fn saga<D: SagaData>(self, saga: Saga<D>) -> Orchestrator {
        self.configure(|inner| {
            inner.sagas.insert(saga.name.clone(), Arc::new(saga));
        })
    }

    /// How long another instance waits before resuming a saga this one was advancing.
    pub fn lease(self, lease: Duration) -> Orchestrator {
        self.configure(|inner| inner.lease = lease)
    }

    /// How often [`spawn`](Self::spawn)'s loop looks for sagas to resume.
    pub fn poll(self, poll: Duration) -> Orchestrator {
        self.configure(|inner| inner.poll = poll)
    }

    /// The binding participants send replies through (the [`SAGA_REPLY_TO`] header on
    /// commands).
    pub fn reply_to(self, binding: &str) -> Orchestrator {
        self.configure(|inner| inner.reply_to = Some(binding.to_owned()))
    }

    /// How many times a compensation is tried before the saga is `FAILED`.
    pub fn compensation_attempts(self, attempts: u32) -> Orchestrator {
        self.configure(|inner| inner.compensation_attempts = attempts.max(1))
    }

    fn definition(&self, saga: &str) -> Result<Arc<dyn Definition>, Error> {
        self.inner
            .sagas
            .get(saga)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("no saga named {saga:?} is registered")))
    }

    /// Starts saga `saga` with id `id` and `data`, and advances it on a task. Starting an
    /// id that exists does nothing (a retried request starts one saga).
    pub async fn start<D: SagaData>(&self, saga: &str, id: &str, data: D) -> Result<(), Error> {
        let mut tx = self.inner.store.begin().await?;
        let started = self.start_in(&mut tx, saga, id, data).await?;
        tx.commit().await?;
        if started {
            self.resume(id);
        }
        Ok(())
    }

    /// Records saga `saga` with id `id` and `data` in the caller's transaction (with the
    /// rows and events that begin it), to be advanced once it commits: by
    /// [`resume`](Self::resume), or by the next look for due sagas. Whether it was new.
    pub async fn start_in<D: SagaData>(
        &self,
        tx: &mut crate::Tx,
        saga: &str,
        id: &str,
        data: D,
    ) -> Result<bool, Error> {
        self.definition(saga)?;
        if id.is_empty() || id.len() > MAX_ID {
            return Err(Error::Invalid(format!(
                "saga id {:?}: 1 to {MAX_ID} bytes",
                id.chars().take(64).collect::<String>()
            )));
        }
        let data =
            serde_json::to_string(&data).map_err(|e| Error::Invalid(format!("saga data: {e}")))?;
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO msa_sagas (id, saga_type, status, step, data, history, created_at, \
             updated_at, traceparent) VALUES ($1, $2, 'RUNNING', 0, $3, '[]', $4, $4, $5) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(saga)
        .bind(data)
        .bind(now)
        .bind(current_traceparent())
        .execute(tx.conn())
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Advances saga `id` on a task, now (after [`start_in`](Self::start_in) commits).
    pub fn resume(&self, id: &str) {
        self.kick(id);
    }

    /// Advances saga `id` on a task.
    fn kick(&self, id: &str) {
        let orchestrator = self.clone();
        let id = id.to_owned();
        // In the caller's span: a saga started by a request continues its trace.
        let span = tracing::Span::current();
        tokio::spawn(
            async move {
                if let Err(error) = orchestrator.advance(&id).await {
                    tracing::warn!(saga = %id, %error, "the saga could not advance; it will be resumed");
                }
            }
            .instrument(span),
        );
    }

    /// Saga `id` as it stands.
    pub async fn status(&self, id: &str) -> Result<Option<SagaInfo>, Error> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM msa_sagas WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.inner.store.pool())
            .await?;
        match row {
            Some(row) => {
                let row = SagaRow::read(&row)?;
                let definition = self.inner.sagas.get(&row.saga_type).cloned();
                Ok(Some(row.info(definition.as_deref())))
            }
            None => Ok(None),
        }
    }

    /// Waits until saga `id` has finished, at most `timeout`; returns it as it stands then.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<SagaInfo, Error> {
        self.wait_for(id, timeout, |saga| saga.status.is_final())
            .await
    }

    /// Waits until saga `id` is as `done` wants it (or has finished), at most `timeout`;
    /// returns it as it stands then.
    pub async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&SagaInfo) -> bool,
    ) -> Result<SagaInfo, Error> {
        let mut changed = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            changed.borrow_and_update();
            let info = self
                .status(id)
                .await?
                .ok_or_else(|| Error::Invalid(format!("no saga {id:?}")))?;
            if info.status.is_final() || done(&info) || tokio::time::Instant::now() >= deadline {
                return Ok(info);
            }
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + self.inner.poll),
                changed.changed(),
            )
            .await;
        }
    }

    /// `/actuator/sagas`: how many sagas are in each status, and the running,
    /// compensating and failed ones (the `limit` most recently changed).
    pub async fn report(&self, limit: u32) -> Result<Value, Error> {
        let counts = sqlx::query("SELECT status, COUNT(*) FROM msa_sagas GROUP BY status")
            .fetch_all(self.inner.store.pool())
            .await?;
        let mut by_status = serde_json::Map::new();
        for row in counts {
            by_status.insert(row.try_get(0)?, json!(row.try_get::<i64, _>(1)?));
        }
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM msa_sagas WHERE status IN ('RUNNING', 'COMPENSATING', 'FAILED') \
             ORDER BY updated_at DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(self.inner.store.pool())
        .await?;
        let mut sagas = Vec::with_capacity(rows.len());
        for row in &rows {
            let row = SagaRow::read(row)?;
            let definition = self.inner.sagas.get(&row.saga_type).cloned();
            sagas.push(row.info(definition.as_deref()));
        }
        Ok(json!({ "counts": by_status, "sagas": sagas }))
    }

    /// Takes the saga's lease if it is free, lapsed or this instance's; returns the row.
    async fn claim(&self, id: &str) -> Result<Option<SagaRow>, Error> {
        let now = now_ms();
        let mut tx = self.inner.store.begin().await?;
        let claimed = sqlx::query(
            "UPDATE msa_sagas SET owner = $1, lease_until = $2 WHERE id = $3 \
             AND status IN ('RUNNING', 'COMPENSATING') \
             AND (owner = $1 OR lease_until < $4)",
        )
        .bind(&self.inner.owner)
        .bind(now.saturating_add(millis(self.inner.lease)))
        .bind(id)
        .bind(now)
        .execute(tx.conn())
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM msa_sagas WHERE id = $1"))
            .bind(id)
            .fetch_one(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(Some(SagaRow::read(&row)?))
    }

    /// Writes `change` if this instance still holds the saga's lease: whether it did.
    async fn save(&self, row: &mut SagaRow, change: Change) -> Result<bool, Error> {
        let mut tx = self.inner.store.begin().await?;
        let saved = self.save_in(&mut tx, row, change, true).await?;
        tx.commit().await?;
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        Ok(saved)
    }

    async fn save_in(
        &self,
        tx: &mut crate::Tx,
        row: &mut SagaRow,
        change: Change,
        owned: bool,
    ) -> Result<bool, Error> {
        if let Some(status) = change.status {
            row.status = status;
        }
        if let Some(step) = change.step {
            row.step = step;
        }
        if let Some(data) = change.data {
            row.data = data;
        }
        if let Some(error) = change.error {
            row.error = Some(error.chars().take(MAX_ERROR).collect());
        }
        if let Some(attempts) = change.attempts {
            row.attempts = attempts;
        }
        if let Some(waiting) = change.waiting_since {
            row.waiting_since = waiting;
        }
        if let Some(deadline) = change.deadline {
            row.deadline = deadline;
        }
        if let Some(entry) = change.history {
            row.history.push(entry);
            let excess = row.history.len().saturating_sub(MAX_HISTORY);
            row.history.drain(..excess);
        }
        let release = change.release || row.status.is_final();
        let now = now_ms();
        let (lease, owner) = match change.retry_at {
            Some(at) => (at, None),
            None if release => (0, None),
            None => (
                now.saturating_add(millis(self.inner.lease)),
                Some(self.inner.owner.as_str()),
            ),
        };
        // A reply moves a waiting saga, which no instance holds.
        let owner_check = if owned {
            "AND owner = $12"
        } else {
            "AND $12 = $12"
        };
        let sql = format!(
            "UPDATE msa_sagas SET status = $1, step = $2, data = $3, error = $4, attempts = $5, \
             waiting_since = $6, deadline = $7, history = $8, updated_at = $9, lease_until = $10, \
             owner = $13 WHERE id = $11 {owner_check}"
        );
        let query = sqlx::query(&sql)
            .bind(row.status.as_str())
            .bind(row.step)
            .bind(row.data.to_string())
            .bind(row.error.clone())
            .bind(row.attempts)
            .bind(row.waiting_since)
            .bind(row.deadline)
            .bind(Value::Array(row.history.clone()).to_string())
            .bind(now)
            .bind(lease)
            .bind(&row.id)
            .bind(&self.inner.owner)
            .bind(owner);
        let saved = query.execute(tx.conn()).await?.rows_affected();
        if row.status.is_final() && saved == 1 {
            tracing::info!(saga = %row.id, kind = %row.saga_type, status = row.status.as_str(), "saga finished");
        }
        Ok(saved == 1)
    }

    /// Advances saga `id` as far as it goes now: to its end, or to a command's reply.
    async fn advance(&self, id: &str) -> Result<(), Error> {
        {
            let mut advancing = msa_core::sync::lock(&self.inner.advancing);
            if !advancing.insert(id.to_owned()) {
                return Ok(()); // already advancing here
            }
        }
        let result = self.advance_claimed(id).await;
        msa_core::sync::lock(&self.inner.advancing).remove(id);
        result
    }

    async fn advance_claimed(&self, id: &str) -> Result<(), Error> {
        let Some(row) = self.claim(id).await? else {
            return Ok(());
        };
        // A saga resumed with no request around it continues the trace it started in.
        let span = tracing::info_span!("saga", saga = %row.id, kind = %row.saga_type);
        if tracing::Span::current().is_none()
            && let Some(traceparent) = &row.traceparent
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt as _;
            let mut headers = http::HeaderMap::new();
            if let Ok(value) = http::HeaderValue::from_str(traceparent) {
                headers.insert("traceparent", value);
                let _ = span.set_parent(msa_core::telemetry::propagation::extract(&headers));
            }
        }
        self.advance_row(row).instrument(span).await
    }

    async fn advance_row(&self, mut row: SagaRow) -> Result<(), Error> {
        let id = row.id.clone();
        let id = id.as_str();
        let definition = self.definition(&row.saga_type)?;
        loop {
            let step = row.step;
            let change = match row.status {
                Status::Running if usize::try_from(step).is_ok_and(|s| s >= definition.len()) => {
                    Change {
                        status: Some(Status::Completed),
                        ..Change::default()
                    }
                }
                Status::Running => match self.forward(&definition, &mut row).await? {
                    Some(change) => change,
                    None => return Ok(()), // waiting for a reply
                },
                Status::Compensating if step < 0 => Change {
                    status: Some(Status::Compensated),
                    ..Change::default()
                },
                Status::Compensating => self.backward(&definition, &row).await,
                _ => return Ok(()),
            };
            let paused = change.retry_at.is_some() || change.release;
            if !self.save(&mut row, change).await? {
                tracing::warn!(saga = %id, "another instance took the saga over");
                return Ok(());
            }
            if row.status.is_final() || paused {
                return Ok(());
            }
        }
    }

    /// Runs the current step forward; `None` when the saga now waits for a reply.
    async fn forward(
        &self,
        definition: &Arc<dyn Definition>,
        row: &mut SagaRow,
    ) -> Result<Option<Change>, Error> {
        let index = usize::try_from(row.step).unwrap_or(0);
        let name = definition.step_name(index).to_owned();
        let timeout = definition.timeout(index);
        let context = StepContext {
            saga_id: row.id.clone(),
            step: name.clone(),
            attempt: u32::try_from(row.attempts + 1).unwrap_or(u32::MAX),
            error: None,
        };
        if let Some(running) = definition.run(index, context.clone(), row.data.clone()) {
            let outcome = self
                .with_lease(&row.id, tokio::time::timeout(timeout, running))
                .await;
            return Ok(Some(match outcome {
                Ok(Ok(data)) => Change {
                    step: Some(row.step + 1),
                    data: Some(data),
                    attempts: Some(0),
                    history: Some(entry(&name, "done", None)),
                    ..Change::default()
                },
                Ok(Err(StepError::Failed(reason))) => failed(row.step - 1, &name, &reason),
                Ok(Err(StepError::RetryLater { reason, after })) => Change {
                    attempts: Some(row.attempts + 1),
                    // Only the first of a run of retries is recorded.
                    history: (row.attempts == 0).then(|| entry(&name, "retrying", Some(&reason))),
                    retry_at: Some(now_ms().saturating_add(millis(after))),
                    ..Change::default()
                },
                Err(_) => timed_out(row.step, &name, timeout),
            }));
        }
        // A command step.
        match row.waiting_since {
            None => {
                let Some(command) = definition.command(index, &context, &row.data) else {
                    return Ok(Some(failed(row.step - 1, &name, "not a step")));
                };
                let (binding, message) = match command {
                    Ok(command) => command,
                    Err(reason) => return Ok(Some(failed(row.step - 1, &name, &reason))),
                };
                let mut message = message
                    .with_header(SAGA_ID, row.id.clone())
                    .with_header(SAGA_STEP, name.clone());
                if let Some(reply_to) = &self.inner.reply_to {
                    message = message.with_header(SAGA_REPLY_TO, reply_to.clone());
                }
                let now = now_ms();
                let mut tx = self.inner.store.begin().await?;
                tx.send(&binding, message).await?;
                let change = Change {
                    waiting_since: Some(Some(now)),
                    deadline: Some(Some(now.saturating_add(millis(timeout)))),
                    history: Some(entry(&name, "sent", None)),
                    release: true,
                    ..Change::default()
                };
                if self.save_in(&mut tx, row, change, true).await? {
                    tx.commit().await?;
                    self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
                }
                Ok(None)
            }
            Some(_) if row.deadline.is_some_and(|deadline| deadline < now_ms()) => {
                Ok(Some(timed_out(row.step, &name, timeout)))
            }
            Some(_) => {
                // Still waiting: give the lease back for the reply to find the saga free.
                let change = Change {
                    release: true,
                    ..Change::default()
                };
                self.save(row, change).await?;
                Ok(None)
            }
        }
    }

    /// Runs the current step's compensation.
    async fn backward(&self, definition: &Arc<dyn Definition>, row: &SagaRow) -> Change {
        let index = usize::try_from(row.step).unwrap_or(0);
        let name = definition.step_name(index).to_owned();
        let attempt = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
        let context = StepContext {
            saga_id: row.id.clone(),
            step: name.clone(),
            attempt,
            error: row.error.clone(),
        };
        let Some(running) = definition.compensate(index, context, row.data.clone()) else {
            return Change {
                step: Some(row.step - 1),
                attempts: Some(0),
                ..Change::default()
            };
        };
        let timeout = definition.timeout(index);
        let reason = match self
            .with_lease(&row.id, tokio::time::timeout(timeout, running))
            .await
        {
            Ok(Ok(data)) => {
                return Change {
                    step: Some(row.step - 1),
                    data: Some(data),
                    attempts: Some(0),
                    history: Some(entry(&name, "compensated", None)),
                    ..Change::default()
                };
            }
            Ok(Err(reason)) => reason.to_string(),
            Err(_) => format!("timed out after {timeout:?}"),
        };
        if attempt >= self.inner.compensation_attempts {
            return Change {
                status: Some(Status::Failed),
                error: Some(format!("compensating {name}: {reason}")),
                history: Some(entry(&name, "compensation failed", Some(&reason))),
                ..Change::default()
            };
        }
        let delay = msa_core::backoff::exponential(
            Duration::from_millis(100),
            2.0,
            attempt,
            Duration::from_secs(10),
        );
        tokio::time::sleep(delay).await;
        Change {
            attempts: Some(i64::from(attempt)),
            history: Some(entry(&name, "compensation retried", Some(&reason))),
            ..Change::default()
        }
    }

    /// Runs `work` while renewing this instance's lease on saga `id`.
    async fn with_lease<T>(&self, id: &str, work: impl Future<Output = T>) -> T {
        let renew = async {
            let every = self.inner.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                let until = now_ms().saturating_add(millis(self.inner.lease));
                let _ = sqlx::query(
                    "UPDATE msa_sagas SET lease_until = $1 WHERE id = $2 AND owner = $3",
                )
                .bind(until)
                .bind(id)
                .bind(&self.inner.owner)
                .execute(self.inner.store.pool())
                .await;
            }
        };
        tokio::select! {
            out = work => out,
            () = renew => unreachable!("renewing never ends"),
        }
    }

    /// Hands a participant's reply (a message with the [`SAGA_ID`], [`SAGA_STEP`] and
    /// [`SAGA_OUTCOME`] headers) to the saga waiting for it, and advances the saga. A reply
    /// for a step the saga is not waiting on (late, repeated) is ignored.
    pub async fn handle_reply(&self, reply: &Message<Value>) -> Result<(), Error> {
        let (Some(id), Some(step)) = (reply.headers.get(SAGA_ID), reply.headers.get(SAGA_STEP))
        else {
            return Err(Error::Invalid(
                "a saga reply without its saga's headers".into(),
            ));
        };
        let success = match reply.headers.get(SAGA_OUTCOME).map(String::as_str) {
            Some("success") => true,
            Some("failure") => false,
            other => {
                return Err(Error::Invalid(format!(
                    "saga reply outcome {other:?}: success or failure"
                )));
            }
        };
        let mut tx = self.inner.store.begin().await?;
        let lock = match self.inner.store.backend() {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM msa_sagas WHERE id = $1{lock}"
        ))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        let Some(row) = row else {
            tracing::info!(saga = %id, "a reply for an unknown saga; ignored");
            return Ok(());
        };
        let mut row = SagaRow::read(&row)?;
        let definition = self.definition(&row.saga_type)?;
        let index = usize::try_from(row.step).unwrap_or(usize::MAX);
        if row.status != Status::Running
            || row.waiting_since.is_none()
            || definition.step_name(index) != step
        {
            tracing::info!(saga = %id, step = %step, "a reply the saga is not waiting for; ignored");
            return Ok(());
        }
        let outcome = if success {
            definition.reply(index, row.data.clone(), reply.payload.clone())
        } else {
            Err(reply
                .payload
                .as_str()
                .map_or_else(|| reply.payload.to_string(), str::to_owned))
        };
        let change = match outcome {
            Ok(data) => Change {
                step: Some(row.step + 1),
                data: Some(data),
                attempts: Some(0),
                waiting_since: Some(None),
                deadline: Some(None),
                history: Some(entry(step, "done", None)),
                release: true,
                ..Change::default()
            },
            Err(reason) => Change {
                waiting_since: Some(None),
                deadline: Some(None),
                release: true,
                ..failed(row.step - 1, step, &reason)
            },
        };
        self.save_in(&mut tx, &mut row, change, false).await?;
        tx.commit().await?;
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        self.kick(id);
        Ok(())
    }

    /// Advances every saga that is due: not finished, no live lease, not waiting for a
    /// reply that may still come. Returns how many it took up.
    pub async fn resume_due(&self) -> Result<usize, Error> {
        let now = now_ms();
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM msa_sagas WHERE status IN ('RUNNING', 'COMPENSATING') \
             AND lease_until < $1 AND (waiting_since IS NULL OR deadline < $1) \
             ORDER BY updated_at LIMIT 100",
        )
        .bind(now)
        .fetch_all(self.inner.store.pool())
        .await?;
        for id in &ids {
            self.kick(id);
        }
        Ok(ids.len())
    }

    /// Resumes due sagas (those of an instance that died, those whose reply timed out)
    /// every poll interval until the returned handle is stopped.
    pub fn spawn(&self) -> TaskHandle {
        let orchestrator = self.clone();
        TaskHandle::spawn(move |mut stop| async move {
            loop {
                if let Err(error) = orchestrator.resume_due().await {
                    tracing::warn!(%error, "cannot look for sagas to resume; retrying");
                }
                tokio::select! {
                    _ = stop.wait_for(|stop| *stop) => return,
                    () = tokio::time::sleep(orchestrator.inner.poll) => {}
                }
            }
        })
    }
}

/// A participant's reply to saga command `command`: the binding to send it through (the
/// command's [`SAGA_REPLY_TO`]) and the message, `Ok` with a payload for the orchestrator's
/// `on_reply`, or `Err` with why the step failed. `None` when the command is not a saga's.
/// Send it through the outbox in the transaction that did the step's work.
pub fn reply(
    command: &Message<Value>,
    outcome: Result<Value, String>,
) -> Option<(String, Message<Value>)> {
    let headers: &Headers = &command.headers;
    let reply_to = headers.get(SAGA_REPLY_TO)?;
    let (outcome, payload) = match outcome {
        Ok(payload) => ("success", payload),
        Err(reason) => ("failure", Value::String(reason)),
    };
    let mut message = Message::new(payload)
        .with_header(SAGA_ID, headers.get(SAGA_ID)?.clone())
        .with_header(SAGA_STEP, headers.get(SAGA_STEP)?.clone())
        .with_header(SAGA_OUTCOME, outcome)
        .with_header(msa_stream::message::CONTENT_TYPE, JSON);
    message.key = command.key.clone();
    Some((reply_to.clone(), message))
}

fn entry(step: &str, outcome: &str, reason: Option<&str>) -> Value {
    let mut entry = json!({ "step": step, "outcome": outcome, "at": now_ms() });
    if let Some(reason) = reason {
        entry["reason"] = Value::String(reason.chars().take(MAX_ERROR).collect());
    }
    entry
}

/// The step failed: compensate from `from` down.
fn failed(from: i64, step: &str, reason: &str) -> Change {
    Change {
        status: Some(Status::Compensating),
        step: Some(from),
        error: Some(format!("{step}: {reason}")),
        attempts: Some(0),
        history: Some(entry(step, "failed", Some(reason))),
        ..Change::default()
    }
}

/// The step timed out: its effect is uncertain, so it is compensated too.
fn timed_out(step_index: i64, step: &str, timeout: Duration) -> Change {
    let reason = format!("timed out after {timeout:?}");
    Change {
        status: Some(Status::Compensating),
        step: Some(step_index),
        error: Some(format!("{step}: {reason}")),
        attempts: Some(0),
        waiting_since: Some(None),
        deadline: Some(None),
        history: Some(entry(step, "timed out", Some(&reason))),
        ..Change::default()
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The current span's trace as a W3C `traceparent`, if there is one.
fn current_traceparent() -> Option<String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    msa_core::telemetry::propagation::inject(&span.context(), &mut headers);
    headers.get("traceparent")?.to_str().ok().map(str::to_owned)
}
