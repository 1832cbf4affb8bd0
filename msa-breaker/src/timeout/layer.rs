use tower::Layer;

use super::{Timeout, TimeoutConfig};

/// A [`Layer`] that cancels calls taking longer than `timeout-duration`.
#[derive(Clone, Debug)]
pub struct TimeoutLayer {
    config: TimeoutConfig,
}

impl TimeoutLayer {
    /// A timeout layer.
    pub fn new(config: TimeoutConfig) -> Self {
        TimeoutLayer { config }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.config.timeout_duration)
    }
}
