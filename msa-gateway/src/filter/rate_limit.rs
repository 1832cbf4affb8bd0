//! RequestRateLimiter: Spring's token bucket (`replenishRate` tokens a second, up to
//! `burstCapacity`, `requestedTokens` per request). Kept locally and lock-free by default:
//! each key's bucket is one atomic holding the time its tokens will be full again (the
//! generic cell rate algorithm), moved on by compare-and-swap. With `redis-url` (feature
//! `redis`) the buckets live in Redis, shared by every gateway replica, updated by one
//! script per request with Redis's own clock.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Instant;

use dashmap::DashMap;
use http::{HeaderMap, HeaderName};
use msa_breaker::rate_limit::gcra::{self, Gcra, Rate};

use crate::config::Args;

/// The most buckets a route keeps by default (about 4 MB; the filter's `max-keys`): past
/// it, buckets that are full again are dropped, and if that is not enough, the quarter
/// nearest to full (the least state lost).
pub(crate) const MAX_KEYS: usize = 100_000;

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
    /// Tokens a second and the burst, for msa-breaker's GCRA.
    rate: Rate,
    key: KeyResolver,
    /// The most buckets kept (`max-keys`).
    max_keys: usize,
    route_bucket: Gcra,
    /// By a keyed hash of the key (SipHash with this process's random keys): eight bytes
    /// a bucket however long the key a client sends, and no key it can choose to share
    /// another's bucket.
    buckets: DashMap<u64, Gcra>,
    hasher: std::hash::RandomState,
    #[cfg(feature = "redis")]
    redis: Option<redis_bucket::RedisBuckets>,
}

/// What a request got from its bucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Decision {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
}

impl RateLimit {
    pub(crate) fn build(args: &Args, route_id: &str) -> Result<Self, String> {
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
        let max_keys = match args.text("max-keys", usize::MAX)? {
            None => MAX_KEYS,
            Some(text) => match text.trim().parse::<usize>() {
                Ok(n) if n >= 4 => n,
                _ => {
                    return Err(format!(
                        "max-keys {text:?} must be a whole number of at least 4"
                    ));
                }
            },
        };
        let redis_url = args.text("redis-url", usize::MAX)?;
        #[cfg(feature = "redis")]
        let redis = redis_url
            .map(|url| redis_bucket::RedisBuckets::new(&url, route_id))
            .transpose()?;
        #[cfg(not(feature = "redis"))]
        if redis_url.is_some() {
            let _ = route_id;
            return Err("redis-url needs msa-gateway built with the `redis` feature".into());
        }
        Ok(RateLimit {
            #[cfg(feature = "redis")]
            redis,
            replenish_rate,
            burst_capacity,
            requested_tokens,
            rate: Rate::tokens(replenish_rate, burst_capacity),
            key,
            max_keys,
            route_bucket: Gcra::new(),
            buckets: DashMap::new(),
            hasher: std::hash::RandomState::new(),
        })
    }

    /// Whether buckets are in this process (else in Redis: use [`check_shared`]).
    ///
    /// [`check_shared`]: Self::check_shared
    pub(crate) fn is_local(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.redis.is_none();
        #[cfg(not(feature = "redis"))]
        true
    }

    /// The request's bucket key; `None` denies (a missing key header).
    fn key(&self, headers: &HeaderMap, remote: SocketAddr) -> Option<String> {
        match &self.key {
            KeyResolver::Route => Some(String::new()),
            KeyResolver::RemoteAddr => Some(remote.ip().to_string()),
            KeyResolver::Header(name) => headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
        }
    }

    const DENIED: Decision = Decision {
        allowed: false,
        remaining: 0,
    };

    /// Takes `requestedTokens` from the request's local bucket, if it has them.
    pub(crate) fn check(&self, headers: &HeaderMap, remote: SocketAddr) -> Decision {
        let now = now_ns();
        match &self.key {
            KeyResolver::Route => self.take(&self.route_bucket, now),
            _ => match self.key(headers, remote) {
                Some(key) => self.keyed(&key, now),
                None => Self::DENIED,
            },
        }
    }

