//! `TriggerService` handlers and the protobuf conversions of event triggers.

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::trigger_service_server::TriggerService;
use tonic::{Request, Response, Status};

use crate::engine::trigger_model::{CreateTriggerInput, TriggerFilter, TriggerRecord};

use super::ApiState;
use super::convert::{dur, dur_ms, opt, retry_from_pb, ts};
use super::queues::retry_input_to_pb;

/// Implements `stackshift.v1.TriggerService`.
pub struct TriggersApi(pub ApiState);

fn trigger_to_pb(t: &TriggerRecord) -> pb::EventTrigger {
    let d = &t.definition;
    pb::EventTrigger {
        id: t.id.clone(),
        event_name: d.event_name.clone(),
        correlation_key: d.correlation_key.clone(),
        job: d.job.clone(),
        queue: d.queue.clone(),
        retry_policy: retry_input_to_pb(&d.retry),
        lease_timeout: d.lease_timeout_ms.map(dur),
        priority: d.priority,
        created_at: Some(ts(t.created_at)),
    }
}

#[tonic::async_trait]
impl TriggerService for TriggersApi {
    async fn create_event_trigger(
        &self,
        req: Request<pb::CreateEventTriggerRequest>,
    ) -> Result<Response<pb::CreateEventTriggerResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let input = CreateTriggerInput {
            event_name: r.event_name,
            correlation_key: opt(r.correlation_key),
            job: r.job,
            queue: opt(r.queue),
            retry: retry_from_pb(r.retry_policy)?,
            lease_timeout_ms: dur_ms("lease_timeout", &r.lease_timeout)?,
            priority: r.priority,
        };
        let (t, created) = self.0.engine.create_trigger(&ns, input).await?;
        Ok(Response::new(pb::CreateEventTriggerResponse {
            trigger: Some(trigger_to_pb(&t)),
            created,
        }))
    }

    async fn list_event_triggers(
        &self,
        req: Request<pb::ListEventTriggersRequest>,
    ) -> Result<Response<pb::ListEventTriggersResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let filter = TriggerFilter {
            event_name: opt(r.event_name),
            job: opt(r.job),
        };
        let (rows, next) = self
            .0
            .engine
            .list_triggers(&ns, filter, r.page_size, opt(r.page_token))
            .await?;
        Ok(Response::new(pb::ListEventTriggersResponse {
            triggers: rows.iter().map(trigger_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn delete_event_trigger(
        &self,
        req: Request<pb::DeleteEventTriggerRequest>,
    ) -> Result<Response<pb::DeleteEventTriggerResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        self.0.engine.delete_trigger(&ns, &r.trigger_id).await?;
        Ok(Response::new(pb::DeleteEventTriggerResponse {}))
    }
}
