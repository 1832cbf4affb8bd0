//! What the benchmark drivers share: flags and percentiles.

#![allow(dead_code)]

use std::time::Duration;

/// The value after `name` on the command line, or `default`.
pub(crate) fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

/// The `p` quantile (0..=1) of sorted latencies, nearest-rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}
