//! `EventsService` handlers.

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::events_service_server::EventsService;
use tonic::{Request, Response, Status};

use crate::engine::event_model::PublishEventInput;
use crate::engine::event_ops::MAX_RESUMED_IDS;

use super::ApiState;
use super::convert::opt;
use super::event_convert::{event_filter_from_pb, event_to_pb};

/// Implements `stackshift.v1.EventsService`.
pub struct EventsApi(pub ApiState);

#[tonic::async_trait]
impl EventsService for EventsApi {
    async fn publish_event(
        &self,
        req: Request<pb::PublishEventRequest>,
    ) -> Result<Response<pb::PublishEventResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let input = PublishEventInput {
            name: r.name,
            payload: r.payload,
            id: opt(r.id),
            correlation_key: opt(r.correlation_key),
        };
        let out = self.0.engine.publish_event(&ns, input).await?;
        Ok(Response::new(pb::PublishEventResponse {
            event: Some(event_to_pb(&out.event)),
            duplicate: out.duplicate,
            resumed_run_count: out.resumed.len() as i64,
            resumed_run_ids: out
                .resumed
                .into_iter()
                .take(MAX_RESUMED_IDS)
                .map(|r| r.run_id)
                .collect(),
            started_run_ids: out.started.into_iter().map(|r| r.id).collect(),
        }))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let filter = event_filter_from_pb(&r)?;
        let (events, next) = self
            .0
            .engine
            .list_events(&ns, filter, r.page_size, opt(r.page_token))
            .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.iter().map(event_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }
}
