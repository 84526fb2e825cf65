//! `QueuesService` handlers and the protobuf conversions of queues.

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::queues_service_server::QueuesService;
use tonic::{Request, Response, Status};

use crate::engine::queue_model::{QueueConfig, QueueInfo, RateLimit};
use crate::engine::requests::{RetryPolicyInput, UpsertQueueInput};

use super::ApiState;
use super::convert::{dur, dur_ms, opt, retry_from_pb, ts};

/// Implements `stackshift.v1.QueuesService`.
pub struct QueuesApi(pub ApiState);

/// Protobuf queue configuration to engine (validated by the engine).
pub(super) fn config_from_pb(c: Option<pb::QueueConfig>) -> Result<QueueConfig, Status> {
    let Some(c) = c else {
        return Ok(QueueConfig::default());
    };
    let rate_limit = match c.rate_limit {
        None => None,
        Some(r) => Some(RateLimit {
            limit: r.limit,
            period_ms: dur_ms("config.rate_limit.period", &r.period)?.ok_or_else(|| {
                Status::invalid_argument(
                    "config.rate_limit.period is required when a rate limit is set",
                )
            })?,
        }),
    };
    Ok(QueueConfig {
        concurrency_limit: c.concurrency_limit,
        key_concurrency_limit: c.key_concurrency_limit,
        rate_limit,
        retry: retry_from_pb(c.retry_policy)
            .map_err(|s| Status::invalid_argument(format!("config.{}", s.message())))?,
        lease_timeout_ms: dur_ms("config.lease_timeout", &c.lease_timeout)?,
    })
}

pub(super) fn retry_input_to_pb(r: &RetryPolicyInput) -> Option<pb::RetryPolicy> {
    if *r == RetryPolicyInput::default() {
        return None;
    }
    Some(pb::RetryPolicy {
        max_attempts: r.max_attempts.unwrap_or(0),
        initial_interval: r.initial_interval_ms.map(dur),
        backoff_coefficient: r.backoff_coefficient.unwrap_or(0.0),
        maximum_interval: r.maximum_interval_ms.map(dur),
    })
}

fn config_to_pb(c: &QueueConfig) -> pb::QueueConfig {
    pb::QueueConfig {
        concurrency_limit: c.concurrency_limit,
        key_concurrency_limit: c.key_concurrency_limit,
        rate_limit: c.rate_limit.map(|r| pb::RateLimit {
            limit: r.limit,
            period: Some(dur(r.period_ms)),
        }),
        retry_policy: retry_input_to_pb(&c.retry),
        lease_timeout: c.lease_timeout_ms.map(dur),
    }
}

/// Engine queue (with statistics) to protobuf.
fn queue_to_pb(q: &QueueInfo, now: i64) -> pb::Queue {
    let s = &q.stats;
    pb::Queue {
        name: q.queue.name.clone(),
        config: Some(config_to_pb(&q.queue.config)),
        paused: q.queue.paused,
        stats: Some(pb::QueueStats {
            queued: s.queued,
            delayed: s.delayed,
            running: s.running,
            waiting: s.waiting,
            completed: s.completed,
            failed: s.failed,
            cancelled: s.cancelled,
            oldest_queued_age: s.oldest_ready_at.map(|at| dur((now - at).max(0))),
            running_by_key: s
                .running_by_key
                .iter()
                .map(|(key, running)| pb::KeyCount {
                    key: key.clone(),
                    running: *running,
                })
                .collect(),
            rate_window_started: s.rate_window_started,
        }),
        created_at: Some(ts(q.queue.created_at)),
        updated_at: Some(ts(q.queue.updated_at)),
    }
}

fn now() -> i64 {
    crate::engine::now_ms()
}

#[tonic::async_trait]
impl QueuesService for QueuesApi {
    async fn upsert_queue(
        &self,
        req: Request<pb::UpsertQueueRequest>,
    ) -> Result<Response<pb::UpsertQueueResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let input = UpsertQueueInput {
            name: r.name,
            config: config_from_pb(r.config)?,
            paused: r.paused,
        };
        let (queue, created) = self.0.engine.upsert_queue(&ns, input).await?;
        Ok(Response::new(pb::UpsertQueueResponse {
            queue: Some(queue_to_pb(&queue, now())),
            created,
        }))
    }

    async fn get_queue(
        &self,
        req: Request<pb::GetQueueRequest>,
    ) -> Result<Response<pb::GetQueueResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let queue = self.0.engine.get_queue(&ns, &r.name).await?;
        Ok(Response::new(pb::GetQueueResponse {
            queue: Some(queue_to_pb(&queue, now())),
        }))
    }

    async fn list_queues(
        &self,
        req: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let (queues, next) = self
            .0
            .engine
            .list_queues(&ns, r.page_size, opt(r.page_token))
            .await?;
        let now = now();
        Ok(Response::new(pb::ListQueuesResponse {
            queues: queues.iter().map(|q| queue_to_pb(q, now)).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn pause_queue(
        &self,
        req: Request<pb::PauseQueueRequest>,
    ) -> Result<Response<pb::PauseQueueResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let queue = self.0.engine.set_queue_paused(&ns, &r.name, true).await?;
        Ok(Response::new(pb::PauseQueueResponse {
            queue: Some(queue_to_pb(&queue, now())),
        }))
    }

    async fn resume_queue(
        &self,
        req: Request<pb::ResumeQueueRequest>,
    ) -> Result<Response<pb::ResumeQueueResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let queue = self.0.engine.set_queue_paused(&ns, &r.name, false).await?;
        Ok(Response::new(pb::ResumeQueueResponse {
            queue: Some(queue_to_pb(&queue, now())),
        }))
    }
}
