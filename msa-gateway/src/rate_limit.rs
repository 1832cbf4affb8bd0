//! RequestRateLimiter: Spring's token bucket (`replenishRate` tokens a second, up to
//! `burstCapacity`, `requestedTokens` per request), kept locally and lock-free: each key's
//! bucket is one atomic holding the time its tokens will be full again (the generic cell
//! rate algorithm), moved on by compare-and-swap.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;
use http::HeaderMap;

use crate::config::Args;

/// Buckets kept before idle ones (full again) are dropped.
const MAX_KEYS: usize = 100_000;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

/// Whose bucket a request takes from.
#[derive(Debug, Clone)]
pub(crate) enum KeyResolver {
    /// The client's address (the default).
    RemoteAddr,
    /// A request header's value; requests without it are denied (Spring's
    /// `deny-empty-key`).
    Header(http::HeaderName),
    /// One bucket for the whole route.
    Route,
}

#[derive(Debug)]
pub(crate) struct RateLimit {
    pub(crate) replenish_rate: u64,
    pub(crate) burst_capacity: u64,
    pub(crate) requested_tokens: u64,
    /// Nanoseconds per token.
    interval: u64,
    key: KeyResolver,
    route_bucket: AtomicU64,
    buckets: DashMap<Box<str>, AtomicU64>,
}

/// What a request got from its bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
}

impl RateLimit {
    pub(crate) fn build(args: &Args) -> Result<Self, String> {
        let number =
            |names: &[&str], position: usize, default: Option<u64>| -> Result<u64, String> {
                for name in names {
                    if let Some(value) = args.text(name, usize::MAX)? {
                        return value
                            .parse()
                            .map_err(|_| format!("{name} {value:?} is not a whole number"));
                    }
                }
                match (args.text("", position)?, default) {
                    (Some(value), _) => value
                        .parse()
                        .map_err(|_| format!("{} {value:?} is not a whole number", names[0])),
                    (None, Some(default)) => Ok(default),
                    (None, None) => Err(format!("`{}` is required", names[0])),
                }
            };
        let replenish_rate = number(
            &["replenishRate", "redis-rate-limiter.replenishRate"],
            0,
            None,
        )?;
        let burst_capacity = number(
            &["burstCapacity", "redis-rate-limiter.burstCapacity"],
            1,
            Some(replenish_rate),
        )?;
        let requested_tokens = number(
            &["requestedTokens", "redis-rate-limiter.requestedTokens"],
            2,
            Some(1),
        )?;
        if replenish_rate == 0 {
            return Err("replenishRate must be at least 1".into());
        }
        if burst_capacity < requested_tokens {
            return Err("burstCapacity must be at least requestedTokens".into());
        }
        let key = match args.text("keyResolver", 3)?.as_deref() {
            None | Some("remote-addr") => KeyResolver::RemoteAddr,
            Some("route") => KeyResolver::Route,
            Some(other) => match other.strip_prefix("header:") {
                Some(name) => KeyResolver::Header(
                    http::HeaderName::from_bytes(name.trim().as_bytes())
                        .map_err(|_| format!("{name:?} is not a header name"))?,
                ),
                None => {
                    return Err(format!(
                        "keyResolver {other:?} is not remote-addr, route or header:NAME"
                    ));
                }
            },
        };
        Ok(RateLimit {
            replenish_rate,
            burst_capacity,
            requested_tokens,
            interval: (1_000_000_000 / replenish_rate).max(1),
            key,
            route_bucket: AtomicU64::new(0),
            buckets: DashMap::new(),
        })
    }

    /// Takes `requestedTokens` from the request's bucket, if it has them.
    pub(crate) fn check(&self, headers: &HeaderMap, remote: SocketAddr) -> Decision {
        let now = now_ns();
        match &self.key {
            KeyResolver::Route => self.take(&self.route_bucket, now),
            KeyResolver::RemoteAddr => self.keyed(&remote.ip().to_string(), now),
            KeyResolver::Header(name) => match headers.get(name).and_then(|v| v.to_str().ok()) {
                Some(key) if !key.is_empty() => self.keyed(key, now),
                _ => Decision {
                    allowed: false,
                    remaining: 0,
                },
            },
        }
    }

    fn keyed(&self, key: &str, now: u64) -> Decision {
        if let Some(bucket) = self.buckets.get(key) {
            return self.take(&bucket, now);
        }
        if self.buckets.len() >= MAX_KEYS {
            // Full buckets hold nothing worth keeping.
            self.buckets
                .retain(|_, tat| tat.load(Ordering::Relaxed) > now);
        }
        let bucket = self
            .buckets
            .entry(key.into())
            .or_insert_with(|| AtomicU64::new(0));
        self.take(&bucket, now)
    }

    /// GCRA: `full_at` is when the bucket will be full again. Taking `n` tokens moves it
    /// `n` intervals on; allowed while that stays within the burst.
    fn take(&self, full_at: &AtomicU64, now: u64) -> Decision {
        let cost = self.interval * self.requested_tokens;
        let burst = self.interval * self.burst_capacity;
        let mut current = full_at.load(Ordering::Relaxed);
        loop {
            let next = current.max(now) + cost;
            if next - now > burst {
                let used = current.max(now) - now;
                return Decision {
                    allowed: false,
                    remaining: (burst.saturating_sub(used)) / self.interval,
                };
            }
            match full_at.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    return Decision {
                        allowed: true,
                        remaining: (burst - (next - now)) / self.interval,
                    };
                }
                Err(actual) => current = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Definition;

    fn limiter(shortcut: &str) -> RateLimit {
        RateLimit::build(&Definition::shortcut(shortcut).unwrap().args).unwrap()
    }

    #[test]
    fn a_burst_then_the_replenish_rate() {
        let limit = limiter("RequestRateLimiter=10, 20, 1, route");
        let bucket = AtomicU64::new(0);
        let start = 1_000_000_000_000;
        let allowed = (0..25)
            .filter(|_| limit.take(&bucket, start).allowed)
            .count();
        assert_eq!(allowed, 20, "the burst");
        // 100 ms later: one more token (10 a second).
        assert!(limit.take(&bucket, start + 100_000_000).allowed);
        assert!(!limit.take(&bucket, start + 100_000_000).allowed);
        // After 2 s the bucket is full again.
        let later = start + 2_100_000_000;
        let decision = limit.take(&bucket, later);
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 19);
    }

    #[test]
    fn requested_tokens_cost_more_and_arguments_are_checked() {
        let limit = limiter("RequestRateLimiter=1, 10, 5, route");
        let bucket = AtomicU64::new(0);
        let t = 5_000_000_000;
        assert!(limit.take(&bucket, t).allowed);
        assert!(limit.take(&bucket, t).allowed);
        assert!(!limit.take(&bucket, t).allowed);
        let err = |s: &str| RateLimit::build(&Definition::shortcut(s).unwrap().args).unwrap_err();
        assert!(err("RequestRateLimiter=0").contains("at least 1"));
        assert!(err("RequestRateLimiter=1, 2, 3").contains("at least requestedTokens"));
        assert!(err("RequestRateLimiter=1, 2, 1, cookie").contains("keyResolver"));
    }
}
