//! Whether a call failed before any of the request was sent: the one check msa's clients
//! share (the balancer moves such a call to another instance; the gateway answers 503).

use std::error::Error as StdError;
use std::fmt;

/// A connection that could not be made within its connect timeout, or at all: nothing of
/// the request was sent. Clients that open connections themselves (msa-gateway's pool)
/// report their connect phase with it, so that a timeout there is told apart from one
/// while the request was in flight (which is not safe to send elsewhere).
#[derive(Debug)]
pub struct ConnectError {
    message: String,
    source: Option<std::io::Error>,
}

impl ConnectError {
    /// A connect failure saying `message`, caused by `source` if given.
    pub fn new(message: impl Into<String>, source: Option<std::io::Error>) -> Self {
        ConnectError {
            message: message.into(),
            source,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// Whether `error` (or an error it was caused by) means the connection failed before the
/// request was sent: a [`ConnectError`], a connect error as hyper-util's and reqwest's
/// clients report it, or a refused or unreachable connection. A bare I/O timeout is not
/// one: it may have come while the request was in flight.
///
/// ```
/// use msa_core::http::client::{ConnectError, is_connect_failure};
///
/// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// assert!(is_connect_failure(&refused));
/// let timed_out = std::io::Error::from(std::io::ErrorKind::TimedOut);
/// assert!(!is_connect_failure(&timed_out));
/// assert!(is_connect_failure(&ConnectError::new("connecting took 2s", Some(timed_out))));
/// ```
pub fn is_connect_failure(error: &(dyn StdError + 'static)) -> bool {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = next {
        if error.is::<ConnectError>() {
            return true;
        }
        if let Some(error) = error.downcast_ref::<hyper_util::client::legacy::Error>()
            && error.is_connect()
        {
            return true;
        }
        if let Some(error) = error.downcast_ref::<reqwest::Error>()
            && error.is_connect()
        {
            return true;
        }
        if let Some(error) = error.downcast_ref::<std::io::Error>()
            && matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        next = error.source();
    }
    false
}
