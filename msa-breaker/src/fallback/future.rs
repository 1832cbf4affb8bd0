//! The response future of [`Fallback`](super::Fallback).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// The call's response, or the fallback's answer to its error.
    pub struct ResponseFuture<Fut, F> {
        #[pin]
        inner: Fut,
        fallback: F,
    }
}

impl<Fut, F> fmt::Debug for ResponseFuture<Fut, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fallback::ResponseFuture")
    }
}

impl<Fut, F> ResponseFuture<Fut, F> {
    pub(super) fn new(inner: Fut, fallback: F) -> Self {
        ResponseFuture { inner, fallback }
    }
}

impl<Fut, F, T, E> Future for ResponseFuture<Fut, F>
where
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    F: Fn(BoxError) -> Result<T, BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(response) => Ok(response),
            Err(error) => (this.fallback)(error.into()),
        })
    }
}