    /// Takes tokens from the request's bucket in Redis. If Redis cannot be reached the
    /// request is let through (and a warning logged): an outage of the limiter must not
    /// become an outage of the API.
    pub(crate) async fn check_shared(&self, headers: &HeaderMap, remote: SocketAddr) -> Decision {
        let Some(key) = self.key(headers, remote) else {
            return Self::DENIED;
        };
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return redis
                .take(
                    &key,
                    self.replenish_rate,
                    self.burst_capacity,
                    self.requested_tokens,
                )
                .await;
        }
        let _ = key;
        self.check(headers, remote)
    }

    /// The X-RateLimit-* headers for a decision.
    pub(crate) fn headers(&self, decision: Decision, headers: &mut HeaderMap) {
        const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
        const REPLENISH: HeaderName = HeaderName::from_static("x-ratelimit-replenish-rate");
        const BURST: HeaderName = HeaderName::from_static("x-ratelimit-burst-capacity");
        const REQUESTED: HeaderName = HeaderName::from_static("x-ratelimit-requested-tokens");
        for (name, value) in [
            (REMAINING, decision.remaining),
            (REPLENISH, self.replenish_rate),
            (BURST, self.burst_capacity),
            (REQUESTED, self.requested_tokens),
        ] {
            headers.insert(name, http::HeaderValue::from(value));
        }
    }

    fn keyed(&self, key: &str, now: u64) -> Decision {
        use std::hash::BuildHasher as _;
        let key = self.hasher.hash_one(key);
        if let Some(bucket) = self.buckets.get(&key) {
            return self.take(&bucket, now);
        }
        if self.buckets.len() >= self.max_keys {
            self.evict(now);
        }
        let bucket = self.buckets.entry(key).or_default();
        self.take(&bucket, now)
    }

    /// Makes room: drops the buckets that are full again (they hold nothing a fresh one
    /// would not), then, if that was not a quarter of them, the quarter nearest to full.
    fn evict(&self, now: u64) {
        self.buckets.retain(|_, bucket| !bucket.idle(now));
        if self.buckets.len() < self.max_keys / 4 * 3 {
            return;
        }
        let mut full_at: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.value().full_at())
            .collect();
        let mut quarter = full_at.len() / 4;
        let (_, cut, _) = full_at.select_nth_unstable(quarter);
        let cut = *cut;
        // A quarter exactly, however many share the cut.
        self.buckets.retain(|_, bucket| {
            let drop = quarter > 0 && bucket.full_at() <= cut;
            quarter -= usize::from(drop);
            !drop
        });
    }

    /// Takes `requestedTokens` from `bucket` (msa-breaker's GCRA), if it has them.
    fn take(&self, bucket: &Gcra, now: u64) -> Decision {
        let allowed = matches!(
            bucket.decide_n(self.rate, self.requested_tokens, now),
            gcra::Decision::Now
        );
        Decision {
            allowed,
            remaining: bucket.available(self.rate, now).max(0) as u64,
        }
    }
}

#[cfg(feature = "redis")]
mod redis_bucket {
    use redis::aio::ConnectionManager;
    use tokio::sync::OnceCell;

    use super::Decision;

    /// The token bucket, run in Redis with Redis's clock. Keys follow Spring Cloud
    /// Gateway's naming, with a hash tag so both keys of a bucket share a cluster slot.
    const SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local requested = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local ttl = math.max(1, math.ceil(capacity / rate * 2))
local tokens = tonumber(redis.call('GET', KEYS[1])) or capacity
local last = tonumber(redis.call('GET', KEYS[2])) or now
tokens = math.min(capacity, tokens + math.max(0, now - last) * rate)
local allowed = 0
if tokens >= requested then
  tokens = tokens - requested
  allowed = 1
end
redis.call('SETEX', KEYS[1], ttl, tostring(tokens))
redis.call('SETEX', KEYS[2], ttl, tostring(now))
return { allowed, math.floor(tokens) }
"#;

    pub(super) struct RedisBuckets {
        client: redis::Client,
        connection: OnceCell<ConnectionManager>,
        script: redis::Script,
        route: String,
    }

