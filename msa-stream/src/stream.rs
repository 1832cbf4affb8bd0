//! The typed, functional API: consumers and functions registered by name, bound from the
//! settings, and `send` for imperative sends (Spring's `StreamBridge`).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::binder::{Binder, BinderError, ConsumerOptions, Delivery, Producer, ProducerOptions};
use crate::config::{BindingSettings, StreamSettings};
use crate::message::{
    ATTEMPTS, CONTENT_TYPE, EXCEPTION_KIND, EXCEPTION_MESSAGE, Envelope, Headers, JSON, Message,
    ORIGINAL_DESTINATION,
};
use crate::metrics;

/// Why the stream could not start or send.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The broker failed.
    #[error(transparent)]
    Binder(#[from] BinderError),
    /// The settings do not hold together.
    #[error("stream settings: {0}")]
    Settings(String),
    /// The payload does not encode.
    #[error("cannot encode the payload for {binding}: {reason}")]
    Encode {
        /// The binding sent to.
        binding: String,
        /// Why.
        reason: String,
    },
    /// The stream has shut down.
    #[error("the stream has shut down")]
    Closed,
    /// The stream has not started yet (a [`StreamBridge`] used before its app started).
    #[error("the stream has not started yet")]
    NotStarted,
}

/// The longest failure reason put in a dead letter's headers.
pub const MAX_REASON: usize = 1024;

/// Messages an input's consumer may hold unsettled, at least (twice its concurrency when
/// that is more): enough that fetching keeps ahead of handling.
pub const MIN_PREFETCH: u32 = 256;

/// Why one attempt failed.
enum Failure {
    /// The payload does not decode: no retry can help.
    Decode(String),
    /// The handler failed (or panicked).
    Handler(String),
}

type Output = Option<(String, Envelope)>;
type Handled = Pin<Box<dyn Future<Output = Result<Output, Failure>> + Send>>;
type Handler = Arc<dyn Fn(&Envelope) -> Handled + Send + Sync>;

struct Input {
    binding: String,
    handler: Handler,
}

/// Builds a [`Stream`]: consumers and functions by name, then [`start`](Self::start).
pub struct StreamBuilder {
    binder: Arc<dyn Binder>,
    settings: StreamSettings,
    inputs: Vec<Input>,
}

impl fmt::Debug for StreamBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamBuilder")
            .field("binder", &self.binder.name())
            .field(
                "inputs",
                &self.inputs.iter().map(|i| &i.binding).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// `payload` decoded as `T` by its content type (JSON, or text for `text/plain`).
fn decode<T: DeserializeOwned>(envelope: &Envelope, default: &str) -> Result<Message<T>, Failure> {
    let content_type = envelope.content_type(default);
    let payload = if content_type.starts_with("application/json") || content_type.ends_with("+json")
    {
        serde_json::from_slice(&envelope.payload)
    } else if content_type.starts_with("text/") {
        let text = std::str::from_utf8(&envelope.payload)
            .map_err(|e| Failure::Decode(format!("not UTF-8 text: {e}")))?;
        serde_json::from_value(serde_json::Value::String(text.to_owned()))
    } else {
        return Err(Failure::Decode(format!(
            "content type {content_type:?} is not one msa decodes (JSON or text)"
        )));
    };
    let payload =
        payload.map_err(|e| Failure::Decode(format!("the payload does not decode: {e}")))?;
    Ok(Message {
        payload,
        headers: envelope.headers.clone(),
        key: envelope.key.clone(),
    })
}

/// `message` encoded as JSON in an envelope, with the current trace context in its headers.
/// `message` as binders carry it: its payload as JSON, `contentType` set (to
/// `content_type` unless the message names one) and the current trace context in its
/// headers — what [`Stream::send_message`] sends, and what an outbox stores to send later.
pub fn encode<T: Serialize>(message: Message<T>, content_type: &str) -> Result<Envelope, String> {
    let payload = serde_json::to_vec(&message.payload).map_err(|e| e.to_string())?;
    let mut headers = message.headers;
    headers
        .entry(CONTENT_TYPE.to_owned())
        .or_insert_with(|| content_type.to_owned());
    inject_trace(&mut headers);
    Ok(Envelope {
        payload: payload.into(),
        headers,
        key: message.key,
        partition: None,
    })
}

/// The current span's context as `traceparent` (and `tracestate`, `baggage`) headers.
fn inject_trace(headers: &mut Headers) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return; // no span, no context to carry
    }
    let mut map = http::HeaderMap::new();
    msa_core::telemetry::propagation::inject(&span.context(), &mut map);
    for (name, value) in &map {
        if let Ok(value) = value.to_str() {
            headers.insert(name.as_str().to_owned(), value.to_owned());
        }
    }
}

