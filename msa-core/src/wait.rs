//! The `wait=` parameter of msa's long-poll endpoints (the config server's and the
//! registry's watches).

use std::time::Duration;

/// How long a long-poll waits when the request does not say.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// The longest a long-poll may wait.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// Reads `wait=`: a duration with its unit (`500ms`, `30s`, `1m`: the grammar of
/// [`crate::duration::parse`]), capped at [`MAX_WAIT`]; [`DEFAULT_WAIT`] when absent. A
/// bare number is refused rather than guessed: config files read one as milliseconds (as
/// Spring Boot does) while Consul-style clients mean seconds.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use msa_core::wait::parse_wait;
///
/// assert_eq!(parse_wait(Some("250ms")), Ok(Duration::from_millis(250)));
/// assert_eq!(parse_wait(Some("45s")), Ok(Duration::from_secs(45)));
/// assert!(parse_wait(Some("45")).unwrap_err().contains("needs a unit"));
/// assert!(parse_wait(Some("soon")).is_err());
/// assert_eq!(parse_wait(Some("1h")), Ok(Duration::from_secs(300)));
/// assert_eq!(parse_wait(None), Ok(Duration::from_secs(30)));
/// ```
pub fn parse_wait(wait: Option<&str>) -> Result<Duration, String> {
    let Some(wait) = wait.map(str::trim) else {
        return Ok(DEFAULT_WAIT);
    };
    if wait.parse::<u64>().is_ok() {
        return Err(format!("wait={wait:?} needs a unit: 30s or 500ms"));
    }
    crate::duration::parse(wait)
        .map(|d| d.min(MAX_WAIT))
        .map_err(|_| format!("wait={wait:?} is not a duration: use 30s or 500ms"))
}
