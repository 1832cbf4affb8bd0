use bytes::Bytes;
use http_body::Body;
use http_body_util::{Empty, Full};

/// A request body the balancer can send again when the connection to the first instance
/// failed before anything was sent.
///
/// Buffered bodies replay by cloning (cheap for [`Bytes`]-backed ones); streaming bodies
/// replay only when they are known to be empty, which covers GET, HEAD and DELETE.
/// Implement it for your own body type to opt in.
pub trait ReplayBody: Sized {
    /// A body equal to this one as it was before being sent, or `None` if it cannot be
    /// made (then the failure is returned instead of retried).
    fn replay(&self) -> Option<Self>;
}

impl ReplayBody for Full<Bytes> {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for Empty<Bytes> {
    fn replay(&self) -> Option<Self> {
        Some(Empty::new())
    }
}

impl ReplayBody for String {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for Bytes {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for Vec<u8> {
    fn replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl ReplayBody for () {
    fn replay(&self) -> Option<Self> {
        Some(())
    }
}

impl ReplayBody for axum::body::Body {
    fn replay(&self) -> Option<Self> {
        (self.size_hint().exact() == Some(0)).then(axum::body::Body::empty)
    }
}

impl ReplayBody for reqwest::Body {
    fn replay(&self) -> Option<Self> {
        self.as_bytes()
            .map(|bytes| reqwest::Body::from(Bytes::copy_from_slice(bytes)))
    }
}

/// gRPC bodies are streams of framed messages: they replay only when empty, which a
/// request never is, so a tonic call is not moved to another instance after a connection
/// failure (the error reaches the caller, and the instance is counted as failing).
#[cfg(feature = "tonic")]
impl ReplayBody for tonic::body::Body {
    fn replay(&self) -> Option<Self> {
        (self.size_hint().exact() == Some(0)).then(tonic::body::Body::empty)
    }
}

/// A copy of `request` for another attempt, if its body can be replayed.
pub(crate) fn replay_request<B: ReplayBody>(
    request: &http::Request<B>,
) -> Option<http::Request<B>> {
    let body = request.body().replay()?;
    let mut copy = http::Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}

/// An error that hands back a request its service never sent: the connection failed
/// before any byte of it was written. The [`LoadBalancer`](super::LoadBalancer) then
/// sends the request itself to another instance, whatever its body (a streaming body
/// has not been read), where otherwise only a [`ReplayBody`] copy could go.
///
/// A service under the balancer returns it (boxed) instead of its connection error; its
/// `source` is that error, so whatever reads the error chain still finds the cause.
///
/// ```
/// use http::Request;
/// use msa_discovery::balance::Unsent;
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let error = Unsent::new(Request::new("order"), refused);
/// assert_eq!(error.to_string(), "connection refused");
/// assert_eq!(*error.into_request().body(), "order");
/// ```
pub struct Unsent<B> {
    /// Only ever taken whole; the mutex makes the error `Sync` for a body that is not.
    request: std::sync::Mutex<http::Request<B>>,
    error: msa_core::BoxError,
}

impl<B> Unsent<B> {
    /// `request`, which was not sent because of `error`.
    pub fn new(request: http::Request<B>, error: impl Into<msa_core::BoxError>) -> Self {
        Unsent {
            request: std::sync::Mutex::new(request),
            error: error.into(),
        }
    }

    /// The request, as it was given.
    pub fn into_request(self) -> http::Request<B> {
        self.request
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<B> std::fmt::Debug for Unsent<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unsent")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<B> std::fmt::Display for Unsent<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl<B> std::error::Error for Unsent<B> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}