/// The producer's context from a message's headers.
fn extract_trace(headers: &Headers) -> opentelemetry::Context {
    let mut map = http::HeaderMap::new();
    for name in ["traceparent", "tracestate", "baggage"] {
        if let Some(value) = headers.get(name)
            && let Ok(value) = http::HeaderValue::from_str(value)
        {
            map.insert(name, value);
        }
    }
    msa_core::telemetry::propagation::extract(&map)
}

impl StreamBuilder {
    /// A stream on `binder` with `settings`.
    pub fn new(binder: impl Binder, settings: StreamSettings) -> Self {
        Self::on(Arc::new(binder), settings)
    }

    /// A stream on a binder shared with others.
    pub fn on(binder: Arc<dyn Binder>, settings: StreamSettings) -> Self {
        StreamBuilder {
            binder,
            settings,
            inputs: Vec::new(),
        }
    }

    /// A consumer called `name`: it handles the messages of binding `<name>-in-0` as `T`.
    /// An error (or a panic) is retried with backoff, then dead-lettered with the reason.
    pub fn consumer<T, F, Fut, E>(mut self, name: &str, handle: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Message<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        let binding = format!("{name}-in-0");
        let content_type = self.content_type(&binding);
        let handle = Arc::new(handle);
        self.inputs.push(Input {
            binding,
            handler: Arc::new(move |envelope: &Envelope| {
                let decoded = decode::<T>(envelope, &content_type);
                let handle = handle.clone();
                Box::pin(async move {
                    let message = decoded?;
                    let outcome = AssertUnwindSafe(handle(message)).catch_unwind().await;
                    match outcome {
                        Ok(Ok(())) => Ok(None),
                        Ok(Err(error)) => Err(Failure::Handler(error.to_string())),
                        Err(_) => Err(Failure::Handler("the handler panicked".into())),
                    }
                })
            }),
        });
        self
    }

    /// A function called `name`: it handles `<name>-in-0`'s messages as `I` and sends what
    /// it returns to `<name>-out-0` (before the input is acknowledged: at least once).
    pub fn function<I, O, F, Fut, E>(mut self, name: &str, handle: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Message<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Message<O>, E>> + Send + 'static,
        E: fmt::Display,
    {
        let binding = format!("{name}-in-0");
        let output = format!("{name}-out-0");
        let content_type = self.content_type(&binding);
        let out_type = self.content_type(&output);
        let handle = Arc::new(handle);
        self.inputs.push(Input {
            binding,
            handler: Arc::new(move |envelope: &Envelope| {
                let decoded = decode::<I>(envelope, &content_type);
                let handle = handle.clone();
                let (output, out_type) = (output.clone(), out_type.clone());
                Box::pin(async move {
                    let message = decoded?;
                    let outcome = AssertUnwindSafe(handle(message)).catch_unwind().await;
                    match outcome {
                        Ok(Ok(message)) => encode(message, &out_type)
                            .map(|envelope| Some((output, envelope)))
                            .map_err(|e| {
                                Failure::Handler(format!("the result does not encode: {e}"))
                            }),
                        Ok(Err(error)) => Err(Failure::Handler(error.to_string())),
                        Err(_) => Err(Failure::Handler("the handler panicked".into())),
                    }
                })
            }),
        });
        self
    }

    fn content_type(&self, binding: &str) -> String {
        self.settings
            .binding(binding)
            .content_type
            .unwrap_or_else(|| JSON.to_owned())
    }

    /// Binds every input and starts handling messages.
    pub async fn start(self) -> Result<Stream, StreamError> {
        self.settings.validate().map_err(StreamError::Settings)?;
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            binder: self.binder,
            settings: self.settings,
            outputs: std::sync::RwLock::default(),
            binding: tokio::sync::Mutex::default(),
            stop,
            tasks: Mutex::default(),
        });
        for input in self.inputs {
            let settings = inner.settings.binding(&input.binding);
            let destination = settings
                .destination
                .clone()
                .unwrap_or_else(|| input.binding.clone());
            let c = &settings.consumer;
            let options = ConsumerOptions {
                prefetch: (c.concurrency.max(1) * 2).max(MIN_PREFETCH),
                partitioned: c.partitioned,
                instance_index: c
                    .instance_index
                    .or(inner.settings.instance_index)
                    .unwrap_or(0),
                instance_count: c
                    .instance_count
                    .or(inner.settings.instance_count)
                    .unwrap_or(1),
                partition_count: c.partition_count.unwrap_or(1),
            };
            let consumer = inner
                .binder
                .consumer(&destination, settings.group.as_deref(), &options)
                .await?;
            if let Some(group) = &settings.group {
                tokio::spawn(sample_lag(
                    inner.binder.clone(),
                    input.binding.clone(),
                    destination.clone(),
                    group.clone(),
                    options,
                    stopped.clone(),
                ));
            }
            let task = tokio::spawn(run_input(
                inner.clone(),
                input,
                destination,
                settings,
                consumer,
                stopped.clone(),
            ));
            msa_core::sync::lock(&inner.tasks).push(task);
        }
        Ok(Stream { inner })
    }
}

