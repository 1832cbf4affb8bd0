//! The response future of [`Timeout`](super::Timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use super::error::Elapsed;
use crate::BoxError;
use crate::metrics::TimeKind;

pin_project! {
    /// Either the call's result, or [`Elapsed`] once the timeout fires (the call's future
    /// is dropped with this one).
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Sleep,
        timeout: Duration,
        name: Option<Arc<str>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, sleep: Sleep, timeout: Duration, name: Option<Arc<str>>) -> Self {
        ResponseFuture {
            inner,
            sleep,
            timeout,
            name,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            if let Some(name) = this.name {
                let kind = match result {
                    Ok(_) => TimeKind::Successful,
                    Err(_) => TimeKind::Failed,
                };
                crate::metrics::timelimiter_call(name, kind);
            }
            return Poll::Ready(result.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => {
                if let Some(name) = this.name {
                    crate::metrics::timelimiter_call(name, TimeKind::Timeout);
                }
                Poll::Ready(Err(Elapsed(*this.timeout).into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
