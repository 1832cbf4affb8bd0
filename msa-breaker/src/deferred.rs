//! A call made once something has been waited for (a bulkhead slot, a rate-limit instant).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::Service;

use crate::BoxError;

/// What a deferred call waits for: the guard it holds while the call runs, or the error
/// that ends it.
pub(crate) type Wait<G> = Pin<Box<dyn Future<Output = Result<G, BoxError>> + Send>>;

pin_project! {
    /// The response future of a layer that may wait before calling (the bulkhead and the
    /// rate limiter): it waits if it must, readies the service, calls it, and holds the
    /// layer's guard (a bulkhead slot) until the call ends.
    pub struct ResponseFuture<S, Req, F, G> {
        #[pin]
        step: Step<S, Req, F, G>,
    }
}

pin_project! {
    #[project = Projection]
    #[project_replace = Replaced]
    enum Step<S, Req, F, G> {
        // Waiting before the call (the rare path, boxed).
        Waiting { wait: Wait<G>, service: S, request: Req },
        // Waiting for the service to be ready.
        Readying { service: S, request: Req, guard: G },
        // The call is under way; the guard is released when it ends.
        Calling { #[pin] future: F, guard: Option<G> },
        // Ended before calling.
        Failed { error: Option<BoxError> },
        // Taken apart while moving between the states above.
        Moving,
    }
}

impl<S, Req, F, G> fmt::Debug for ResponseFuture<S, Req, F, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.step {
            Step::Waiting { .. } => "ResponseFuture::Waiting",
            Step::Readying { .. } => "ResponseFuture::Readying",
            Step::Calling { .. } => "ResponseFuture::Calling",
            Step::Failed { .. } => "ResponseFuture::Failed",
            Step::Moving => "ResponseFuture::Moving",
        })
    }
}

impl<S, Req, F, G> ResponseFuture<S, Req, F, G> {
    pub(crate) fn calling(future: F, guard: G) -> Self {
        ResponseFuture {
            step: Step::Calling {
                future,
                guard: Some(guard),
            },
        }
    }

    pub(crate) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            step: Step::Failed { error: Some(error) },
        }
    }

    pub(crate) fn waiting(wait: Wait<G>, service: S, request: Req) -> Self {
        ResponseFuture {
            step: Step::Waiting {
                wait,
                service,
                request,
            },
        }
    }
}

impl<S, Req, G, T> Future for ResponseFuture<S, Req, S::Future, G>
where
    S: Service<Req, Response = T>,
    S::Error: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut step = self.project().step;
        loop {
            match step.as_mut().project() {
                Projection::Waiting { wait, .. } => {
                    let guard = match ready!(wait.as_mut().poll(cx)) {
                        Ok(guard) => guard,
                        Err(error) => {
                            step.set(Step::Moving);
                            return Poll::Ready(Err(error));
                        }
                    };
                    if let Replaced::Waiting {
                        service, request, ..
                    } = step.as_mut().project_replace(Step::Moving)
                    {
                        step.set(Step::Readying {
                            service,
                            request,
                            guard,
                        });
                    }
                }
                Projection::Readying { service, .. } => {
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        step.set(Step::Moving);
                        return Poll::Ready(Err(error.into()));
                    }
                    if let Replaced::Readying {
                        mut service,
                        request,
                        guard,
                    } = step.as_mut().project_replace(Step::Moving)
                    {
                        let future = service.call(request);
                        step.set(Step::Calling {
                            future,
                            guard: Some(guard),
                        });
                    }
                }
                Projection::Calling { future, guard } => {
                    let result = ready!(future.poll(cx));
                    guard.take();
                    return Poll::Ready(result.map_err(Into::into));
                }
                Projection::Failed { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "polled after completion".into())));
                }
                Projection::Moving => {
                    return Poll::Ready(Err("polled after completion".into()));
                }
            }
        }
    }
}