struct Inner {
    binder: Arc<dyn Binder>,
    settings: StreamSettings,
    /// The outputs bound so far: read on every send, written once per binding.
    outputs: std::sync::RwLock<BTreeMap<String, Arc<BoundOutput>>>,
    /// Held while an output is bound, so that concurrent first sends bind it once.
    binding: tokio::sync::Mutex<()>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// A bound output: its producer and what its settings say about each message.
struct BoundOutput {
    producer: Box<dyn Producer>,
    series: metrics::Series,
    content_type: String,
    partition_key: Option<String>,
}

impl Inner {
    fn bound(&self, binding: &str) -> Option<Arc<BoundOutput>> {
        msa_core::sync::read(&self.outputs).get(binding).cloned()
    }

    async fn output(&self, binding: &str) -> Result<Arc<BoundOutput>, StreamError> {
        if let Some(output) = self.bound(binding) {
            return Ok(output);
        }
        let _binding = self.binding.lock().await;
        if let Some(output) = self.bound(binding) {
            return Ok(output);
        }
        let settings = self.settings.binding(binding);
        let destination = settings
            .destination
            .clone()
            .unwrap_or_else(|| binding.to_owned());
        let options = ProducerOptions {
            partition_count: settings.producer.partition_count,
        };
        let output = Arc::new(BoundOutput {
            producer: self.binder.producer(&destination, &options).await?,
            series: metrics::Series::new(binding, "out"),
            content_type: settings.content_type.unwrap_or_else(|| JSON.to_owned()),
            partition_key: settings.producer.partition_key,
        });
        msa_core::sync::write(&self.outputs).insert(binding.to_owned(), output.clone());
        Ok(output)
    }

    async fn send_envelope(&self, binding: &str, envelope: Envelope) -> Result<(), StreamError> {
        let output = self.output(binding).await?;
        self.send_to(binding, &output, envelope).await
    }

    async fn send_to(
        &self,
        binding: &str,
        output: &BoundOutput,
        mut envelope: Envelope,
    ) -> Result<(), StreamError> {
        if *self.stop.borrow() {
            return Err(StreamError::Closed);
        }
        if envelope.key.is_none()
            && let Some(header) = &output.partition_key
        {
            envelope.key = envelope.headers.get(header).cloned();
        }
        let sent = output.producer.send(envelope).await;
        match sent {
            Ok(()) => output.series.success.inc(),
            Err(_) => metrics::message(binding, "out", "failure"),
        }
        Ok(sent?)
    }
}

/// A running stream: its inputs are being handled; [`send`](Self::send) sends. Cheap to
/// clone.
#[derive(Clone)]
pub struct Stream {
    inner: Arc<Inner>,
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("binder", &self.inner.binder.name())
            .finish_non_exhaustive()
    }
}

impl Stream {
    /// Sends `message` through binding `binding` (its destination, content type and
    /// partitioning from the settings; the binding's name as the destination otherwise),
    /// with the current trace context in its headers — Spring's `StreamBridge.send`.
    pub async fn send<T: Serialize>(&self, binding: &str, payload: T) -> Result<(), StreamError> {
        self.send_message(binding, Message::new(payload)).await
    }

    /// As [`send`](Self::send), with headers and a key (the partition and the order
    /// messages keep).
    pub async fn send_message<T: Serialize>(
        &self,
        binding: &str,
        message: Message<T>,
    ) -> Result<(), StreamError> {
        let output = self.inner.output(binding).await?;
        let envelope =
            encode(message, &output.content_type).map_err(|reason| StreamError::Encode {
                binding: binding.to_owned(),
                reason,
            })?;
        self.inner.send_to(binding, &output, envelope).await
    }

