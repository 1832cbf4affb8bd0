//! The response future of [`CircuitBreakerService`](super::CircuitBreakerService).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{CircuitBreaker, CircuitOpen, Permit, State};
use crate::{BoxError, Classify};

pin_project! {
    /// Records the call's outcome when it finishes; dropped early, records nothing and
    /// gives a half-open permit back.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[derive(Debug)]
    #[project = KindProjection]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            permit: Option<Permit>,
            classify: C,
        },
        Rejected {
            breaker: CircuitBreaker,
            state: State,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(future: F, permit: Permit, classify: C) -> Self {
        ResponseFuture {
            kind: Kind::Called {
                future,
                permit: Some(permit),
                classify,
            },
        }
    }

    pub(super) fn rejected(breaker: CircuitBreaker, state: State) -> Self {
        ResponseFuture {
            kind: Kind::Rejected { breaker, state },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T>,
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
