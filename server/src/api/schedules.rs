//! `ScheduleService` handlers and the protobuf conversions of schedules.

use stackshift_proto::v1 as pb;
use stackshift_proto::v1::schedule_service_server::ScheduleService;
use tonic::{Request, Response, Status};

use crate::engine::schedule_model::{CatchUp, CreateScheduleInput, ScheduleRecord, ScheduleSpec};

use super::ApiState;
use super::convert::{dur, dur_ms, opt, retry_from_pb, ts};
use super::queues::retry_input_to_pb;

/// Implements `stackshift.v1.ScheduleService`.
pub struct SchedulesApi(pub ApiState);

fn catch_up_from_pb(raw: i32) -> Result<Option<CatchUp>, Status> {
    match pb::ScheduleCatchUp::try_from(raw) {
        Ok(pb::ScheduleCatchUp::Unspecified) => Ok(None),
        Ok(pb::ScheduleCatchUp::Skip) => Ok(Some(CatchUp::Skip)),
        Ok(pb::ScheduleCatchUp::Latest) => Ok(Some(CatchUp::Latest)),
        Ok(pb::ScheduleCatchUp::All) => Ok(Some(CatchUp::All)),
        Err(_) => Err(Status::invalid_argument(format!(
            "catch_up {raw} is not a ScheduleCatchUp value (SKIP, LATEST or ALL)"
        ))),
    }
}

fn catch_up_to_pb(c: CatchUp) -> pb::ScheduleCatchUp {
    match c {
        CatchUp::Skip => pb::ScheduleCatchUp::Skip,
        CatchUp::Latest => pb::ScheduleCatchUp::Latest,
        CatchUp::All => pb::ScheduleCatchUp::All,
    }
}

fn spec_from_pb(s: Option<pb::ScheduleSpec>) -> Result<ScheduleSpec, Status> {
    match s.and_then(|s| s.spec) {
        Some(pb::schedule_spec::Spec::Cron(c)) => Ok(ScheduleSpec::Cron {
            expression: c.expression,
            time_zone: if c.time_zone.is_empty() {
                "UTC".to_owned()
            } else {
                c.time_zone
            },
        }),
        Some(pb::schedule_spec::Spec::Interval(i)) => Ok(ScheduleSpec::Interval {
            interval_ms: dur_ms("spec.interval.interval", &i.interval)?.ok_or_else(|| {
                Status::invalid_argument("spec.interval.interval is required (at least 1s)")
            })?,
        }),
        None => Err(Status::invalid_argument(
            "spec is required: set spec.cron (expression and time zone) or spec.interval",
        )),
    }
}

fn spec_to_pb(s: &ScheduleSpec) -> pb::ScheduleSpec {
    let spec = match s {
        ScheduleSpec::Cron {
            expression,
            time_zone,
        } => pb::schedule_spec::Spec::Cron(pb::CronSpec {
            expression: expression.clone(),
            time_zone: time_zone.clone(),
        }),
        ScheduleSpec::Interval { interval_ms } => {
            pb::schedule_spec::Spec::Interval(pb::IntervalSpec {
                interval: Some(dur(*interval_ms)),
            })
        }
    };
    pb::ScheduleSpec { spec: Some(spec) }
}

/// Engine schedule to protobuf.
fn schedule_to_pb(s: &ScheduleRecord) -> pb::Schedule {
    let d = &s.definition;
    pb::Schedule {
        id: s.id.clone(),
        spec: Some(spec_to_pb(&d.spec)),
        action: Some(pb::ScheduleAction {
            job: d.job.clone(),
            payload: d.payload.clone().into_bytes(),
            queue: d.queue.clone(),
            retry_policy: retry_input_to_pb(&d.retry),
            lease_timeout: d.lease_timeout_ms.map(dur),
            priority: d.priority,
        }),
        catch_up: catch_up_to_pb(d.catch_up).into(),
        paused: s.paused,
        next_fire_time: Some(ts(s.next_fire_at)),
        last_fire_time: s.last_fire_at.map(ts),
        recent_run_ids: s.recent_run_ids.clone(),
        created_at: Some(ts(s.created_at)),
        updated_at: Some(ts(s.updated_at)),
    }
}

pub(super) fn create_input(r: pb::CreateScheduleRequest) -> Result<CreateScheduleInput, Status> {
    let spec = spec_from_pb(r.spec)?;
    let a = r.action.ok_or_else(|| {
        Status::invalid_argument("action is required: set action.job (and optionally payload)")
    })?;
    Ok(CreateScheduleInput {
        id: r.schedule_id,
        job: a.job,
        queue: opt(a.queue),
        payload: a.payload,
        retry: retry_from_pb(a.retry_policy)
            .map_err(|s| Status::invalid_argument(format!("action.{}", s.message())))?,
        lease_timeout_ms: dur_ms("action.lease_timeout", &a.lease_timeout)?,
        priority: a.priority,
        spec,
        catch_up: catch_up_from_pb(r.catch_up)?,
        paused: r.paused,
    })
}

#[tonic::async_trait]
impl ScheduleService for SchedulesApi {
    async fn create_schedule(
        &self,
        req: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::CreateScheduleResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let input = create_input(req.into_inner())?;
        let (s, created) = self.0.engine.create_schedule(&ns, input).await?;
        Ok(Response::new(pb::CreateScheduleResponse {
            schedule: Some(schedule_to_pb(&s)),
            created,
        }))
    }

    async fn get_schedule(
        &self,
        req: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let s = self.0.engine.get_schedule(&ns, &r.schedule_id).await?;
        Ok(Response::new(pb::GetScheduleResponse {
            schedule: Some(schedule_to_pb(&s)),
        }))
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let (rows, next) = self
            .0
            .engine
            .list_schedules(&ns, r.page_size, opt(r.page_token))
            .await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: rows.iter().map(schedule_to_pb).collect(),
            next_page_token: next.unwrap_or_default(),
        }))
    }

    async fn pause_schedule(
        &self,
        req: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::PauseScheduleResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let s = self.0.engine.pause_schedule(&ns, &r.schedule_id).await?;
        Ok(Response::new(pb::PauseScheduleResponse {
            schedule: Some(schedule_to_pb(&s)),
        }))
    }

    async fn resume_schedule(
        &self,
        req: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::ResumeScheduleResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        let s = self.0.engine.resume_schedule(&ns, &r.schedule_id).await?;
        Ok(Response::new(pb::ResumeScheduleResponse {
            schedule: Some(schedule_to_pb(&s)),
        }))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let ns = self.0.namespace(req.metadata()).await?;
        let r = req.into_inner();
        self.0.engine.delete_schedule(&ns, &r.schedule_id).await?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }
}
