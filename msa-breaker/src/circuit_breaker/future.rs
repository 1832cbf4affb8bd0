//! The response future of [`CircuitBreakerService`](super::CircuitBreakerService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{CircuitOpen, Engine, EnginePermit, State};
use crate::{BoxError, Classify};

pin_project! {
    /// Records the call's outcome when it finishes; dropped early, records nothing and
    /// gives a half-open permit back.
    pub struct ResponseFuture<F, C, E: Engine> {
        #[pin]
        kind: Kind<F, C, E>,
    }
}

pin_project! {
    #[project = KindProjection]
    enum Kind<F, C, E: Engine> {
        Called {
            #[pin]
            future: F,
            permit: Option<E::Permit>,
            classify: C,
        },
        Rejected {
            breaker: E,
            state: State,
        },
    }
}

impl<F, C, E: Engine> std::fmt::Debug for ResponseFuture<F, C, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            Kind::Called { .. } => "ResponseFuture::Called",
            Kind::Rejected { .. } => "ResponseFuture::Rejected",
        })
    }
}

impl<F, C, E: Engine> ResponseFuture<F, C, E> {
    pub(super) fn called(future: F, permit: E::Permit, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classify,
            },
        }
    }

    pub(super) fn rejected(breaker: E, state: State) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { breaker, state },
        }
    }
}

impl<F, C, E, T, Err> Future for ResponseFuture<F, C, E>
where
    F: Future<Output = Result<T, Err>>,
    Err: Into<BoxError>,
    C: Classify<T>,
    E: Engine,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProjection::Called {
                future,
                permit,
                classify,
            } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                if let Some(permit) = permit.take() {
                    permit.complete(classify.classify(result.as_ref()));
                }
                Poll::Ready(result)
            }
            KindProjection::Rejected { breaker, state } => Poll::Ready(Err(CircuitOpen::new(
                std::sync::Arc::from(breaker.name()),
                *state,
            )
            .into())),
        }
    }
}