    /// Sends an envelope already encoded (by [`encode`]: an outbox stores them so) through
    /// binding `binding`.
    pub async fn send_envelope(
        &self,
        binding: &str,
        envelope: Envelope,
    ) -> Result<(), StreamError> {
        self.inner.send_envelope(binding, envelope).await
    }

    /// The binder, for its health.
    pub fn binder(&self) -> &Arc<dyn Binder> {
        &self.inner.binder
    }

    /// Stops fetching, finishes and acknowledges the messages in hand, and returns when
    /// every input has stopped.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *msa_core::sync::lock(&self.inner.tasks));
        for task in tasks {
            let _ = task.await;
        }
    }
}

/// A handle to send through a [`Stream`] that may not have started yet: made before the
/// app starts (for its HTTP handlers), usable once the stream runs — Spring's
/// `StreamBridge`. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct StreamBridge {
    stream: Arc<std::sync::OnceLock<Stream>>,
}

impl StreamBridge {
    /// A bridge to no stream yet.
    pub fn new() -> Self {
        StreamBridge::default()
    }

    /// Connects the bridge to `stream` (the first connection stays).
    pub fn connect(&self, stream: Stream) {
        let _ = self.stream.set(stream);
    }

    /// The stream, once connected.
    pub fn stream(&self) -> Option<&Stream> {
        self.stream.get()
    }

    /// [`Stream::send`]; [`StreamError::NotStarted`] before the stream runs.
    pub async fn send<T: Serialize>(&self, binding: &str, payload: T) -> Result<(), StreamError> {
        self.stream
            .get()
            .ok_or(StreamError::NotStarted)?
            .send(binding, payload)
            .await
    }

    /// [`Stream::send_envelope`]; [`StreamError::NotStarted`] before the stream runs.
    pub async fn send_envelope(
        &self,
        binding: &str,
        envelope: Envelope,
    ) -> Result<(), StreamError> {
        self.stream
            .get()
            .ok_or(StreamError::NotStarted)?
            .send_envelope(binding, envelope)
            .await
    }

    /// [`Stream::send_message`]; [`StreamError::NotStarted`] before the stream runs.
    pub async fn send_message<T: Serialize>(
        &self,
        binding: &str,
        message: Message<T>,
    ) -> Result<(), StreamError> {
        self.stream
            .get()
            .ok_or(StreamError::NotStarted)?
            .send_message(binding, message)
            .await
    }
}

/// Messages queued for each lane of an input with `concurrency` above 1.
const LANE_QUEUE: usize = 8;

/// How often an input's consumer lag is asked of the broker.
pub const LAG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps `msa_stream_consumer_lag{binding}` current while the stream runs, where the
/// binder reports a lag.
async fn sample_lag(
    binder: Arc<dyn Binder>,
    binding: String,
    destination: String,
    group: String,
    options: ConsumerOptions,
    mut stopped: watch::Receiver<bool>,
) {
    let gauge = metrics::LAG.with_label_values(&[binding.as_str()]);
    loop {
        match binder.lag(&destination, &group, &options).await {
            Ok(Some(lag)) => gauge.set(i64::try_from(lag).unwrap_or(i64::MAX)),
            Ok(None) => return,
            Err(error) => tracing::debug!(%binding, %error, "consumer lag unknown"),
        }
        tokio::select! {
            () = tokio::time::sleep(LAG_INTERVAL) => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
    }
}

/// Fetches an input's messages and hands them to its lanes: one per unit of concurrency,
/// chosen by key, so messages with one key are handled in order.
async fn run_input(
    inner: Arc<Inner>,
    input: Input,
    destination: String,
    settings: BindingSettings,
    mut consumer: Box<dyn crate::binder::Consumer>,
    mut stopped: watch::Receiver<bool>,
) {
    let series = Arc::new(metrics::Series::new(&input.binding, "in"));
    let input = Arc::new(input);
    let settings = Arc::new(settings);
    let lanes = settings.consumer.concurrency.max(1) as usize;
    if lanes == 1 {
        // One lane: handled in this task, in order, without a hand-over.
        loop {
            let delivery = tokio::select! {
                delivery = consumer.next() => delivery,
                _ = stopped.wait_for(|stop| *stop) => None,
            };
            let Some(delivery) = delivery else { break };
            handle(&inner, &input, &series, &destination, &settings, delivery).await;
        }
        consumer.close().await;
        tracing::debug!(binding = %input.binding, "input stopped");
        return;
    }
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = Vec::with_capacity(lanes);
    for _ in 0..lanes {
        // A few queued per lane, so that handing over does not wake a lane per message;
        // the consumer's prefetch bounds what all lanes hold.
        let (tx, mut rx) = mpsc::channel::<Delivery>(LANE_QUEUE);
        senders.push(tx);
        let (inner, input, series, settings, destination) = (
            inner.clone(),
            input.clone(),
            series.clone(),
            settings.clone(),
            destination.clone(),
        );
        workers.push(tokio::spawn(async move {
            while let Some(delivery) = rx.recv().await {
                handle(&inner, &input, &series, &destination, &settings, delivery).await;
            }
        }));
    }
    loop {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            _ = stopped.wait_for(|stop| *stop) => None,
        };
        let Some(delivery) = delivery else { break };
        let lane = delivery.envelope.key.as_deref().map_or(0, |key| {
            crate::binder::partition_of(key, lanes as u32) as usize
        });
        if senders[lane].send(delivery).await.is_err() {
            break;
        }
    }
    consumer.close().await;
    drop(senders);
    for worker in workers {
        let _ = worker.await;
    }
    tracing::debug!(binding = %input.binding, "input stopped");
}

