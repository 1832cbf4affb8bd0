//! Per-binding series on `/actuator/prometheus`.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
};

/// `msa_stream_messages_total{binding, direction, outcome}`: messages sent (`out`) and
/// handled (`in`), by outcome (`success`, `failure`, `retried`, `dead_letter`,
/// `decode_error`).
pub(crate) static MESSAGES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "msa_stream_messages_total",
        "Messages sent (direction out) and handled (direction in) per binding, by outcome.",
    );
    // Constant names and labels: cannot fail.
    let counter =
        IntCounterVec::new(opts, &["binding", "direction", "outcome"]).expect("valid counter");
    msa_core::metrics::register_or_existing(counter)
});

/// `msa_stream_handler_seconds{binding}`: how long handlers take (each attempt).
pub(crate) static HANDLER: LazyLock<HistogramVec> = LazyLock::new(|| {
    let opts = HistogramOpts::new(
        "msa_stream_handler_seconds",
        "Duration of each attempt to handle a message, per binding.",
    )
    .buckets(msa_core::metrics::DURATION_BUCKETS.to_vec());
    // Constant names and labels: cannot fail.
    let histogram = HistogramVec::new(opts, &["binding"]).expect("valid histogram");
    msa_core::metrics::register_or_existing(histogram)
});

/// `msa_stream_redeliveries_total{binding}`: messages the broker delivered again.
pub(crate) static REDELIVERIES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "msa_stream_redeliveries_total",
        "Messages the broker delivered more than once, per binding.",
    );
    // Constant names and labels: cannot fail.
    let counter = IntCounterVec::new(opts, &["binding"]).expect("valid counter");
    msa_core::metrics::register_or_existing(counter)
});

/// `msa_stream_consumer_lag{binding}`: messages waiting for the binding's group, where
/// the broker reports it (sampled every 10 s).
pub(crate) static LAG: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    let opts = Opts::new(
        "msa_stream_consumer_lag",
        "Messages waiting for the group of an input binding, not yet delivered, where the broker reports it.",
    );
    // Constant names and labels: cannot fail.
    let gauge = IntGaugeVec::new(opts, &["binding"]).expect("valid gauge");
    msa_core::metrics::register_or_existing(gauge)
});

pub(crate) fn message(binding: &str, direction: &str, outcome: &str) {
    MESSAGES
        .with_label_values(&[binding, direction, outcome])
        .inc();
}

/// One binding's most frequent series, looked up once rather than per message.
pub(crate) struct Series {
    /// `in`/`out` `success`.
    pub(crate) success: IntCounter,
    /// Handler durations (inputs).
    pub(crate) handler: Histogram,
}

impl Series {
    pub(crate) fn new(binding: &str, direction: &str) -> Self {
        Series {
            success: MESSAGES.with_label_values(&[binding, direction, "success"]),
            handler: HANDLER.with_label_values(&[binding]),
        }
    }
}
