//! Queue configuration and live statistics: [`Queue::configure`], [`Queue::get`],
//! [`Queue::pause`], [`Queue::resume`] and [`StackShift::list_queues`], with the plain Rust
//! types [`QueueConfig`], [`RateLimit`], [`QueueInfo`] and [`QueueStats`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), stackshift::Error> {
//! use std::time::Duration;
//! use stackshift::{QueueConfig, RateLimit, RetryPolicy, StackShift};
//!
//! let client = StackShift::from_env()?;
//! let emails = client.queue("emails");
//! emails
//!     .configure(
//!         QueueConfig::new()
//!             .concurrency_limit(10)
//!             .key_concurrency_limit(1)
//!             .rate_limit(RateLimit::new(100, Duration::from_secs(60)))
//!             .retry_policy(RetryPolicy::new().max_attempts(3)),
//!     )
//!     .await?;
//! let info = emails.get().await?;
//! println!("{} queued, {} running", info.stats.queued, info.stats.running);
//! # Ok(()) }
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use stackshift_proto::v1 as pb;
use stackshift_proto::v1::queues_service_client::QueuesServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::Error;
use crate::auth::AuthInterceptor;
use crate::client::{CALL_TIMEOUT, Queue, StackShift, with_timeout};
use crate::convert::{duration_from_proto, duration_to_proto, timestamp_to_chrono};
use crate::options::RetryPolicy;

/// The generated `QueuesService` client, authenticated by the client's API key.
pub type QueuesClient = QueuesServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// At most `limit` runs of the queue start (are delivered to workers) in any window of
/// `period`. Retries count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Starts allowed per window (1-100000).
    pub limit: u32,
    /// The window length (1 s to 24 h).
    pub period: Duration,
}

impl RateLimit {
    /// `limit` starts per `period`.
    pub fn new(limit: u32, period: Duration) -> Self {
        Self { limit, period }
    }
}

/// A queue's configuration. `None` means "no limit" or "the server default". Setting it
/// with [`Queue::configure`] replaces the whole previous configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueConfig {
    /// Most runs of the queue holding a lease at once, across all workers and server
    /// replicas (1-100000).
    pub concurrency_limit: Option<u32>,
    /// Most runs holding a lease at once per concurrency key (see
    /// [`crate::StartOptions::concurrency_key`]), 1-100000.
    pub key_concurrency_limit: Option<u32>,
    /// Starts per window.
    pub rate_limit: Option<RateLimit>,
    /// Retry policy for runs started without one (field by field: the start's fields win).
    pub retry_policy: Option<RetryPolicy>,
    /// Lease timeout for runs started without one (1 s to 1 h); it wins over the worker's
    /// per-job timeout.
    pub lease_timeout: Option<Duration>,
}

impl QueueConfig {
    /// No limits, server defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the concurrency limit.
    #[must_use]
    pub fn concurrency_limit(mut self, limit: u32) -> Self {
        self.concurrency_limit = Some(limit);
        self
    }

    /// Sets the per-key concurrency limit.
    #[must_use]
    pub fn key_concurrency_limit(mut self, limit: u32) -> Self {
        self.key_concurrency_limit = Some(limit);
        self
    }

    /// Sets the rate limit.
    #[must_use]
    pub fn rate_limit(mut self, rate: RateLimit) -> Self {
        self.rate_limit = Some(rate);
        self
    }

    /// Sets the default retry policy.
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = Some(policy);
        self
    }

    /// Sets the default lease timeout.
    #[must_use]
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = Some(timeout);
        self
    }
}

/// Live counts of a queue, computed when read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Runs in status `queued` (delayed ones included).
    pub queued: u64,
    /// Queued runs not deliverable yet (a delay, a `run_at`, a retry backoff).
    pub delayed: u64,
    /// Runs holding a lease.
    pub running: u64,
    /// Suspended runs (holding no lease).
    pub waiting: u64,
    /// Completed runs.
    pub completed: u64,
    /// Failed runs.
    pub failed: u64,
    /// Cancelled runs.
    pub cancelled: u64,
    /// How long the oldest deliverable queued run has been waiting.
    pub oldest_queued_age: Option<Duration>,
    /// The concurrency keys with the most running runs (at most 20), most first.
    pub running_by_key: Vec<(String, u64)>,
    /// Starts within the current rate-limit window.
    pub rate_window_started: u64,
}

