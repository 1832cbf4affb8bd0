//! The access log: a line per proxied request, off unless the file turns it on (as in
//! Spring Cloud Gateway), written off the request path.
//!
//! Each worker thread formats its lines into a buffer of its own and writes the buffer
//! out whole — when it is full, and every flush interval from a task on that worker — as
//! nginx's `access_log … buffer= flush=` does: a request costs formatting one line, and the
//! write is one system call per buffer. Lines are in Reactor Netty's access-log format
//! (what Spring Cloud Gateway writes with `-Dreactor.netty.http.server.accessLogEnabled`),
//! with the route's id and the request's trace id (`-` without one) after it:
//!
//! ```text
//! 10.0.0.7 - - [02/Dec/2026:23:20:01 +0000] "GET /api/orders/7 HTTP/1.1" 200 - 3 orders 4bf92f3577b34da6a3ce929d0e0e4736
//! ```
//!
//! (The response's length is `-`: bodies are streamed, not counted.)

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// The access log's settings: `msa.gateway.access-log` in the gateway's file (or Spring's
/// `reactor.netty.http.server.accessLogEnabled: true`, which turns it on as it is).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AccessLogConfig {
    /// Whether every proxied request is logged. Default: false.
    pub enabled: bool,
    /// The file lines are appended to; standard output when none. Default: none.
    pub path: Option<PathBuf>,
    /// How many bytes of lines a worker gathers before writing them. Default: 64 KiB.
    pub buffer: usize,
    /// How long a line may wait in a worker's buffer at most. Default: 1 s.
    #[serde(with = "msa_core::duration")]
    pub flush_interval: Duration,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: false,
            path: None,
            buffer: 64 << 10,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// Where lines go.
#[derive(Debug)]
enum Sink {
    Stdout,
    File(std::fs::File),
}

/// An open access log; see the [module](self).
#[derive(Debug)]
pub(crate) struct AccessLog {
    sink: Sink,
    buffer: usize,
    flush_interval: Duration,
}

thread_local! {
    /// This worker's lines not written yet.
    static PENDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The time stamp of the current second, formatted once: (second, `[...]`).
    static STAMP: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

impl AccessLog {
    /// The log `config` asks for, opened (`None` when it is off).
    pub(crate) fn open(config: &AccessLogConfig) -> std::io::Result<Option<AccessLog>> {
        if !config.enabled {
            return Ok(None);
        }
        let sink = match &config.path {
            None => Sink::Stdout,
            Some(path) => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(Some(AccessLog {
            sink,
            buffer: config.buffer.max(1),
            flush_interval: config.flush_interval.max(Duration::from_millis(10)),
        }))
    }

    /// How often a worker writes out what it gathered.
    pub(crate) fn flush_interval(&self) -> Duration {
        self.flush_interval
    }

    /// Adds a request's line to this thread's buffer, writing the buffer when full.
    pub(crate) fn log(
        &self,
        remote: IpAddr,
        (method, target, version): (&http::Method, &str, http::Version),
        status: u16,
        elapsed: Duration,
        route: &str,
        trace: Option<&str>,
    ) {
        PENDING.with_borrow_mut(|pending| {
            STAMP.with_borrow_mut(|stamp| {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                if stamp.0 != now {
                    *stamp = (now, clf_time(now));
                }
                // Writing to a Vec cannot fail.
                let _ = writeln!(
                    pending,
                    "{remote} - - {} \"{method} {} {version:?}\" {status} - {} {route} {}",
                    stamp.1,
                    Printable(target),
                    elapsed.as_millis(),
                    trace.unwrap_or("-"),
                );
            });
            if pending.len() >= self.buffer {
                self.write(pending);
            }
        });
    }

    /// Writes out this thread's lines.
    pub(crate) fn flush(&self) {
        PENDING.with_borrow_mut(|pending| {
            if !pending.is_empty() {
                self.write(pending);
            }
        });
    }

    fn write(&self, pending: &mut Vec<u8>) {
        let written = match &self.sink {
            Sink::Stdout => std::io::stdout().lock().write_all(pending),
            Sink::File(file) => (&*file).write_all(pending),
        };
        if let Err(error) = written {
            tracing::warn!(%error, bytes = pending.len(), "access log lines lost");
        }
        pending.clear();
        // A burst's buffer is not kept for ever.
        if pending.capacity() > 4 * self.buffer {
            pending.shrink_to(self.buffer);
        }
    }
}

/// `[02/Dec/2026:23:20:01 +0000]` for a Unix time.
fn clf_time(secs: u64) -> String {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!("[{}]", at.strftime("%d/%b/%Y:%H:%M:%S +0000"))
}

/// A path as a log line may hold it: bytes a terminal or a log reader would act on
/// (control characters, `"`, `\`) escaped as `\xNN`, so one request is one line.
struct Printable<'a>(&'a str);

impl std::fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(|c: char| c.is_control() || c == '"' || c == '\\') {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            let mut bytes = [0; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                write!(f, "\\x{byte:02x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_stamps_are_in_the_common_log_format() {
        assert_eq!(clf_time(1_796_253_601), "[02/Dec/2026:23:20:01 +0000]");
    }

    #[test]
    fn a_path_cannot_break_its_line() {
        let shown = Printable("/a\"b\\c\nd\u{1b}[31m").to_string();
        assert_eq!(shown, "/a\\x22b\\x5cc\\x0ad\\x1b[31m");
    }
}
