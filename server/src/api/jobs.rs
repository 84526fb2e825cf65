//! `JobsService` handlers.

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::jobs_service_server::JobsService;
use tonic::{Request, Response, Status};

use crate::engine::model::{RunFilter, StartOutcome};
use crate::engine::requests::StartRunInput;

use super::ApiState;
use super::convert::{detail_to_pb, dur_ms, opt, retry_from_pb, run_to_pb, status_filter, ts_ms};

/// Implements `stackshift.v1.JobsService`.
pub struct JobsApi(pub ApiState);

#[tonic::async_trait]
impl JobsService for JobsApi {
    type WatchRunStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::WatchRunResponse, Status>> + Send>>;

    async fn watch_run(
        &self,
        req: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let revoked = self.0.revoked(req.metadata())?;
        let r = req.into_inner();
        let mut rx = self.0.engine.watch_run(&ns, &r.run_id).await?;
        // Forward updates until the stream ends, the client leaves or the key is revoked.
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            tokio::pin!(revoked);
            loop {
                tokio::select! {
                    u = rx.recv() => {
                        let Some(u) = u else { break };
                        let item = match u {
                            Ok(u) => Ok(pb::WatchRunResponse {
                                run: Some(detail_to_pb(&u.detail)),
                                r#final: u.last,
                            }),
                            Err(e) => Err(Status::from(e)),
                        };
                        if tx.send(item).await.is_err() {
                            break;
                        }
                    }
                    status = &mut revoked => {
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                    () = tx.closed() => break,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn start_run(
        &self,
        req: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let input = StartRunInput {
            job: r.job,
            payload: r.payload,
            queue: opt(r.queue),
            idempotency_key: opt(r.idempotency_key),
            idempotency_ttl_ms: dur_ms("idempotency_ttl", &r.idempotency_ttl)?,
            retry: retry_from_pb(r.retry_policy)?,
            lease_timeout_ms: dur_ms("lease_timeout", &r.lease_timeout)?,
            delay_ms: dur_ms("delay", &r.delay)?.filter(|d| *d > 0),
            run_at_ms: r.run_at.as_ref().map(|t| ts_ms("run_at", t)).transpose()?,
            priority: r.priority,
            concurrency_key: opt(r.concurrency_key),
        };
        let (run, duplicate) = match self.0.engine.start_run(&ns, input).await? {
            StartOutcome::Created(run) => (run, false),
            StartOutcome::Duplicate(run) => (run, true),
        };
        Ok(Response::new(pb::StartRunResponse {
            run: Some(run_to_pb(&run)),
            duplicate,
        }))
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let (metadata, _, r) = req.into_parts();
        let wait = dur_ms("wait", &r.wait)?;
        let get = async { Ok(self.0.engine.get_run(&ns, &r.run_id, wait).await?) };
        let detail = self.0.until_revoked(&metadata, get).await?;
        Ok(Response::new(pb::GetRunResponse {
            run: Some(detail_to_pb(&detail)),
        }))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let filter = RunFilter {
            job: opt(r.job),
            queue: opt(r.queue),
            status: status_filter(r.status)?,
            created_after: r
                .created_after
                .as_ref()
                .map(|t| ts_ms("created_after", t))
                .transpose()?,
            created_before: r
                .created_before
                .as_ref()
                .map(|t| ts_ms("created_before", t))
                .transpose()?,
            idempotency_key: opt(r.idempotency_key),
        };
        let (runs, next) = self
            .0
            .engine
            .list_runs(&ns, filter, r.page_size, opt(r.page_token))
            .await?;
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs.iter().map(run_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn cancel_run(
        &self,
        req: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let run = self
            .0
            .engine
            .cancel_run(&ns, &r.run_id, opt(r.reason))
            .await?;
        Ok(Response::new(pb::CancelRunResponse {
            run: Some(run_to_pb(&run)),
        }))
    }

    async fn retry_run(
        &self,
        req: Request<pb::RetryRunRequest>,
    ) -> Result<Response<pb::RetryRunResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let run = self.0.engine.retry_run(&ns, &r.run_id).await?;
        Ok(Response::new(pb::RetryRunResponse {
            run: Some(run_to_pb(&run)),
        }))
    }
}
