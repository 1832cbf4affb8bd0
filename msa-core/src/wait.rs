//! The `wait=` parameter of msa's long-poll endpoints (the config server's and the
//! registry's watches).

use std::time::Duration;

/// How long a long-poll waits when the request does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// The longest a long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Reads `wait=`: `500ms`, `30s` or a bare number of seconds, capped at [`MAX_WAIT`];
/// [`DEFAULT_WAIT`] when absent.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use msa_core::wait::parse_wait;
///
/// assert_eq!(parse_wait(Some("250ms")), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_wait(Some("45")), Ok(Duration::from_secs(45)));
/// assert_eq!(parse_wait(Some("1h")).is_err(), true);
/// assert_eq!(parse_wait(Some("9999s")), Ok(Duration::from_secs(300)));
/// assert_eq!(parse_wait(None), Ok(Duration::from_secs(30)));
/// ```
pub fn parse_wait(wait: Option<&str>) -> Result<Duration, String> {
    let Some(wait) = wait.map(str::trim) else {
        return Ok(DEFAULT_WAIT);
    };
    let parsed = match wait.strip_suffix("ms") {
        Some(ms) => ms.parse().map(Duration::from_millis),
        None => wait
            .strip_suffix('s')
            .unwrap_or(wait)
            .parse()
            .map(Duration::from_secs),
    };
    parsed
        .map(|d| d.min(MAX_WAIT))
        .map_err(|_| format!("wait={wait:?} is not a duration: use 30s or 500ms"))
}