    impl std::fmt::Debug for RedisBuckets {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisBuckets")
                .field("route", &self.route)
                .finish_non_exhaustive()
        }
    }

    impl RedisBuckets {
        pub(super) fn new(url: &str, route: &str) -> Result<Self, String> {
            let client = redis::Client::open(url).map_err(|e| format!("redis-url {url:?}: {e}"))?;
            Ok(RedisBuckets {
                client,
                connection: OnceCell::new(),
                script: redis::Script::new(SCRIPT),
                route: route.to_owned(),
            })
        }

        pub(super) async fn take(
            &self,
            key: &str,
            rate: u64,
            capacity: u64,
            requested: u64,
        ) -> Decision {
            let connection = self
                .connection
                .get_or_try_init(|| ConnectionManager::new(self.client.clone()))
                .await;
            let mut connection = match connection {
                Ok(connection) => connection.clone(),
                Err(error) => return Self::open(&error),
            };
            let id = format!("{}.{key}", self.route);
            let answer: Result<(u64, u64), _> = self
                .script
                .key(format!("request_rate_limiter.{{{id}}}.tokens"))
                .key(format!("request_rate_limiter.{{{id}}}.timestamp"))
                .arg(rate)
                .arg(capacity)
                .arg(requested)
                .invoke_async(&mut connection)
                .await;
            match answer {
                Ok((allowed, remaining)) => Decision {
                    allowed: allowed == 1,
                    remaining,
                },
                Err(error) => Self::open(&error),
            }
        }

        fn open(error: &redis::RedisError) -> Decision {
            tracing::warn!(%error, "the rate limiter's Redis is unreachable; letting the request through");
            Decision {
                allowed: true,
                remaining: 0,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Definition;

    fn limiter(shortcut: &str) -> RateLimit {
        RateLimit::build(&Definition::shortcut(shortcut).unwrap().args, "r").unwrap()
    }

    #[test]
    fn a_burst_then_the_replenish_rate() {
        let limit = limiter("RequestRateLimiter=10, 20, 1, route");
        let bucket = Gcra::new();
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
    fn max_keys_sets_the_bound() {
        let args = crate::config::Args::named(
            serde_json::from_str(
                r#"{"replenishRate": 1, "burstCapacity": 10, "keyResolver": "header:X-Key", "max-keys": 100}"#,
            )
            .unwrap(),
        );
        let limit = RateLimit::build(&args, "r").unwrap();
        for n in 0..150 {
            assert!(limit.keyed(&format!("key-{n}"), 7_000_000_000).allowed);
        }
        assert!(limit.buckets.len() <= 100, "{}", limit.buckets.len());
        let zero = crate::config::Args::named(
            serde_json::from_str(r#"{"replenishRate": 1, "max-keys": "none"}"#).unwrap(),
        );
        assert!(
            RateLimit::build(&zero, "r")
                .unwrap_err()
                .contains("max-keys")
        );
    }

    #[test]
    fn distinct_keys_cannot_grow_the_buckets_past_the_bound() {
        let limit = limiter("RequestRateLimiter=1, 10, 1, header:X-Key");
        let t = 7_000_000_000;
        // Each key takes a token, so no bucket is full again: only the bound evicts, a
        // quarter at a time.
        for n in 0..MAX_KEYS + MAX_KEYS / 2 {
            assert!(limit.keyed(&format!("key-{n}"), t).allowed);
        }
        let kept = limit.buckets.len();
        assert!((MAX_KEYS / 2..=MAX_KEYS).contains(&kept), "{kept}");
        // A key seen last is still limited: its bucket survived the eviction.
        let last = format!("key-{}", MAX_KEYS + MAX_KEYS / 2 - 1);
        assert_eq!(limit.keyed(&last, t).remaining, 8);
    }

    #[test]
    fn requested_tokens_cost_more_and_arguments_are_checked() {
        let limit = limiter("RequestRateLimiter=1, 10, 5, route");
        let bucket = Gcra::new();
        let t = 5_000_000_000;
        assert!(limit.take(&bucket, t).allowed);
        assert!(limit.take(&bucket, t).allowed);
        assert!(!limit.take(&bucket, t).allowed);
        let err =
            |s: &str| RateLimit::build(&Definition::shortcut(s).unwrap().args, "r").unwrap_err();
        assert!(err("RequestRateLimiter=0").contains("at least 1"));
        assert!(err("RequestRateLimiter=1, 2, 3").contains("at least requestedTokens"));
        assert!(err("RequestRateLimiter=1, 2, 1, cookie").contains("keyResolver"));
    }
}