/// Handles one delivery: attempts with backoff, then the dead letter; acknowledged once
/// settled either way (a dead letter that cannot be written is delivered again instead).
async fn handle(
    inner: &Inner,
    input: &Input,
    series: &metrics::Series,
    destination: &str,
    settings: &BindingSettings,
    delivery: Delivery,
) {
    let binding = input.binding.as_str();
    if delivery.redelivered > 0 {
        metrics::REDELIVERIES.with_label_values(&[binding]).inc();
    }
    let span = tracing::info_span!("consume", %binding, %destination, otel.kind = "consumer");
    if !span.is_disabled() {
        let _ = span.set_parent(extract_trace(&delivery.envelope.headers));
    }
    async {
        let c = &settings.consumer;
        let mut attempt = 0;
        let failure = loop {
            attempt += 1;
            let started = Instant::now();
            let outcome = (input.handler)(&delivery.envelope).await;
            series.handler.observe(started.elapsed().as_secs_f64());
            let failure = match outcome {
                Ok(None) => None,
                Ok(Some((output, envelope))) => match inner.send_envelope(&output, envelope).await {
                    Ok(()) => None,
                    Err(error) => Some(Failure::Handler(format!("sending to {output}: {error}"))),
                },
                Err(failure) => Some(failure),
            };
            match failure {
                None => {
                    series.success.inc();
                    if let Err(error) = delivery.ack().await {
                        tracing::warn!(%error, "acknowledging failed; the broker may deliver it again");
                    }
                    return;
                }
                Some(Failure::Handler(reason)) if attempt < c.max_attempts => {
                    metrics::message(binding, "in", "retried");
                    let wait = msa_core::backoff::exponential(
                        c.back_off_initial_interval,
                        c.back_off_multiplier,
                        attempt,
                        c.back_off_max_interval,
                    );
                    tracing::warn!(%reason, attempt, ?wait, "handler failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Some(failure) => break failure,
            }
        };
        let (kind, reason) = match failure {
            Failure::Decode(reason) => ("decode", reason),
            Failure::Handler(reason) => ("handler", reason),
        };
        metrics::message(
            binding,
            "in",
            if kind == "decode" { "decode_error" } else { "dead_letter" },
        );
        tracing::error!(%reason, attempts = attempt, "message dead-lettered");
        let mut dead = delivery.envelope.clone();
        let reason: String = reason.chars().take(MAX_REASON).collect();
        dead.headers.insert(EXCEPTION_MESSAGE.to_owned(), reason);
        dead.headers.insert(EXCEPTION_KIND.to_owned(), kind.to_owned());
        dead.headers.insert(ATTEMPTS.to_owned(), attempt.to_string());
        dead.headers
            .insert(ORIGINAL_DESTINATION.to_owned(), destination.to_owned());
        match inner
            .binder
            .dead_letter(destination, settings.group.as_deref(), dead)
            .await
        {
            Ok(()) => {
                if let Err(error) = delivery.ack().await {
                    tracing::warn!(%error, "acknowledging a dead-lettered message failed");
                }
            }
            Err(error) => {
                tracing::error!(%error, "the dead letter could not be written; delivering again");
                let _ = delivery.redeliver(settings.consumer.back_off_max_interval).await;
            }
        }
    }
    .instrument(span)
    .await;
}
