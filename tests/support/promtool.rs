//! `promtool check metrics` on a scrape: the exposition format Prometheus itself reads.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool check metrics` on `scrape`; it must be clean but for findings that
/// `allowed` accepts (Spring's own names some dashboards query as they are).
pub fn check(scrape: &str, allowed: impl Fn(&str) -> bool) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; `cargo xtask test` installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Exit 0: clean; 1: not the text format; 3: format fine, lint findings.
    let code = output.status.code();
    assert!(
        matches!(code, Some(0 | 3)),
        "promtool exited {code:?}: {said}"
    );
    for finding in said.lines().filter(|l| !l.trim().is_empty()) {
        assert!(allowed(finding), "promtool: {said}");
    }
}
