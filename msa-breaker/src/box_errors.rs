//! [`BoxErrors`]: a service with its errors boxed, so layers can be stacked and chosen at
//! run time whatever the inner service's error type.

use std::task::{Context, Poll};

use futures_util::TryFutureExt;
use futures_util::future::MapErr;
use tower::Service;

use crate::BoxError;

/// `S` with its errors converted into [`BoxError`].
#[derive(Clone, Copy, Debug, Default)]
pub struct BoxErrors<S>(pub S);

impl<S, Req> Service<Req> for BoxErrors<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = MapErr<S::Future, fn(S::Error) -> BoxError>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.0
            .call(req)
            .map_err(Into::into as fn(S::Error) -> BoxError)
    }
}
