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
