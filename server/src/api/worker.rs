//! `WorkerService` handlers.

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::worker_service_server::WorkerService;
use tonic::{Request, Response, Status};

use crate::engine::requests::{PollInput, StepOutcome};

use super::ApiState;
use super::convert::{
    dur_ms, failure_from_pb, jobs_from_pb, journal_to_pb, status_to_pb, task_to_pb, ts, ts_ms,
};
use super::event_convert::wait_from_pb;
use crate::engine::event_model::SuspendOutcome;

/// Implements `stackshift.v1.WorkerService`.
pub struct WorkerApi(pub ApiState);

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn poll_task(
        &self,
        req: Request<pb::PollTaskRequest>,
    ) -> Result<Response<pb::PollTaskResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let (metadata, _, r) = req.into_parts();
        let input = PollInput {
            worker_id: r.worker_id,
            queues: r.queues,
            jobs: jobs_from_pb(r.jobs)?,
            max_tasks: r.max_tasks,
            wait_ms: dur_ms("wait", &r.wait)?,
        };
        let poll = async { Ok(self.0.engine.poll(&ns, input).await?) };
        let tasks = self.0.until_revoked(&metadata, poll).await?;
        Ok(Response::new(pb::PollTaskResponse {
            tasks: tasks.iter().map(task_to_pb).collect(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let ns = self.0.leased_namespace(req.metadata()).await?;
        let r = req.into_inner();
        let out = self
            .0
            .engine
            .heartbeat(&ns, &r.run_id, &r.lease_token)
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            lease_deadline: Some(ts(out.lease_deadline)),
            cancel_requested: out.cancel_requested,
        }))
    }

    async fn append_logs(
        &self,
        req: Request<pb::AppendLogsRequest>,
    ) -> Result<Response<pb::AppendLogsResponse>, Status> {
        let ns = self.0.leased_namespace(req.metadata()).await?;
        let r = req.into_inner();
        let lines = super::obs_convert::logs_from_pb(r.entries)?;
        let out = self
            .0
            .engine
            .append_logs(&ns, &r.run_id, &r.lease_token, lines)
            .await?;
        Ok(Response::new(pb::AppendLogsResponse {
            accepted: out.accepted as i32,
            dropped: out.dropped as i32,
        }))
    }

    async fn complete_step(
        &self,
        req: Request<pb::CompleteStepRequest>,
    ) -> Result<Response<pb::CompleteStepResponse>, Status> {
        let ns = self.0.leased_namespace(req.metadata()).await?;
        Ok(Response::new(self.step_item(&ns, req.into_inner()).await?))
    }

    async fn complete_run(
        &self,
        req: Request<pb::CompleteRunRequest>,
    ) -> Result<Response<pb::CompleteRunResponse>, Status> {
        let ns = self.0.leased_namespace(req.metadata()).await?;
        Ok(Response::new(self.run_item(&ns, req.into_inner()).await?))
    }

    async fn fail_run(
        &self,
        req: Request<pb::FailRunRequest>,
    ) -> Result<Response<pb::FailRunResponse>, Status> {
        let ns = self.0.leased_namespace(req.metadata()).await?;
        Ok(Response::new(self.fail_item(&ns, req.into_inner()).await?))
    }

    async fn report_batch(
        &self,
        req: Request<pb::ReportBatchRequest>,
    ) -> Result<Response<pb::ReportBatchResponse>, Status> {
        let ns = self.0.leased_namespace(req.metadata()).await?;
        Ok(Response::new(self.batch(&ns, req.into_inner()).await?))
    }

    async fn suspend_run(
        &self,
        req: Request<pb::SuspendRunRequest>,
    ) -> Result<Response<pb::SuspendRunResponse>, Status> {
        let ns = self.0.leased_namespace(req.metadata()).await?;
        let r = req.into_inner();
        let wait = wait_from_pb(r.wait)?;
        let out = self
            .0
            .engine
            .suspend_run(&ns, &r.run_id, &r.lease_token, &r.step_id, wait)
            .await?;
        Ok(Response::new(match out {
            SuspendOutcome::Satisfied(entry) => pb::SuspendRunResponse {
                outcome: pb::SuspendOutcome::Satisfied as i32,
                entry: Some(journal_to_pb(&entry)),
                wake_at: None,
                child_run_ids: Vec::new(),
            },
            SuspendOutcome::Suspended {
                wake_at, children, ..
            } => pb::SuspendRunResponse {
                outcome: pb::SuspendOutcome::Suspended as i32,
                entry: None,
                wake_at: wake_at.map(ts),
                child_run_ids: children.into_iter().map(|(r, _)| r.id).collect(),
            },
        }))
    }
}

impl WorkerApi {
    /// `CompleteStep` once the caller is authenticated (also one `ReportBatch` item).
    pub(super) async fn step_item(
        &self,
        ns: &str,
        r: pb::CompleteStepRequest,
    ) -> Result<pb::CompleteStepResponse, Status> {
        let outcome = match r.outcome {
            Some(pb::complete_step_request::Outcome::Output(o)) => StepOutcome::Output(o),
            Some(pb::complete_step_request::Outcome::Failure(f)) => {
                StepOutcome::Failure(failure_from_pb("failure", Some(f))?)
            }
            None => {
                return Err(Status::invalid_argument(
                    "outcome is required: set output or failure",
                ));
            }
        };
        let started_at = r
            .started_at
            .as_ref()
            .map(|t| ts_ms("started_at", t))
            .transpose()?;
        let already_recorded = self
            .0
            .engine
            .complete_step(
                ns,
                &r.run_id,
                &r.lease_token,
                &r.step_id,
                outcome,
                started_at,
            )
            .await?;
        Ok(pb::CompleteStepResponse { already_recorded })
    }

    /// `CompleteRun` once the caller is authenticated (also one `ReportBatch` item).
    pub(super) async fn run_item(
        &self,
        ns: &str,
        r: pb::CompleteRunRequest,
    ) -> Result<pb::CompleteRunResponse, Status> {
        self.0
            .engine
            .complete_run(ns, &r.run_id, &r.lease_token, &r.result)
            .await?;
        Ok(pb::CompleteRunResponse {})
    }

    /// `FailRun` once the caller is authenticated (also one `ReportBatch` item).
    pub(super) async fn fail_item(
        &self,
        ns: &str,
        r: pb::FailRunRequest,
    ) -> Result<pb::FailRunResponse, Status> {
        let failure = failure_from_pb("failure", r.failure)?;
        let out = self
            .0
            .engine
            .fail_run(ns, &r.run_id, &r.lease_token, failure)
            .await?;
        Ok(pb::FailRunResponse {
            status: status_to_pb(out.run.status) as i32,
            next_attempt_at: out.next_attempt_at.map(ts),
        })
    }
}
