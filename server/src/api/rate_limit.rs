//! Per-namespace request rate limiting (`--rate-limit-per-namespace`): a token bucket per
//! namespace, refilled continuously at the configured rate with a burst of one second's
//! worth. A request over the limit answers `RESOURCE_EXHAUSTED` with a retry hint (in the
//! message and as `retry-after-ms` metadata) before any engine or store work is done, so a
//! namespace flooding the server cannot starve the others. Worker writes under a lease are
//! exempt (see `ApiState::leased_namespace`).
//!
//! Memory is bounded: one small entry per namespace that sent a request (namespaces come
//! from valid API keys, or `default` in open mode), and entries idle for a minute are dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries idle this long are forgotten (a full bucket again on return).
const IDLE: Duration = Duration::from_secs(60);

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per namespace.
pub struct RateLimiter {
    per_sec: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
    last_sweep: Mutex<Instant>,
}

impl RateLimiter {
    /// A limiter allowing `per_sec` requests per second per namespace (burst: the same).
    pub fn new(per_sec: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec.max(1)),
            buckets: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// Takes one token for `namespace`; `Err(wait)` when none is left.
    pub fn check(&self, namespace: &str) -> Result<(), Duration> {
        let now = Instant::now();
        self.sweep(now);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(namespace.to_owned()).or_insert(Bucket {
            tokens: self.per_sec,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_sec;
        b.tokens = (b.tokens + refill).min(self.per_sec);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }

    fn sweep(&self, now: Instant) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*last) < IDLE {
            return;
        }
        *last = now;
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, b| now.duration_since(b.at) < IDLE);
    }

    /// The `RESOURCE_EXHAUSTED` answer for a request over the limit.
    pub fn status(&self, namespace: &str, wait: Duration) -> tonic::Status {
        let ms = wait.as_millis().max(1);
        let mut s = tonic::Status::resource_exhausted(format!(
            "namespace {namespace} is over its rate limit of {} requests per second; retry \
             after {ms} ms",
            self.per_sec
        ));
        if let Ok(v) = ms.to_string().parse() {
            s.metadata_mut().insert("retry-after-ms", v);
        }
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_rate_then_refuses_with_a_wait() {
        let l = RateLimiter::new(10);
        for _ in 0..10 {
            l.check("a").unwrap();
        }
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        // Another namespace has its own bucket.
        l.check("b").unwrap();
    }
}