/// A queue: its configuration, pause switch and live counts.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueInfo {
    /// The queue's name.
    pub name: String,
    /// Its configuration.
    pub config: QueueConfig,
    /// True while delivery is paused.
    pub paused: bool,
    /// Live counts.
    pub stats: QueueStats,
    /// When the queue was created.
    pub created_at: DateTime<Utc>,
    /// When its configuration or pause switch last changed.
    pub updated_at: DateTime<Utc>,
}

/// One page of [`StackShift::list_queues`].
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePage {
    /// The queues in name order.
    pub queues: Vec<QueueInfo>,
    /// Pass to the next call to get the next page; `None` on the last page.
    pub next_page_token: Option<String>,
}

fn limit_to_pb(field: &str, v: Option<u32>) -> Result<Option<i32>, Error> {
    v.map(|n| {
        i32::try_from(n).map_err(|_| Error::InvalidArgument(format!("{field} {n} is out of range")))
    })
    .transpose()
}

fn config_to_pb(c: QueueConfig) -> Result<pb::QueueConfig, Error> {
    Ok(pb::QueueConfig {
        concurrency_limit: limit_to_pb("concurrency_limit", c.concurrency_limit)?,
        key_concurrency_limit: limit_to_pb("key_concurrency_limit", c.key_concurrency_limit)?,
        rate_limit: match c.rate_limit {
            None => None,
            Some(r) => Some(pb::RateLimit {
                limit: limit_to_pb("rate_limit.limit", Some(r.limit))?.unwrap_or_default(),
                period: Some(duration_to_proto(r.period)),
            }),
        },
        retry_policy: c.retry_policy.map(pb::RetryPolicy::from),
        lease_timeout: c.lease_timeout.map(duration_to_proto),
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn queue_from_pb(q: Option<pb::Queue>) -> Result<QueueInfo, Error> {
    let q = q.ok_or_else(|| Error::protocol("the response holds no queue"))?;
    let c = q.config.unwrap_or_default();
    let s = q.stats.unwrap_or_default();
    let time = |t: Option<&stackshift_proto::prost_types::Timestamp>, what: &str| {
        t.and_then(timestamp_to_chrono)
            .ok_or_else(|| Error::protocol(format!("queue.{what} is missing or out of range")))
    };
    Ok(QueueInfo {
        config: QueueConfig {
            concurrency_limit: c.concurrency_limit.and_then(|n| u32::try_from(n).ok()),
            key_concurrency_limit: c.key_concurrency_limit.and_then(|n| u32::try_from(n).ok()),
            rate_limit: c.rate_limit.map(|r| RateLimit {
                limit: u32::try_from(r.limit).unwrap_or(0),
                period: r
                    .period
                    .as_ref()
                    .and_then(duration_from_proto)
                    .unwrap_or_default(),
            }),
            retry_policy: c.retry_policy.map(RetryPolicy::from),
            lease_timeout: c.lease_timeout.as_ref().and_then(duration_from_proto),
        },
        stats: QueueStats {
            queued: count(s.queued),
            delayed: count(s.delayed),
            running: count(s.running),
            waiting: count(s.waiting),
            completed: count(s.completed),
            failed: count(s.failed),
            cancelled: count(s.cancelled),
            oldest_queued_age: s.oldest_queued_age.as_ref().and_then(duration_from_proto),
            running_by_key: s
                .running_by_key
                .into_iter()
                .map(|k| (k.key, count(k.running)))
                .collect(),
            rate_window_started: count(s.rate_window_started),
        },
        created_at: time(q.created_at.as_ref(), "created_at")?,
        updated_at: time(q.updated_at.as_ref(), "updated_at")?,
        paused: q.paused,
        name: q.name,
    })
}

impl Queue {
    /// Creates the queue or replaces its whole configuration (the pause switch is left as
    /// it is). Returns the queue as stored, with live counts.
    pub async fn configure(&self, config: QueueConfig) -> Result<QueueInfo, Error> {
        let request = pb::UpsertQueueRequest {
            name: self.name.clone(),
            config: Some(config_to_pb(config)?),
            paused: None,
        };
        let response = self
            .client
            .queues_client()
            .upsert_queue(with_timeout(request, CALL_TIMEOUT))
            .await?;
        queue_from_pb(response.into_inner().queue)
    }

    /// The queue's configuration and live counts ([`Error::NotFound`] until the queue is
    /// configured or a run is started on it).
    pub async fn get(&self) -> Result<QueueInfo, Error> {
        let request = pb::GetQueueRequest {
            name: self.name.clone(),
        };
        let response = self
            .client
            .queues_client()
            .get_queue(with_timeout(request, CALL_TIMEOUT))
            .await?;
        queue_from_pb(response.into_inner().queue)
    }

    /// Stops delivery from the queue. Running runs continue; starts are still accepted and
    /// wait. [`Error::NotFound`] for a queue that does not exist.
    pub async fn pause(&self) -> Result<QueueInfo, Error> {
        let request = pb::PauseQueueRequest {
            name: self.name.clone(),
        };
        let response = self
            .client
            .queues_client()
            .pause_queue(with_timeout(request, CALL_TIMEOUT))
            .await?;
        queue_from_pb(response.into_inner().queue)
    }

    /// Restarts delivery from a paused queue; waiting workers are woken at once.
    pub async fn resume(&self) -> Result<QueueInfo, Error> {
        let request = pb::ResumeQueueRequest {
            name: self.name.clone(),
        };
        let response = self
            .client
            .queues_client()
            .resume_queue(with_timeout(request, CALL_TIMEOUT))
            .await?;
        queue_from_pb(response.into_inner().queue)
    }
}

impl StackShift {
    /// One page of the namespace's queues in name order, with live counts. `page_size`
    /// 1-100 (server default 50); `page_token` from the previous page.
    pub async fn list_queues(
        &self,
        page_size: Option<u32>,
        page_token: Option<String>,
    ) -> Result<QueuePage, Error> {
        let request = pb::ListQueuesRequest {
            page_size: page_size.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            page_token: page_token.unwrap_or_default(),
        };
        let response = self
            .queues_client()
            .list_queues(with_timeout(request, CALL_TIMEOUT))
            .await?
            .into_inner();
        Ok(QueuePage {
            queues: response
                .queues
                .into_iter()
                .map(|q| queue_from_pb(Some(q)))
                .collect::<Result<_, _>>()?,
            next_page_token: (!response.next_page_token.is_empty())
                .then_some(response.next_page_token),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_the_wire_types() {
        let config = QueueConfig::new()
            .concurrency_limit(3)
            .key_concurrency_limit(1)
            .rate_limit(RateLimit::new(10, Duration::from_secs(60)))
            .retry_policy(RetryPolicy::new().max_attempts(2))
            .lease_timeout(Duration::from_secs(5));
        let wire = pb::Queue {
            name: "emails".into(),
            config: Some(config_to_pb(config.clone()).unwrap()),
            created_at: Some(stackshift_proto::prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            updated_at: Some(stackshift_proto::prost_types::Timestamp {
                seconds: 2,
                nanos: 0,
            }),
            ..pb::Queue::default()
        };
        let back = queue_from_pb(Some(wire)).unwrap();
        assert_eq!(back.config, config);
        assert_eq!(back.name, "emails");
    }

    #[test]
    fn limits_beyond_i32_are_refused_locally() {
        let err = config_to_pb(QueueConfig::new().concurrency_limit(u32::MAX)).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}
